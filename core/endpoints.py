"""Endpoints and connection ids as text: ``192.0.2.1:40312`` and
``192.0.2.1:40312-198.51.100.1:7007``.

Every record names its connection by the ``conn`` field (client side first,
IPv6 addresses in brackets; a listener by its local endpoint alone), so the
components, which never share sockets, still agree on which connection a
fact is about.  These helpers make and read that text.

This module is pure: strings in, strings (or a ValueError) out.
"""

from __future__ import annotations

import ipaddress

__all__ = ["conn_id", "endpoint", "is_connection", "parse_conn", "parse_endpoint"]


def endpoint(addr: str, port: int) -> str:
    """``192.0.2.1:40312`` or ``[2001:db8::1]:40312``."""
    if ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def conn_id(client_addr: str, client_port: int, server_addr: str, server_port: int) -> str:
    """The ``conn`` field: client side first."""
    return f"{endpoint(client_addr, client_port)}-{endpoint(server_addr, server_port)}"


def is_connection(conn: str | None) -> bool:
    """True for a connection id, False for a listener's endpoint or None.
    (Neither an IPv4 nor a bracketed IPv6 endpoint contains '-'.)"""
    return conn is not None and "-" in conn


def parse_endpoint(text: str) -> tuple[str, int]:
    """Inverse of :func:`endpoint`; raises ValueError naming the bad text."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5:
        raise ValueError(f"not ADDR:PORT: {text!r}")
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, number


def parse_conn(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Inverse of :func:`conn_id`: ``((client addr, port), (server addr, port))``."""
    client, sep, server = text.partition("-")
    if not sep:
        raise ValueError(f"not a connection id (CLIENT-SERVER): {text!r}")
    return parse_endpoint(client), parse_endpoint(server)
