"""Device reports cannot buy shares (issue 18, finding 3), and one device cannot tie up the controller's streams or
flood its telemetry (finding 6) — with a real controller and a real llama.cpp edge over mutual TLS.

The compose topology reduced to one edge, four users each with a request open at the edge, ``tma-opt``: device-3
reports 2³²−1 pending tokens, acceptance 0 and drafting in 0 s (before this pass it got 0.997 of the edge and the
others 0.001 each).  Its figures are now believed only within what the edge observes (its pending work at most
what its open session may still commit) and the deployment allows (controller/trust.py), and every busy member keeps
the share floor (controller/share_floor.py): at most 1 − 3·floor/4 for device-3, at least floor/4 for every honest
user.
"""

from __future__ import annotations

import time

import grpc
import pytest
import yaml

from device_client.edge_handle import SessionSpec
from device_client.grpc_edge import EdgeConnection
from tandem.sampling import SamplingConfig
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc
from tandem.processes import ControllerProcess, EdgeProcess
from harness.clients import creds

USERS = 4
LIAR = 3
FLOOR = 0.5  # the controller's default share_floor
HONEST = cpb.UserReport(draft_seconds_per_token=0.04, acceptance=0.7, pending_tokens=32, round_seconds=0.2)
LIE = cpb.UserReport(draft_seconds_per_token=0.0, acceptance=0.0, pending_tokens=2**32 - 1, round_seconds=0.0)
WATCHES = 2
REPORT_RATE = 5.0


@pytest.fixture(scope="module")
def controller(prepared, data_dir, pki, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    edge = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--tls-dir", str(pki), "--edge-id", "0",
                        "--slots", "2", "--max-sessions", "16"], log_path=root / "edge.log")
    with edge:
        config = root / "controller.yaml"
        config.write_text(yaml.safe_dump({
            "edges": [{"id": 0, "address": edge.address, "compute_scale": 0.05, "capacity": 8}],
            "users": [{"id": user, "draft_length": 4} for user in range(USERS)],
            "slot_s": 0.3, "policy": {"name": "tma-opt"}, "listen": "127.0.0.1:0", "metrics_port": 0,
            "assume": {"draft_seconds_per_token": 0.04, "acceptance": 0.7, "pending_tokens": 32},
            "watches_per_identity": WATCHES, "report_rate_per_s": REPORT_RATE,
            "tls": {"dir": str(pki)}}))
        process = ControllerProcess(["--config", str(config), "--state", str(root / "controller.sqlite")],
                                    log_path=root / "controller.log")
        with process:
            process.edge = edge
            yield process


@pytest.fixture
def requests_open(pki, controller):
    """Every user with a request open at the edge, as the edge reports it: the honest ones with 32 tokens to go,
    the liar with its budget left undeclared (the context left bounds it)."""
    connections, sessions = [], []
    for user in range(USERS):
        connection = EdgeConnection(controller.edge.address, transport=creds(pki, f"device-{user}"), edge_id=0)
        budget = 0 if user == LIAR else 32
        sessions.append(connection.open(SessionSpec(list(range(100, 140)), SamplingConfig(), True, draft_length=4,
                                                    max_new_tokens=budget, user=user)))
        connections.append(connection)
    yield
    for session, connection in zip(sessions, connections):
        session.cancel()
        connection.close()


def stub(pki, controller, name: str) -> control_pb2_grpc.ControllerStub:
    return control_pb2_grpc.ControllerStub(creds(pki, name).channel(controller.address, "controller"))


def report(pki, controller, user: int, figures: cpb.UserReport) -> None:
    message = cpb.UserReport()
    message.CopyFrom(figures)
    message.user = user
    stub(pki, controller, f"device-{user}").Report(message, timeout=5)


def shares(pki, controller) -> dict[int, tuple[float, float]]:
    status = stub(pki, controller, "device-0").GetStatus(cpb.StatusRequest(), timeout=5)
    return {a.user: (a.bandwidth_share, a.compute_share) for a in status.allocations}


def settle(pki, controller, reports: dict[int, cpb.UserReport]) -> dict[int, tuple[float, float]]:
    """Report these figures for a few slots (within the rate limit); the allocation they lead to."""
    for _ in range(6):
        for user, figures in reports.items():
            report(pki, controller, user, figures)
        time.sleep(0.35)
    return shares(pki, controller)


def test_a_lying_device_gains_at_most_the_documented_bound(pki, controller, requests_open):
    honest = settle(pki, controller, {user: HONEST for user in range(USERS)})
    assert all(abs(b - 0.25) < 0.02 and abs(c - 0.25) < 0.02 for b, c in honest.values()), honest
    lied = settle(pki, controller, {**{user: HONEST for user in range(LIAR)}, LIAR: LIE})
    ceiling, floor = 1 - (USERS - 1) * FLOOR / USERS, FLOOR / USERS
    for resource in (0, 1):
        assert lied[LIAR][resource] <= ceiling + 1e-9, lied
        assert all(lied[user][resource] >= floor - 1e-9 for user in range(LIAR)), lied
    settle(pki, controller, {user: HONEST for user in range(USERS)})


def test_a_device_reports_only_for_its_own_user_and_within_its_rate(pki, controller):
    with pytest.raises(grpc.RpcError) as other:
        stub(pki, controller, "device-1").Report(cpb.UserReport(user=2, acceptance=0.5), timeout=5)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    time.sleep(2.5)  # the bucket (a burst of twice the rate) refills
    device = stub(pki, controller, "device-1")
    codes = []
    for _ in range(int(4 * REPORT_RATE)):
        try:
            device.Report(cpb.UserReport(user=1, acceptance=0.5), timeout=5)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert codes[0] == grpc.StatusCode.OK and grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    report(pki, controller, 2, HONEST)  # another identity is not held back by device-1's flood


def test_a_device_holds_a_bounded_number_of_allocation_watches(pki, controller):
    device = stub(pki, controller, "device-2")
    watches = [device.WatchAllocation(cpb.WatchAllocationRequest(user=2), timeout=30) for _ in range(WATCHES)]
    for watch in watches:
        assert next(watch).user == 2
    extra = device.WatchAllocation(cpb.WatchAllocationRequest(user=2), timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        next(extra)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert next(stub(pki, controller, "device-0").WatchAllocation(cpb.WatchAllocationRequest(user=0),
                                                                 timeout=30)).user == 0  # others still may
    for watch in watches:
        watch.cancel()
    time.sleep(0.5)
    again = device.WatchAllocation(cpb.WatchAllocationRequest(user=2), timeout=30)
    assert next(again).user == 2  # a closed watch frees its place
    again.cancel()
