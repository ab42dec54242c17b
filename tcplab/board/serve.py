"""Serving the board: Hypercorn's trio worker, the token, the URL
(trio shell).

The board binds to loopback unless told otherwise; binding anywhere else
needs ``allow_remote`` and says why it is worth a thought (the page changes
a live lab's faults; the token is all that guards it).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import urllib.parse

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from tcplab.board.app import make_app
from tcplab.board.service import Board

DEFAULT_LISTEN = "127.0.0.1:8080"


def public_url(text: str) -> str:
    """A ``--public-url``: an http(s) address with a host, no query or
    fragment (the token is added to it), nothing a terminal would mangle;
    returned without its trailing slash."""
    if len(text) > 2048 or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError("expected an http:// or https:// address without spaces")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http://HOST[:PORT][/PATH], got {text[:60]!r}")
    if parts.query or parts.fragment:
        raise ValueError("no ?query or #fragment: the token is added to it")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError(f"not a port: {parts.netloc[:60]!r}") from None
    return text.rstrip("/")


class ListenError(ValueError):
    """A ``--listen`` address the board will not bind."""


def new_token() -> str:
    """A token for the URL, as Jupyter prints one: 32 random bytes."""
    return secrets.token_urlsafe(32)


def parse_listen(text: str, *, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``; port 0: any free one) → (host, port).
    A host that is not loopback needs ``allow_remote``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ListenError(f"--listen {text!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ListenError(f"--listen {text!r}: {host!r} is not an IP address") from None
        address = ipaddress.ip_address("127.0.0.1")
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ListenError(f"--listen {text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ListenError(f"--listen {text!r}: the port must be 0-65535")
    if not address.is_loopback and not allow_remote:
        raise ListenError(
            f"--listen {text!r} is reachable from other machines, and the board changes a "
            "live lab's faults: add --allow-remote if that is what you want"
        )
    return host, port


def remote_warning(host: str) -> str | None:
    if ipaddress.ip_address(host).is_loopback:
        return None
    return (
        f"warning: the board listens on {host}, not only on this machine; anyone who has "
        "the URL (its token) can change the lab's faults"
    )


async def serve(
    board: Board,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``board`` until cancelled; ``started()`` with its tokenised URL."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    config.loglevel = "WARNING"
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn_serve, make_app(board), config)
        task_status.started(f"{binds[0]}/?token={board.token}")
