"""The controller's slot loop on a topology whose edges do not answer (127.0.0.1:9): an invalid or hanging policy
leaves the last decision in force, a stored decision outside the topology is not resumed, and moves off a failed
edge count as failovers. The loop dials the edges every slot, hence a system test."""

from __future__ import annotations

import asyncio
import math

import pytest

from controller.config import PolicySpec
from controller.loop import ControlLoop
from controller.metrics import ControllerMetrics
from controller.policies.base import Allocation, Decision, Policy
from controller.state import ControllerState, VersionedDecision
from controller.telemetry import EdgeLoadSample
from harness.scenarios import controller_config as config


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
