"""A full user port of the link emulator makes room by closing a connection that carried nothing for a while: the
port is not authenticated, so connections that only sit there must not lock its device out (issue 18, finding 6).
Real sockets on loopback: the shaping proxy in front of a TCP echo server."""

from __future__ import annotations

import socket
import time

import linkemu.proxy as proxy_module
from linkemu.proxy import ProxyThread, ShapingProxy
from linkemu.shaper import FixedShaper
from tandem.addresses import split_address
from tests.system.test_linkemu_recovery import Echo, echoes

CAP = 3


def test_a_full_port_closes_its_idlest_connection_for_a_new_one(monkeypatch):
    monkeypatch.setattr(proxy_module, "IDLE_EVICT_S", 1.0)
    upstream = split_address(Echo().address)
    proxy = ShapingProxy("127.0.0.1", 0, lambda: upstream, FixedShaper(), max_connections=CAP)
    with ProxyThread(proxy) as running:
        host, port = running.address.rsplit(":", 1)
        squatters = [socket.create_connection((host, int(port)), timeout=5) for _ in range(CAP)]
        assert all(echoes(s) for s in squatters)
        busy_refused = socket.create_connection((host, int(port)), timeout=5)
        assert not echoes(busy_refused)  # none idle long enough: the newcomer is closed
        time.sleep(1.5)
        assert echoes(squatters[0])  # this one stays busy
        device = socket.create_connection((host, int(port)), timeout=5)
        assert echoes(device)  # room was made: the longest idle connection was closed
        assert echoes(squatters[0])
        assert sum(not echoes(s) for s in squatters[1:]) == 1
        for connection in (*squatters, busy_refused, device):
            connection.close()
