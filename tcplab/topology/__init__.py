"""The lab's network: three namespaces, two veth pairs, one router in the middle.

```
 tl<id>-cli               tl<id>-mbx                                tl<id>-srv
 cli0 192.0.2.1  ==veth== mc0 192.0.2.254 | ms0 198.51.100.254 ==veth== srv0 198.51.100.1
 default via .254                                                  default via .254
```

IPv6 runs alongside: 2001:db8:1::/64 on the client side, 2001:db8:2::/64 on
the server side, the router at ``::ff`` on each.

Each lab has a *slot*, n (1 to 253), unique among the labs that exist at
once, and its endpoints use it as their host part: client 192.0.2.n and
2001:db8:1::n, server 198.51.100.n and 2001:db8:2::n (the first lab gets 1,
the addresses of the picture above).  Kernel tracepoints carry no network
namespace, so this is what tells two labs' sockets apart in them.  Addresses are added with
``nodad`` so they are usable at once (duplicate address detection would
hold them "tentative" for a second or more, in a network that has no one
else on it).

Who forwards in the middle is decided in one place, :class:`Forwarding`:
``kernel`` turns on IP forwarding in the middle namespace; ``proxy`` leaves
it off, and the middlebox process forwards frames itself.

The middlebox's ports wear mirrored MACs (``mc0`` has the server's, ``ms0``
the client's), so a frame can cross it unchanged: the proxy's express lane
(``proxy/express.py``) then needs no rewriting.  ``LabSpec(mirrored_macs=False)``
keeps the veths' random MACs, as in a compose network, where the lane must
rewrite them (``proxy/bpf_prog.py``).

The endpoint veths get TX checksum offload, TSO and GSO turned off, so that
every frame on the wire is one real segment with a finished checksum — a
frame a userspace forwarder reads off a veth otherwise may be a 64 KiB
super-segment with a partial checksum.

Everything happens inside namespaces named ``tl<id>-…``; the host's own
interfaces, routes and sysctls are never touched.  :func:`lab` is a context
manager that tears down on every exit path, including Ctrl-C; each lab also
leaves a small record under ``/run/tcplab`` naming the process that owns it,
so ``tcplab clean`` can remove the leftovers of a run that was killed.
"""

from __future__ import annotations

from core.tracefs import TRACE_PREFIX
from tcplab.topology.build import (
    create,
    exec_in,
    lab,
    offloads_off,
    read_sysctl,
    set_forwarding,
)
from tcplab.topology.model import (
    ADDR,
    BACK_IF,
    CLIENT_IF,
    FRONT_IF,
    MAX_SLOT,
    PREFIX,
    SERVER_IF,
    SIDES,
    Addressing,
    Forwarding,
    Lab,
    LabSpec,
    Side,
    TopologyError,
    new_lab_id,
    validate_sysctl_key,
)
from tcplab.topology.ownership import (
    RECORD_DIR,
    RUN_TAG_ENV,
    CleanReport,
    clean,
    destroy,
    find_lab,
    lab_namespaces,
    owner_alive,
    proxy_control_path,
    proxy_log_path,
    read_record,
    update_record,
    write_record,
)
from tcplab.topology.processes import kill_all_in, pids_in

__all__ = [
    "ADDR", "BACK_IF", "CLIENT_IF", "FRONT_IF", "MAX_SLOT", "PREFIX", "RECORD_DIR", "RUN_TAG_ENV",
    "SERVER_IF",
    "SIDES", "TRACE_PREFIX", "Addressing", "CleanReport", "Forwarding", "Lab", "LabSpec", "Side",
    "TopologyError", "clean", "create", "destroy", "exec_in", "find_lab", "kill_all_in", "lab",
    "lab_namespaces", "new_lab_id", "offloads_off", "owner_alive", "pids_in",
    "proxy_control_path", "proxy_log_path", "read_record", "read_sysctl", "set_forwarding",
    "update_record", "validate_sysctl_key", "write_record",
]  # fmt: skip
