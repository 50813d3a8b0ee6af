"""Unit tests of the controller's pure parts: telemetry, the allocation board, state, the admin token check, and
the slot loop's handling of a failing or invalid policy (no daemons: the edge address is a closed port)."""

from __future__ import annotations

import asyncio
import math

import pytest

from controller.board import AllocationBoard
from controller.config import ControllerConfig, PolicySpec
from controller.estimator import acceptance_from_rate
from controller.loop import ControlLoop
from controller.metrics import ControllerMetrics
from controller.policies.base import Allocation, Decision, Policy
from controller.service import parse_param
from controller.state import ControllerState, StateError, VersionedDecision
from controller.telemetry import DeviceReport, EdgeLoadSample, Telemetry
from controller.trust import ObservedUser


def config(**overrides) -> ControllerConfig:
    return ControllerConfig.model_validate({
        "edges": [{"id": 0, "address": "127.0.0.1:9"}, {"id": 2, "address": "127.0.0.1:9", "compute_scale": 0.5}],
        "users": [{"id": 0}, {"id": 5, "draft_length": 6}], "failover_after_s": 2.0, **overrides})


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


class Broken(Policy):
    name = "broken"

    def __init__(self, decide) -> None:
        super().__init__()
        self._decide = decide

    def decide(self, observation):
        return self._decide(observation)


@pytest.mark.parametrize("bad", [
    lambda o: Decision(o.slot, (Allocation(0, 0, 0.7, 0.5, 4), Allocation(5, 0, 0.7, 0.5, 4))),  # sum over 1
    lambda o: Decision(o.slot, (Allocation(0, 9, 0.5, 0.5, 4), Allocation(5, 0, 0.5, 0.5, 4))),  # unknown edge
    lambda o: Decision(o.slot, (Allocation(0, 0, math.nan, 0.5, 4), Allocation(5, 2, 1, 1, 4))),  # NaN
    lambda o: Decision(o.slot, (Allocation(0, 0, 0.5, 0.5, 4),)),  # a user missing
    lambda o: 1 / 0,  # the policy itself fails
], ids=["sum-over-1", "unknown-edge", "nan", "user-missing", "raises"])
def test_an_invalid_decision_leaves_the_last_one_in_force(tmp_path, bad):
    async def scenario():
        state = ControllerState(tmp_path / "c.sqlite")
        loop = ControlLoop(config(), state, PolicySpec(name="max-sinr-equal"), ControllerMetrics())
        await loop.step()
        good = loop.latest
        loop.policy = Broken(bad)
        await loop.step()
        await loop.close()
        return good, loop.latest, state.load_decision()

    good, latest, stored = asyncio.run(scenario())
    assert good is not None and latest == good and stored == good


def test_a_stored_decision_outside_the_topology_is_not_resumed_but_its_version_is(tmp_path):
    state = ControllerState(tmp_path / "c.sqlite")
    state.save_decision(VersionedDecision(41, 1.0, Decision(3, (Allocation(0, 7, 1.0, 1.0, 4),
                                                                Allocation(5, 2, 1.0, 1.0, 4)))))

    async def scenario():
        loop = ControlLoop(config(), state, PolicySpec(name="max-sinr-equal"), ControllerMetrics())
        resumed = loop.latest
        loop.telemetry.probe_result(0, EdgeLoadSample(0, 0, 0.0, shares_version=57))  # an edge holds version 57
        await loop.step()
        await loop.close()
        return resumed, loop.latest

    resumed, decided = asyncio.run(scenario())
    assert resumed is None
    assert decided.version == 58 and decided.decision.slot == 4


def test_a_policy_that_hangs_does_not_stop_the_loop(tmp_path):
    import time

    async def scenario():
        loop = ControlLoop(config(), ControllerState(tmp_path / "c.sqlite"), PolicySpec(name="max-sinr-equal"),
                           ControllerMetrics())
        await loop.step()
        first = loop.latest
        good = loop.policy
        loop.policy = Broken(lambda o: time.sleep(0.5) or good.decide(o))
        loop._decision_budget = 0.05
        await loop.step()  # times out
        await loop.step()  # the slow policy is still running: no second one
        errors = {reason: loop.metrics.decision_errors.labels(reason)._value.get()
                  for reason in ("policy-timeout", "policy-busy")}
        await asyncio.sleep(0.6)
        loop._decision_budget = 5.0
        await loop.step()  # it finished: the next slot decides again
        await loop.close()
        return first, errors, loop.latest

    first, errors, latest = asyncio.run(scenario())
    assert errors == {"policy-timeout": 1, "policy-busy": 1}
    assert latest.version == first.version + 1


def test_users_moved_off_a_failed_edge_count_as_failovers_others_as_migrations(tmp_path):
    async def scenario():
        loop = ControlLoop(config(), ControllerState(tmp_path / "c.sqlite"), PolicySpec(name="max-sinr-equal"),
                           ControllerMetrics())
        loop.telemetry.record_measurements(0, [(0, 0, 5.0, 5.0), (0, 2, 1.0, 1.0), (5, 0, 1.0, 1.0),
                                               (5, 2, 5.0, 5.0)])
        await loop.step()  # user 0 on edge 0, user 5 on edge 2
        placed = {a.user: a.edge for a in loop.latest.decision.allocations}
        loop.telemetry.probe_result(0, None)  # (the step's probes of the closed port failed already)
        since = loop.telemetry.edges[0].failing_since
        loop.telemetry.probe_result(0, None, now=since + 10.0)  # edge 0 down: user 0 must move
        loop.telemetry.record_measurements(1, [(0, 0, 5.0, 5.0), (0, 2, 1.0, 1.0), (5, 0, 5.0, 5.0),
                                               (5, 2, 1.0, 1.0)])  # user 5 would rather be on edge 0 now
        loop._count_moves(loop.policy.decide(loop.telemetry.observation(1)))
        await loop.close()
        return placed, loop.metrics.failovers._value.get(), loop.metrics.migrations._value.get()

    placed, failovers, migrations = asyncio.run(scenario())
    assert placed == {0: 0, 5: 2}
    assert (failovers, migrations) == (1, 0)  # user 0 left the dead edge; user 5 stays (edge 0 is out)
