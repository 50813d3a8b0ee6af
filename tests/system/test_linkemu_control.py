"""The emulator's control service over real gRPC: measurement reports every slot, assignments from a controller."""

from __future__ import annotations

import itertools
import socket
import time

import grpc
import pytest

from linkemu.config import split_address
from tandem.processes import LinkEmuProcess
from tandem.shares import MIN_SHARE
from tandem.trace_format import load_trace
from tandem.wire.v1 import linkemu_pb2 as pb
from tandem.wire.v1 import linkemu_pb2_grpc
from harness.clients import run_tandem, with_admin_token
from tests.system.test_linkemu import Sink, _scrape


SHARE_RULE = f"share must be within [{MIN_SHARE:g}, 1]"


def _table(reply: pb.Assignments) -> dict[int, tuple[int, float]]:
    return {item.user: (item.edge, item.share) for item in reply.assignments}


@pytest.fixture(scope="module")
def controlled(umi_trace, tmp_path_factory):
    """A `linkemu serve` daemon carrying users 0 and 1 of the UMi trace to edges 0 and 1 (two TCP sinks), with
    the control service and metrics on; the trace plays 10x faster."""
    sinks = [Sink(), Sink()]
    config = tmp_path_factory.mktemp("control") / "linkemu.yaml"
    config.write_text(
        f"trace: {umi_trace}\nspeedup: 10\nmetrics_port: 0\ncontrol_listen: '127.0.0.1:0'\n"
        f"edges: [{{index: 0, address: '{sinks[0].address}'}}, {{index: 1, address: '{sinks[1].address}'}}]\n"
        "users: [{user: 0, edge: 0, share: 0.5}, {user: 1, edge: 0, share: 0.5}]\n")
    with LinkEmuProcess(["--config", str(config)]) as emulator, \
            grpc.insecure_channel(emulator.control_address) as channel:
        yield emulator, linkemu_pb2_grpc.LinkControlStub(with_admin_token(channel)), sinks


def test_measurement_reports_follow_the_trace_slot_by_slot(controlled, umi_trace):
    _, control, _ = controlled
    trace = load_trace(umi_trace)
    watch = control.WatchMeasurements(pb.WatchMeasurementsRequest(), timeout=30)
    reports = list(itertools.islice(watch, 5))
    watch.cancel()
    slots = [report.slot for report in reports]
    assert all((b - a) % trace.metadata.num_slots > 0 for a, b in zip(slots, slots[1:])), slots  # newer each time
    for report in reports:
        assert report.slot_s == pytest.approx(trace.slot_s)
        assert [(pair.user, pair.edge) for pair in report.pairs] == [(u, e) for u in (0, 1) for e in range(3)]
        for pair in report.pairs:
            assert pair.sinr_down_db == pytest.approx(trace.sinr_db[0, report.slot, pair.user, pair.edge], abs=1e-4)
            assert pair.sinr_up_db == pytest.approx(trace.sinr_db[1, report.slot, pair.user, pair.edge], abs=1e-4)


def test_an_assignment_moves_shaping_and_new_connections_to_the_new_edge(controlled):
    emulator, control, sinks = controlled
    assert _table(control.GetAssignments(pb.GetAssignmentsRequest())) == {0: (0, 0.5), 1: (0, 0.5)}
    reply = control.Assign(pb.AssignRequest(assignments=[pb.UserAssignment(user=1, edge=1, share=0.8)]))
    assert _table(reply) == {0: (0, 0.5), 1: (1, 0.8)}
    share_on = {edge: ("tandem_linkemu_share", (("edge", edge), ("user", "1"))) for edge in ("0", "1")}
    deadline = time.monotonic() + 10
    while (metrics := _scrape(emulator.metrics_port)).get(share_on["1"]) != 0.8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics[share_on["1"]] == 0.8 and share_on["0"] not in metrics  # no stale series for the old edge
    received = sinks[1].receive(100)
    with socket.create_connection(split_address(emulator.addresses[1])) as device:
        device.settimeout(30)
        device.sendall(b"x" * 100)
        assert device.recv(1) == b"k"  # the new connection was carried to edge 1's sink
    received.join(5)
    assert sinks[1].received == 100 and sinks[0].received == 0
    control.Assign(pb.AssignRequest(assignments=[pb.UserAssignment(user=1, edge=0, share=0.5)]))


@pytest.mark.parametrize("assignments, reason", [
    ([], "no assignments given"),
    ([(0, 0, 1.5)], SHARE_RULE),
    ([(0, 0, float("nan"))], SHARE_RULE),
    # below the floor: 1e-300 made the link unusable until a restart, 5e-324 an arrival time of inf
    ([(0, 0, 1e-300)], SHARE_RULE),
    ([(0, 0, 5e-324)], SHARE_RULE),
    ([(0, 0, MIN_SHARE / 2)], SHARE_RULE),
    ([(0, 2, 0.5)], "edge 2 is not one this emulator can reach"),
    ([(3, 0, 0.5)], "user 3 is not carried by this emulator"),
    ([(0, 0, 0.7)], "the shares on edge 0 would sum to 1.2 > 1"),
    ([(0, 1, 0.5), (0, 0, 0.5)], "user 0 is assigned twice"),
    ([(0, 1, 0.5), (1, 1, 0.6)], "the shares on edge 1 would sum to 1.1 > 1"),
])
def test_bad_assignments_are_refused_and_change_nothing(controlled, assignments, reason):
    _, control, _ = controlled
    before = control.GetAssignments(pb.GetAssignmentsRequest())
    request = pb.AssignRequest(assignments=[pb.UserAssignment(user=u, edge=e, share=s) for u, e, s in assignments])
    with pytest.raises(grpc.RpcError) as refused:
        control.Assign(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in refused.value.details()
    assert control.GetAssignments(pb.GetAssignmentsRequest()) == before


def test_a_taken_control_address_exits_2(umi_trace):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_tandem("linkemu", "serve", "--trace", str(umi_trace), "--upstream", "127.0.0.1:9",
                          "--control-listen", f"127.0.0.1:{port}")
    assert done.returncode == 2 and f"control service cannot listen on 127.0.0.1:{port}" in done.stderr
