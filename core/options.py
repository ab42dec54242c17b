"""A process's options as one frozen dataclass, and its command line made
from it and read back into it (pure).

The lab starts the daemons and the proxy as processes, so their options
cross a process boundary as argv.  Written by hand in several places, those
lists drifted from the parsers (that is how ``--pace`` given with a
scenario once broke).  Here each option is a dataclass field that says
its flag, how to parse one value and how to write it back::

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ServerOptions:
        listen: Endpoint = option("--listen", ("198.51.100.1", 7007),
                                  parse=endpoint_arg, show=endpoint_text)

:func:`from_argv` builds the argparse parser from the fields and returns the
dataclass (the daemon's side); :func:`to_argv` writes only what differs
from the defaults (the starter's side), so ``from_argv(cls,
to_argv(opts)) == opts`` for every valid ``opts`` — a property test checks
it field by field.  A dataclass's ``__post_init__`` checks what one field
alone cannot; its ValueError becomes argparse's usage error on one side
and an exception before anything starts on the other.

Kinds of field: a value (``--flag VALUE``), a repeated value (a tuple:
``--flag A --flag B``), a tuple several flags append to in order
(:func:`multi`: ``--drop R1 --delay R2``), and a switch (a bool: the flag alone, meaning the
opposite of the default; ``--no-observer`` for ``observer = True``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_KEY = "tcplab.option"
_UNSET: Any = object()
"""argparse's default for a value option: not given, the field keeps its own."""


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """How one field appears on the command line."""

    flag: str
    parse: Callable[[str], Any] | None
    """One value from its text (None: a switch)."""
    show: Callable[[Any], str]
    """One value as text; ``parse(show(v)) == v``."""
    help: str
    metavar: str | None
    choices: tuple[str, ...] | None
    repeat: bool
    flags: tuple[tuple[str, Callable[[str], Any], str], ...] = ()
    """A repeated field several flags append to, each with its own parser
    (``--drop R``, ``--delay R``… all append rules, in the order given)."""
    flag_of: Callable[[Any], str] | None = None
    """With ``flags``: which flag writes an item back."""


def option(
    flag: str,
    default: Any,
    *,
    parse: Callable[[str], Any] | None = str,
    show: Callable[[Any], str] = str,
    help: str = "",
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    repeat: bool = False,
) -> Any:
    """A dataclass field that is also the option ``flag``."""
    meta = Flag(
        flag, parse, show, help, metavar, tuple(choices) if choices is not None else None, repeat
    )
    return dataclasses.field(default=default, metadata={_KEY: meta})


def multi(
    flags: Sequence[tuple[str, Callable[[str], Any], str]],
    *,
    flag_of: Callable[[Any], str],
    show: Callable[[Any], str] = str,
    metavar: str | None = None,
) -> Any:
    """A tuple field that several flags (each ``(flag, parse, help)``)
    append to, in command-line order; ``flag_of(item)`` names the flag an
    item is written back with."""
    meta = Flag(flags[0][0], str, show, "", metavar, None, True, tuple(flags), flag_of)
    return dataclasses.field(default=(), metadata={_KEY: meta})


def switch(flag: str, default: bool, *, help: str = "") -> Any:
    """A bool field whose ``flag`` (no value) sets the opposite of ``default``."""
    return option(flag, default, parse=None, help=help)


def _flags(cls: type) -> list[tuple[dataclasses.Field[Any], Flag]]:
    return [(f, f.metadata[_KEY]) for f in dataclasses.fields(cls) if _KEY in f.metadata]


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its ValueError keeps its message."""

    def run(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    run.__name__ = getattr(parse, "__name__", "value")
    return run


def add_arguments(
    parser: argparse.ArgumentParser | Any, cls: type, only: Sequence[str] | None = None
) -> None:
    """``cls``'s options (or the fields named in ``only``) on ``parser`` (or
    an argument group), each with its field's name as ``dest``."""
    for f, meta in _flags(cls):
        if only is not None and f.name not in only:
            continue
        for flag, parse, help_text in meta.flags:
            parser.add_argument(
                flag, dest=f.name, action="append", default=None, type=_typed(parse),
                metavar=meta.metavar, help=help_text,
            )  # fmt: skip
        if meta.flags:
            continue
        if meta.parse is None:
            parser.add_argument(
                meta.flag, dest=f.name, action="store_const", const=not f.default,
                default=f.default, help=meta.help,
            )  # fmt: skip
            continue
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "type": _typed(meta.parse),
            "help": meta.help,
            "metavar": meta.metavar,
        }
        if meta.choices is not None:
            kwargs["choices"] = meta.choices
            kwargs.pop("metavar")
        if meta.repeat:
            parser.add_argument(meta.flag, action="append", default=None, **kwargs)
        else:
            # not the field's default: argparse would parse a string default
            # as if it were given ("" is no namespace name)
            parser.add_argument(meta.flag, default=_UNSET, **kwargs)


def from_namespace(
    cls: type[T], namespace: argparse.Namespace, only: Sequence[str] | None = None
) -> T:
    """The dataclass from parsed arguments (a repeated option given no
    times keeps the field's default; with ``only``, just those fields are
    taken, the rest keep theirs).  ValueError from ``__post_init__``."""
    values: dict[str, Any] = {}
    for f, meta in _flags(cls):
        if (only is not None and f.name not in only) or not hasattr(namespace, f.name):
            continue
        value = getattr(namespace, f.name)
        if value is _UNSET:
            continue
        if meta.repeat:
            value = f.default if value is None else tuple(value)
        values[f.name] = value
    return cls(**values)


def parser_for(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, cls)
    return parser


def from_argv(cls: type[T], argv: Sequence[str] | None, prog: str, description: str = "") -> T:
    """Parse ``argv`` into ``cls``; a bad option exits with argparse's usage
    error (status 2), naming the option."""
    parser = parser_for(cls, prog, description)
    namespace = parser.parse_args(argv)
    try:
        return from_namespace(cls, namespace)
    except ValueError as exc:
        parser.error(str(exc))


def to_argv(opts: Any) -> list[str]:
    """The options of ``opts`` that differ from their defaults, as argv."""
    argv: list[str] = []
    for f, meta in _flags(type(opts)):
        value = getattr(opts, f.name)
        if value == f.default:
            continue
        if meta.parse is None:
            argv.append(meta.flag)
        elif meta.repeat:
            for item in value:
                flag = meta.flag_of(item) if meta.flag_of is not None else meta.flag
                argv.append(f"{flag}={meta.show(item)}")
        else:
            if value is None:
                raise ValueError(f"{meta.flag}: None is only its default, not a value")
            argv.append(f"{meta.flag}={meta.show(value)}")
    return argv
