"""Who owns each lab, and removing what is left.

Every lab leaves a small record under ``/run/tcplab`` naming the process
that owns it (pid and start time) and its slot; a lab whose owner is gone
is removed by the next ``tcplab`` command (:func:`clean`), with its
namespaces, ftrace instances and proxy files.  Slots are claimed under a
file lock, so two labs built at once never share addresses."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyroute2 import netns

from core import netns as tlnetns
from core import tracefs
from core.tracefs import TRACE_PREFIX
from tcplab.topology.model import (
    ADDR,
    MAX_SLOT,
    PREFIX,
    SIDES,
    Addressing,
    Forwarding,
    Lab,
    TopologyError,
)
from tcplab.topology.processes import alive, kill_all_in

RECORD_DIR = Path("/run/tcplab")


def proxy_control_path(lab_id: str) -> Path:
    """The control socket of a lab's proxy."""
    return RECORD_DIR / f"{lab_id}.proxy.sock"


def proxy_log_path(lab_id: str) -> Path:
    """The log of a proxy that `lab up` started in the background."""
    return RECORD_DIR / f"{lab_id}.proxy.log"


# --- ownership records ----------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def _record_path(lab_id: str) -> Path:
    return RECORD_DIR / f"{lab_id}.json"


RUN_TAG_ENV = "TCPLAB_RUN_TAG"
"""A label a process gives the labs it and its children make (kept in
their records as ``tag``): a test session uses it to tell its own labs —
those of runs it killed included — from another program's."""


def write_record(lab: Lab, persistent: bool, extra: Mapping[str, Any] | None = None) -> None:
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {
        "lab": lab.lab_id,
        "slot": lab.addr.slot,
        "forwarding": lab.forwarding.value,
        "namespaces": list(lab.namespaces),
        "owner_pid": pid,
        "owner_start": _proc_start(pid),
        "persistent": persistent,
        "created": time.time(),
        "tag": os.environ.get(RUN_TAG_ENV),
        **(extra or {}),
    }
    tmp = _record_path(lab.lab_id).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(_record_path(lab.lab_id))


def read_record(lab_id: str) -> dict[str, Any] | None:
    try:
        value = json.loads(_record_path(lab_id).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def update_record(lab_id: str, **fields: Any) -> None:
    record = read_record(lab_id)
    if record is None:
        raise TopologyError(f"no record for lab {lab_id}")
    record.update(fields)
    tmp = _record_path(lab_id).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_record_path(lab_id))


def owner_alive(record: Mapping[str, Any]) -> bool:
    pid = record.get("owner_pid")
    if not isinstance(pid, int) or not alive(pid):
        return False
    return _proc_start(pid) == record.get("owner_start")


# --- building and tearing down --------------------------------------------------


def lab_namespaces() -> dict[str, list[str]]:
    """Existing ``tl<id>-{cli,mbx,srv}`` namespaces, grouped by lab id."""
    labs: dict[str, list[str]] = {}
    for name in netns.listnetns():
        if not name.startswith(PREFIX):
            continue
        lab_id, sep, side = name[len(PREFIX) :].rpartition("-")
        if sep and side in SIDES and lab_id:
            labs.setdefault(lab_id, []).append(name)
    return labs


