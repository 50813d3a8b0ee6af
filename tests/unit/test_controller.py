"""Unit tests of the controller's pure parts: telemetry, the allocation board, state, the admin token check, and
the slot loop's handling of a failing or invalid policy (no daemons: the edge address is a closed port)."""

from __future__ import annotations

import asyncio
import math

import pytest

from controller.board import AllocationBoard
from controller.config import PolicySpec
from controller.estimator import acceptance_from_rate
from controller.policies.base import Allocation, Decision
from controller.service import parse_param
from controller.state import ControllerState, StateError, VersionedDecision
from controller.telemetry import DeviceReport, EdgeLoadSample, Telemetry
from controller.trust import ObservedUser
from harness.scenarios import controller_config as config


def test_observation_uses_newest_reports_and_measurements_over_healthy_edges():
    telemetry = Telemetry(config())
    telemetry.record_measurements(7, [(5, 2, 3.0, 4.0), (5, 0, float("nan"), -1.0)])
    telemetry.record_report(5, DeviceReport(0.03, 0.9, 40, 0.2))
    assert telemetry.observation(slot=3).users[1].pending_tokens == 0  # no edge holds a session of it: idle
    telemetry.probe_result(2, EdgeLoadSample(1, 0, 0.1, 1, users={5: ObservedUser(50, 1, 0, 0)}), now=0.0)
    observation = telemetry.observation(slot=3)
    user = observation.users[1]
    assert (user.user, user.se_up, user.se_down) == (5, (0.0, 3.0), (0.0, 4.0))  # NaN and negative: outage
    assert (user.draft_s_per_token, user.pending_tokens, user.draft_length) == (0.03, 40, 6)
    # The report counts accepted / drafted of 6-token blocks: 0.9 of them is a per-token acceptance of 0.97.
    assert user.acceptance == pytest.approx(acceptance_from_rate(0.9, 6)) and 0.96 < user.acceptance < 0.98
    assert observation.users[0].se_up == (4.0, 4.0)  # no measurement: the assumed spectral efficiency
    assert [e.edge for e in observation.edges] == [0, 2] and observation.edges[1].timing.compute_scale == 0.5


def test_an_edge_failing_probes_past_the_deadline_leaves_the_observation():
    telemetry = Telemetry(config())
    assert not telemetry.probe_result(2, None, now=100.0)  # failing, not yet past the deadline
    assert telemetry.probe_result(2, None, now=102.5)  # down
    assert [e.edge for e in telemetry.observation(0).edges] == [0]
    assert telemetry.probe_result(2, EdgeLoadSample(0, 0, 0.0, 1), now=103.0)  # back
    telemetry.probe_result(0, None, now=0.0)
    telemetry.probe_result(0, None, now=10.0)
    telemetry.probe_result(2, None, now=0.0)
    telemetry.probe_result(2, None, now=10.0)
    with pytest.raises(ValueError, match="no edge is healthy"):
        telemetry.observation(0)


@pytest.mark.parametrize("user, report", [
    (9, DeviceReport(0.01, 0.5, 1)),
    (0, DeviceReport(math.nan, 0.5, 1)),
    (0, DeviceReport(0.01, 1.01, 1)),
    (0, DeviceReport(0.01, 0.5, 1, math.inf)),
])
def test_bad_device_reports_are_refused_and_change_nothing(user, report):
    telemetry = Telemetry(config())
    with pytest.raises(ValueError):
        telemetry.record_report(user, report)
    assert telemetry.reports == {}


def decision(version: int, edge_of_user0: int) -> VersionedDecision:
    return VersionedDecision(version, 1.0, Decision(version, (Allocation(0, edge_of_user0, 1.0, 1.0, 4),
                                                              Allocation(5, 2, 1.0, 1.0, 6))))


def test_the_board_sends_every_version_and_a_slow_reader_gets_the_newest():
    async def scenario():
        board = AllocationBoard()
        watch = board.watch(5).__aiter__()
        first = asyncio.ensure_future(watch.__anext__())
        await asyncio.sleep(0)
        await board.publish(decision(1, 0))
        got = [await first]
        await board.publish(decision(2, 2))
        await board.publish(decision(3, 0))  # the reader was not waiting: it skips version 2
        got.append(await watch.__anext__())
        return got

    got = asyncio.run(scenario())
    assert [(item.version, item.allocation.edge) for item in got] == [(1, 2), (3, 2)]


def test_state_round_trip_and_refusal_of_a_damaged_file(tmp_path):
    state = ControllerState(tmp_path / "c.sqlite")
    state.save_policy(PolicySpec(name="tma-opt", params={"parallel": False}))
    state.save_decision(decision(4, 2))
    state.close()
    again = ControllerState(tmp_path / "c.sqlite")
    assert again.load_policy().params == {"parallel": False}
    assert again.load_decision() == decision(4, 2)
    again._put("decision", '{"version": "x"}')
    with pytest.raises(StateError):
        again.load_decision()
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StateError):
        ControllerState(tmp_path / "junk.sqlite")


class _Context:
    """What tandem.rpc reads of a call: its metadata and (over TLS) the peer certificate's common name."""

    def __init__(self, metadata=(), identity: str | None = None) -> None:
        self.metadata, self.identity = metadata, identity

    def invocation_metadata(self):
        return self.metadata

    def auth_context(self):
        return {"x509_common_name": [self.identity.encode()]} if self.identity else {}


def test_access_rules_for_admin_calls():
    from grpc import StatusCode

    from tandem.rpc import ADMINS, Access, Guard

    access = Access({"pkg.Admin": ADMINS})
    plaintext, tls = Guard(access, secure=False, admin_token="secret-token-0123"), Guard(access, secure=True)
    admin = ADMINS

    def refused(guard, context):
        refusal = guard._refusal(admin, context)
        return refusal and refusal[0]
    assert access.required("/pkg.Admin/Set") == admin and access.required("/pkg.Other/Get") is None
    assert refused(plaintext, _Context([("authorization", "Bearer secret-token-0123")])) is None
    assert refused(plaintext, _Context()) == StatusCode.UNAUTHENTICATED
    assert refused(plaintext, _Context([("authorization", "Bearer wrong")])) == StatusCode.PERMISSION_DENIED
    assert refused(plaintext, _Context([("authorization", "secret-token-0123")])) == StatusCode.PERMISSION_DENIED
    # plaintext without a token: admin-only calls closed, not open
    assert refused(Guard(access, secure=False), _Context()) == StatusCode.PERMISSION_DENIED
    assert refused(tls, _Context(identity="controller")) is None
    assert refused(tls, _Context(identity="admin")) is None
    assert refused(tls, _Context(identity="device-3")) == StatusCode.PERMISSION_DENIED
    assert refused(tls, _Context()) == StatusCode.UNAUTHENTICATED


def test_parameters_parse_to_numbers_and_refuse_non_finite():
    assert [parse_param(v) for v in ("3", "0.5", "true", "name")] == [3, 0.5, True, "name"]
    for value in ("nan", "inf", "-inf", "x" * 1000):
        with pytest.raises(ValueError):
            parse_param(value)
