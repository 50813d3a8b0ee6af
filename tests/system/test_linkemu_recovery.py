"""A `tandem linkemu serve` daemon under hostile control and hostile devices (docs/security.md): the smallest share
leaves the link working once restored, a reassignment re-times what waits, and a user port holds a bounded number
of connections.  Real sockets on loopback; rates from a synthetic trace, so the expected transfer times are known.
(Shares below the floor are refused: tests/system/test_linkemu_control.py.)
"""

from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np
import pytest

from linkemu.assignments import Assignment, AssignmentTable
from linkemu.config import split_address
from linkemu.proxy import MAX_CONNECTIONS
from tandem.shares import MIN_SHARE
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.wire.v1 import linkemu_pb2 as pb
from tandem.wire.v1 import linkemu_pb2_grpc
from tandem.processes import LinkEmuProcess
from harness.clients import with_admin_token
from tests.system.test_linkemu import Sink, _scrape

BANDWIDTH_HZ = 1e6
SE = {(0, 0): 16.0, (0, 1): 4.0, (1, 0): 16.0, (1, 1): 16.0}  # bit/s/Hz of (user, edge), both ways, every slot
BASE_DELAY_S = 0.005


def rate_bps(user: int, edge: int, share: float) -> float:
    return share * BANDWIDTH_HZ * SE[user, edge]