def destroy(lab_id: str) -> list[str]:
    """Remove lab ``lab_id``: stop every process in its namespaces, delete the
    namespaces (their veths go with them), delete the record.  Idempotent;
    returns the namespaces it removed."""
    removed = []
    names = [f"{PREFIX}{lab_id}-{side}" for side in SIDES]
    for name in names:
        kill_all_in(name)
    for name in names:
        if tlnetns.exists(name):
            try:
                netns.remove(name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            removed.append(name)
    # the observers remove their ftrace instances; these are a killed one's
    tracefs.remove_instances(f"{TRACE_PREFIX}{lab_id}-")
    for path in (
        _record_path(lab_id),
        proxy_control_path(lab_id),
        proxy_log_path(lab_id),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return removed


def _slots_in_use() -> set[int]:
    """Slots of the labs that exist now (their namespaces, or a record of a
    lab being built)."""
    used = set()
    present = lab_namespaces()
    if RECORD_DIR.is_dir():
        for path in RECORD_DIR.glob("*.json"):
            record = read_record(path.stem)
            if record is None:
                continue
            slot = record.get("slot")
            if isinstance(slot, int) and (path.stem in present or owner_alive(record)):
                used.add(slot)
    return used


@contextlib.contextmanager
def _slot_lock() -> Iterator[None]:
    """Serialises slot allocation between processes building labs at once."""
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    with open(RECORD_DIR / ".slots.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def claim_slot(lab: Lab, persistent: bool) -> Lab:
    """The lab with the lowest free slot, its record written (under the lock,
    so two labs built at once never share addresses)."""
    with _slot_lock():
        used = _slots_in_use()
        free = next((n for n in range(1, MAX_SLOT + 1) if n not in used), None)
        if free is None:
            raise TopologyError(f"{MAX_SLOT} labs exist already: remove some (tcplab clean)")
        lab = dataclasses.replace(lab, addr=Addressing(slot=free))
        write_record(lab, persistent=persistent)
    return lab


@dataclasses.dataclass(frozen=True, slots=True)
class CleanReport:
    removed: dict[str, list[str]]
    kept: dict[str, str]


def clean(everything: bool = False) -> CleanReport:
    """Remove the labs whose owning process is gone.  A lab made by
    ``tcplab lab up`` is kept (it has no owner by design) unless
    ``everything``; a ``tl`` namespace with no record is a leftover."""
    removed: dict[str, list[str]] = {}
    kept: dict[str, str] = {}
    for lab_id in sorted(lab_namespaces()):
        record = read_record(lab_id)
        if record is not None and not everything:
            if record.get("persistent"):
                kept[lab_id] = "made by `tcplab lab up`; remove it with `tcplab lab down`"
                continue
            if owner_alive(record):
                kept[lab_id] = f"owner process {record.get('owner_pid')} is running"
                continue
        removed[lab_id] = destroy(lab_id)
    # records whose namespaces are already gone
    if RECORD_DIR.is_dir():
        for path in RECORD_DIR.glob("*.json"):
            lab_id = path.stem
            if lab_id in removed or lab_id in kept:
                continue
            record = read_record(lab_id)
            if record is None or not owner_alive(record) or everything:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    # ftrace instances of labs that are gone (tcplab-<lab>-<side>), and of
    # processes that were killed: an instance named tcplab-<kind>-<pid>[-…]
    # (`tcplab watch`, a benchmark's or a test's reference) is its process's,
    # kept while that process lives, whatever else runs `tcplab` meanwhile
    live = set(lab_namespaces())
    for name in tracefs.instance_names(TRACE_PREFIX):
        owner = name[len(TRACE_PREFIX) :]
        pid = owner.partition("-")[2].partition("-")[0]
        if pid.isdigit():  # tcplab-<kind>-<pid>[-…]: a process's own
            if alive(int(pid)) and not everything:
                continue
        elif owner.rpartition("-")[0] in live:
            continue
        tracefs.remove_instances(name)
        removed.setdefault(owner.rpartition("-")[0] or owner, []).append(f"ftrace {name}")
    return CleanReport(removed=removed, kept=kept)


def find_lab(lab_id: str | None) -> Lab:
    """The lab named ``lab_id``, or the only one there is."""
    labs = lab_namespaces()
    if lab_id is None:
        if not labs:
            raise TopologyError("no lab is up (start one with `tcplab lab up`)")
        if len(labs) > 1:
            raise TopologyError(f"several labs are up ({', '.join(sorted(labs))}): pass --lab ID")
        lab_id = next(iter(labs))
    if lab_id not in labs:
        raise TopologyError(f"no lab {lab_id!r} (up: {', '.join(sorted(labs)) or 'none'})")
    record = read_record(lab_id) or {}
    mode = Forwarding(record.get("forwarding", "kernel"))
    slot = record.get("slot", 1)
    addr = Addressing(slot=slot) if isinstance(slot, int) and 1 <= slot <= MAX_SLOT else ADDR
    return Lab(lab_id=lab_id, forwarding=mode, addr=addr)
