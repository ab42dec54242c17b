"""Load the express lane's eBPF programs and attach them as ``cls_bpf``
filters (the I/O half of :mod:`proxy.bpf_prog`; blocking: call from a
thread).

Loading is the ``bpf(2)`` syscall through ctypes (no libbpf): BPF_PROG_LOAD
of a BPF_PROG_TYPE_SCHED_CLS program.  When the verifier refuses one, the
load is repeated with a log buffer and the verifier's log goes into the
error.  The license string is the project's own (MIT): none of the helpers
used (``skb_load_bytes``, ``skb_store_bytes``, ``redirect``) is GPL-only
(net/core/filter.c).

Attaching is netlink through pyroute2's sync ``IPRoute.tc``: a ``bpf``
filter in direct-action mode on the port's clsact ingress, at the
connection's slot priority, so that it is removed as a ``u32`` lane's is
(``tc filter del … prio N``: :func:`proxy.express.remove_commands`).  The
program's fd is closed after attaching: the filter holds the program.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import platform
import socket
import sys

from proxy import bpf_prog, express

# include/uapi/linux/bpf.h: enum bpf_cmd, enum bpf_prog_type
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
# include/uapi/linux/pkt_sched.h: TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
TC_H_CLSACT_INGRESS = 0xFFFFFFF2
# include/uapi/linux/if_ether.h
ETH_P_ALL = 0x0003
# __NR_bpf: arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h (arm64)
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}
LICENSE = b"MIT"
LOG_SIZE = 1 << 20
PROBE_PRIO = express.FIRST_SLOT_PRIO - 1
"""Where :func:`probe` attaches its filter for a moment (below every slot)."""


class _ProgLoadAttr(ctypes.Structure):
    """The head of ``union bpf_attr`` for BPF_PROG_LOAD (bpf.h); the kernel
    takes a shorter attr than its own and zero-fills the rest."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None or sys.byteorder != "little":
        raise OSError(errno.ENOSYS, f"no eBPF loader for {platform.machine()}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = int(
        libc.syscall(
            ctypes.c_long(number),
            ctypes.c_int(cmd),
            ctypes.byref(attr),
            ctypes.c_uint(ctypes.sizeof(attr)),
        )
    )
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def load(code: bytes, name: str) -> int:
    """Load a SCHED_CLS program; its fd (the caller closes it).  OSError
    says why not, with the verifier's log when the verifier refused it."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(LICENSE)
    attr = _ProgLoadAttr(
        prog_type=BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt=len(code) // 8,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_),
        prog_name=name.encode()[:15],
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EACCES):
            raise OSError(exc.errno, f"loading eBPF program {name}: {exc.strerror}") from exc
        log = ctypes.create_string_buffer(LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, LOG_SIZE, ctypes.addressof(log)
        try:
            return _bpf(BPF_PROG_LOAD, attr)  # loaded with a log after all: keep it
        except OSError as again:
            text = log.value.decode(errors="replace").strip()
            tail = "\n".join(text.splitlines()[-20:])
            raise OSError(again.errno, f"the verifier refused eBPF program {name}: {tail}") from exc


def attach(port: str, prio: int, code: bytes, name: str) -> None:
    """Load ``code`` and attach it to ``port``'s clsact ingress at ``prio``."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    fd = load(code, name)
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=port) or [0]
            if not index:
                raise OSError(errno.ENODEV, f"no interface named {port!r}")
            ipr.tc(
                "add-filter",
                "bpf",
                index,
                parent=TC_H_CLSACT_INGRESS,
                prio=prio,
                protocol=ETH_P_ALL,
                fd=fd,
                name=name,
                direct_action=True,
            )
    except NetlinkError as exc:
        raise OSError(exc.code, f"attaching eBPF filter {name} to {port}: {exc}") from exc
    finally:
        os.close(fd)


def add_lane(
    slot: int,
    ends: tuple[tuple[str, int], tuple[str, int]],
    macs: tuple[tuple[bytes, bytes], tuple[bytes, bytes]],
    ports: tuple[str, str],
) -> None:
    """One connection's two filters, at its slot's priority: client → server
    on the front port's ingress, out of the back port with ``macs[0]``
    (destination, source); server → client on the back port's, out of the
    front port with ``macs[1]``.  ``ends`` is ``(client, server)``, ``ports``
    ``(front, back)``."""
    client, server = ends
    front, back = ports
    prio = express.FIRST_SLOT_PRIO + slot
    plan = ((client, server, macs[0], front, back), (server, client, macs[1], back, front))
    for i, (src, dst, (dst_mac, src_mac), port, out) in enumerate(plan):
        direction = bpf_prog.Direction(src, dst, dst_mac, src_mac, socket.if_nametoindex(out))
        attach(port, prio, bpf_prog.bytecode(direction), f"tl_x{slot}_{i}")


def probe(port: str) -> None:
    """Whether this kernel and these privileges allow the BPF lane: load
    the trivial program, attach it to ``port`` (whose clsact exists) and
    take it off again.  Raises OSError saying why not."""
    attach(port, PROBE_PRIO, bpf_prog.probe(), "tl_probe")
    with contextlib.suppress(OSError):
        express.run_tc([["tc", "filter", "del", "dev", port, "ingress", "prio", str(PROBE_PRIO)]])