class Echo:
    """A TCP server on loopback that echoes every connection; counts the connections it accepted."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.server.accept()
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)


@pytest.fixture
def link(tmp_path):
    """Users 0 and 1 at share 0.5; user 0 on edge 0 (a Sink), user 1 on edge 1 (an Echo); the control service
    and metrics on; the default connection cap."""
    se = np.zeros((50, 2, 2))
    for (user, edge), value in SE.items():
        se[:, user, edge] = value
    trace = tmp_path / "two-by-two.npz"
    save_trace(synthetic_trace(se, se, slot_ms=100, bandwidth_hz=BANDWIDTH_HZ), trace)
    sink, echo = Sink(), Echo()
    config = tmp_path / "linkemu.yaml"
    config.write_text(
        f"trace: {trace}\nbase_delay_ms: {BASE_DELAY_S * 1000}\nmetrics_port: 0\ncontrol_listen: '127.0.0.1:0'\n"
        f"edges: [{{index: 0, address: '{sink.address}'}}, {{index: 1, address: '{echo.address}'}}]\n"
        "users: [{user: 0, edge: 0, share: 0.5}, {user: 1, edge: 1, share: 0.5}]\n")
    with LinkEmuProcess(["--config", str(config)], log_path=tmp_path / "linkemu.log") as emulator, \
            grpc.insecure_channel(emulator.control_address) as channel:
        yield emulator, linkemu_pb2_grpc.LinkControlStub(with_admin_token(channel)), sink, echo


def assign(control, user: int, edge: int, share: float) -> None:
    control.Assign(pb.AssignRequest(assignments=[pb.UserAssignment(user=user, edge=edge, share=share)]), timeout=10)


def metric(emulator, name: str, **labels: str) -> float | None:
    return _scrape(emulator.metrics_port).get((name, tuple(sorted(labels.items()))))


def wait_for_metric(emulator, value: float, name: str, **labels: str) -> None:
    """Gauges are refreshed every slot: poll until ``name`` shows ``value`` (or fail after 10 s)."""
    deadline = time.monotonic() + 10
    while (seen := metric(emulator, name, **labels)) != pytest.approx(value) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == pytest.approx(value), (name, labels, seen)


def crawl_then_change(emulator, control, sink: Sink, nbytes: int, change) -> tuple[float, socket.socket]:
    """User 0 at the smallest share sends ``nbytes`` to edge 0's sink; while they crawl, ``change(control)``.
    Returns when the change was made, and the device's connection (open, the sink's reply still to read)."""
    assign(control, 0, 0, MIN_SHARE)  # 1600 bit/s: one 16 KiB chunk in 80 s
    sink.receive(nbytes)
    device = socket.create_connection(split_address(emulator.addresses[0]))
    device.settimeout(60)
    threading.Thread(target=device.sendall, args=(b"x" * nbytes,), daemon=True).start()
    time.sleep(1.0)
    assert sink.received == 0  # in flight: held by the tiny share
    changed = time.monotonic()
    change(control)
    return changed, device


def test_a_link_recovers_fully_when_a_tiny_share_is_restored(link):
    """Before the fix every chunk queued behind the first one's arrival at the tiny share (minutes, or ~1e298 s
    for 1e-300): restoring the share did not help until a restart.  Now the bytes waiting go again at the restored
    rate from that moment, over the same connection."""
    emulator, control, sink, _ = link
    nbytes = 2_000_000
    restored, device = crawl_then_change(emulator, control, sink, nbytes, lambda c: assign(c, 0, 0, 0.5))
    with device:
        assert device.recv(1) == b"k"  # every byte reached the sink over the connection opened before
    elapsed = sink.received_at - restored
    expected = nbytes * 8 / rate_bps(0, 0, 0.5) + BASE_DELAY_S  # 2 s
    assert sink.received == nbytes and 0.7 * expected < elapsed < 3 * expected + 1.0, (elapsed, expected)
    wait_for_metric(emulator, rate_bps(0, 0, 0.5), "tandem_linkemu_rate_bps", user="0", direction="up")
    assert not metric(emulator, "tandem_linkemu_link_down_total", user="0")


def test_a_reassignment_carries_waiting_bytes_at_the_new_links_rate_over_the_old_connection(link):
    """User 0 moves to edge 1 while its bytes crawl towards edge 0: the open connection stays with edge 0 (TCP
    cannot move; the device moves its session itself), its waiting bytes go at once at the rate of (user 0,
    edge 1) -- a quarter of edge 0's, so arriving faster than that rate allows would show they were not re-timed
    -- and a new connection reaches edge 1."""
    emulator, control, sink, echo = link
    nbytes = 500_000
    moved, device = crawl_then_change(emulator, control, sink, nbytes, lambda c: control.Assign(pb.AssignRequest(
        assignments=[pb.UserAssignment(user=1, edge=0, share=0.5), pb.UserAssignment(user=0, edge=1, share=0.5)]),
        timeout=10))
    with device:
        assert device.recv(1) == b"k"
    elapsed = sink.received_at - moved
    expected = nbytes * 8 / rate_bps(0, 1, 0.5) + BASE_DELAY_S  # 2 s (0.5 s at edge 0's rate)
    assert sink.received == nbytes and 0.7 * expected < elapsed < 3 * expected + 1.0, (elapsed, expected)
    with socket.create_connection(split_address(emulator.addresses[0]), timeout=30) as moved_device:
        moved_device.sendall(b"ping")
        assert moved_device.recv(4) == b"ping" and echo.accepted == 1  # the new connection went to edge 1


def echoes(connection: socket.socket) -> bool:
    try:
        connection.sendall(b"ping")
        return connection.recv(4) == b"ping"
    except OSError:
        return False


def test_connections_past_the_cap_are_closed_at_once_and_never_reach_the_edge(link):
    emulator, _, _, echo = link
    address = split_address(emulator.addresses[1])
    held = [socket.create_connection(address, timeout=30) for _ in range(MAX_CONNECTIONS)]
    assert all(echoes(connection) for connection in held)  # the first N work
    with socket.create_connection(address, timeout=30) as extra:
        try:
            closed = extra.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
    assert echo.accepted == MAX_CONNECTIONS  # the refused one opened no connection to the edge
    wait_for_metric(emulator, 1, "tandem_linkemu_connections_refused_total", user="1")
    assert all(echoes(connection) for connection in held)  # and the others go on
    held.pop().close()
    deadline = time.monotonic() + 10  # the proxy notices the close on its own time
    while time.monotonic() < deadline:
        with socket.create_connection(address, timeout=30) as again:
            if echoes(again):
                break
        time.sleep(0.1)
    else:
        pytest.fail("a closed connection's place was not given back")
    for connection in held:
        connection.close()


def test_the_table_tells_listeners_which_users_changed():
    table = AssignmentTable([0, 1], {0: Assignment(0, 0.5), 1: Assignment(0, 0.5), 2: Assignment(1, 0.5)})
    heard: list[frozenset[int]] = []
    table.subscribe(heard.append)
    table.assign({0: Assignment(0, 0.5), 1: Assignment(0, 0.25), 2: Assignment(0, 0.25)})  # 0 unchanged
    table.assign({0: Assignment(0, 0.5)})  # nothing changed
    with pytest.raises(ValueError):
        table.assign({1: Assignment(0, 1e-300)})
    assert heard == [frozenset({1, 2})]
