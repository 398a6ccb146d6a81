"""``failover.etcd_cluster.free_port``: ports for the servers tests and local pairs start, taken below the kernel's
ephemeral range (where any outgoing connection may take a port first), each handed out once."""

from __future__ import annotations

import socket

from failover.etcd_cluster import _ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_free_and_never_given_twice() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(max(1024, low - 12_000) <= p < low for p in ports), (low, ports)
    for p in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", p))  # free: it binds
