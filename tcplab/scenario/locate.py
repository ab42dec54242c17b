"""Where a field is written in a scenario's TOML text (pure).

:mod:`tomllib` gives values, not positions, yet an error message is only
useful if it names the line to fix.  :func:`locate` finds it again in the
text: the line of a key in a table, or of the table's header.  It reads
only what scenario files use — ``[table]``, ``[[table]]`` and ``key =``
lines — which is enough to point at a mistake.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("?)([A-Za-z0-9_.\-"]+)\1\s*=')


def locate(text: str, table: str, key: str | None = None, index: int = 0) -> int:
    """The line (1-based) of ``key`` in ``[table]`` (the ``index``-th
    ``[[table]]`` for arrays), or of the table header; 0 if not found."""
    current = ""
    seen = -1
    header_line = 0
    for number, line in enumerate(text.splitlines(), 1):
        match = _HEADER.match(line)
        if match:
            current = match.group(1).replace('"', "").replace(" ", "")
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        if current == table and seen == index and key is not None:
            kmatch = _KEY.match(line)
            if kmatch and kmatch.group(2).strip('"') == key:
                return number
        if table == "" and current == "" and key is not None:
            kmatch = _KEY.match(line)
            if kmatch and kmatch.group(2).strip('"') == key:
                return number
    return header_line
