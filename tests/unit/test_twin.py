"""The digital twin on synthetic inputs with known answers: the closed form of ARCHITECTURE §4 for one user on a
constant channel, determinism for a seed, outages, migrations, and the profile and scenario schemas."""

from __future__ import annotations

import numpy as np
import pytest

from controller.policies import make_policy
from controller.twin.scenario import Scenario, ScenarioError, load_scenario
from controller.twin.simulator import DigitalTwin
from tandem.profiles import HardwareProfile, ProfileError, load_profile, save_profile
from toolbox.traces.synthetic import synthetic_trace

BANDWIDTH = 1e6
SE_UP, SE_DOWN = 2.0, 4.0


def profile(alpha: float) -> HardwareProfile:
    return HardwareProfile.model_validate({
        "name": "test", "sources": ["synthetic"],
        "device": {"draft_model": "d", "draft_seconds_per_token": 0.004, "prefill_seconds_per_token": 0.0005,
                   "draft_power_w": 3.0, "transmit_power_w": 0.2},
        "edge": {"target_model": "t", "verify_base_seconds": 0.01, "verify_seconds_per_token": 0.002,
                 "prefill_seconds_per_token": 0.0002,
                 "batch_scaling": [{"blocks": 1, "relative_time": 1.0}, {"blocks": 8, "relative_time": 2.0}]},
        "acceptance": {"per_token": alpha}})


def scenario(mode: str = "psd", answer: int = 23, prompt: int = 40, slots: int = 200, **changes) -> Scenario:
    return Scenario.model_validate({
        "name": "one", "trace": "t.npz", "profile": "p.yaml", "users": 1, "edges": [{"id": 0}],
        "duration_slots": slots, "arrivals": {"kind": "once", "at_s": 0.0},
        "prompt_tokens": {"kind": "fixed", "value": prompt}, "answer_tokens": {"kind": "fixed", "value": answer},
        "draft_length": 4, "mode": mode, "rtt_s": 0.01, **changes})


def constant_trace(slots: int = 200, up: float = SE_UP, down: float = SE_DOWN):
    return synthetic_trace(np.full(slots, down), np.full(slots, up), slot_ms=100, bandwidth_hz=BANDWIDTH)


def closed_form(hw: HardwareProfile, blocks: list[int], prompt: int, parallel: bool) -> float:
    """ARCHITECTURE §4 by hand: prefill, then one round per block (shares 1, one user: no batching, nobody else's
    step to wait for).  Under psd, drafting hides under the remote part only when every block is fully accepted
    (α = 1): otherwise the device re-drafts after each verdict."""
    d, e = hw.device, hw.edge
    upload = 8 * 2.0 * prompt / (BANDWIDTH * SE_UP)
    prefill = max(d.prefill_seconds_per_token * prompt, upload + e.prefill_seconds_per_token * prompt) + 0.01
    total = prefill
    for k in blocks:
        remote = (k * 48 / (BANDWIDTH * SE_UP) + 160 / (BANDWIDTH * SE_DOWN)
                  + e.verify_base_seconds + e.verify_seconds_per_token * (k + 1) + 0.01)
        draft = k * d.draft_seconds_per_token
        total += max(draft, remote) if parallel and hw.acceptance.per_token == 1.0 else draft + remote
    return total


@pytest.mark.parametrize("mode", ["psd", "sd"])
@pytest.mark.parametrize("alpha, blocks", [
    (1.0, [4, 4, 4, 4, 2]),  # 23 tokens: four full blocks emit 5 each, then a block of 2 emits the last 3
    (0.0, [4] * 19 + [3, 2, 1, 1]),  # one token per round; blocks shrink to remaining - 1 at the end
])
def test_one_user_on_a_constant_channel_matches_the_closed_form(mode, alpha, blocks):
    hw = profile(alpha)
    twin = DigitalTwin(scenario(mode), constant_trace(), hw, seed=1)
    run = twin.run(make_policy("max-sinr-equal"))
    (request,) = run.completed
    assert request.generated == 23
    assert request.latency == pytest.approx(closed_form(hw, blocks, 40, mode == "psd"), rel=1e-9)


def test_the_twin_is_deterministic_for_a_seed():
    trace = synthetic_trace(np.abs(np.sin(np.arange(300))) * 4, np.abs(np.cos(np.arange(300))) * 2)
    busy = scenario(slots=300, arrivals={"kind": "poisson", "rate_per_user_s": 0.5},
                    answer_tokens={"kind": "uniform", "low": 20, "high": 80})

    def summary(seed):
        twin = DigitalTwin(busy, trace, profile(0.7), seed=seed)
        run = twin.run(make_policy("tma-equal"))
        return run.summary(), [(r.arrival, r.latency, r.energy_j) for r in run.completed]

    assert summary(3) == summary(3)
    assert summary(3) != summary(4)
    assert summary(3)[0].completed > 5


def test_every_policy_plays_identical_requests_for_one_seed():
    """Arrivals, lengths and each user's acceptance draws come from streams of their own: under one seed the
    policies get the same requests (a shared stream gave them 70, 64 and 64), and a request that the same number of
    rounds serve emits the same tokens under any of them."""
    t = np.arange(300)[:, None, None] + np.arange(4)[None, :, None] + 7 * np.arange(2)[None, None, :]
    trace = synthetic_trace(np.abs(np.sin(t)) * 4 + 0.5, np.abs(np.cos(t)) * 2 + 0.5)  # 4 users x 2 edges
    busy = scenario(slots=300, users=4, edges=[{"id": 0}, {"id": 1}],
                    arrivals={"kind": "poisson", "rate_per_user_s": 0.3},
                    answer_tokens={"kind": "uniform", "low": 20, "high": 80},
                    prompt_tokens={"kind": "uniform", "low": 16, "high": 64})

    def requests(policy: str) -> list[tuple]:
        run = DigitalTwin(busy, trace, profile(0.7), seed=11).run(make_policy(policy))
        return sorted((r.user, r.arrival, r.prompt_tokens, r.answer_tokens) for r in run.completed + run.unfinished)

    played = {policy: requests(policy) for policy in ("max-sinr-equal", "tma-opt", "random", "alternate")}
    assert len(played["tma-opt"]) > 20
    assert all(requests == played["tma-opt"] for requests in played.values()), {k: len(v) for k, v in played.items()}


def test_time_in_system_counts_unfinished_requests_to_the_horizon():
    from controller.twin.simulator import Request, TwinRun

    done = Request(user=0, arrival=1.0, prompt_tokens=8, answer_tokens=4, first_token=1.5, finished=3.0)
    waiting = Request(user=1, arrival=5.0, prompt_tokens=8, answer_tokens=4)
    run = TwinRun([done], [waiting], end_s=10.0)
    assert run.mean_time_in_system() == pytest.approx((2.0 + 5.0) / 2)  # the unfinished one counts 10 - 5
    assert run.summary().mean_latency_s == pytest.approx(2.0) and run.summary().unfinished == 1


def test_an_outage_stalls_the_user_until_the_link_returns():
    outage_slots = 20
    down = np.r_[np.zeros(outage_slots), np.full(180, SE_DOWN)]
    up = np.r_[np.zeros(outage_slots), np.full(180, SE_UP)]
    hw = profile(1.0)
    twin = DigitalTwin(scenario(), synthetic_trace(down, up, bandwidth_hz=BANDWIDTH), hw, seed=0)
    (request,) = twin.run(make_policy("max-sinr-equal")).completed
    assert request.latency == pytest.approx(outage_slots * 0.1 + closed_form(hw, [4, 4, 4, 4, 2], 40, True))


def test_moving_between_edges_pays_a_prefill_each_time():
    se = np.full((2, 200, 1, 2), 3.0, np.float32)
    trace = constant_trace()
    two_edges = trace.__class__(**{**trace.__dict__, "se": se, "metadata": trace.metadata.model_copy(
        update={"num_edges": 2, "edge_bandwidth_hz": [BANDWIDTH, BANDWIDTH]})})
    both = scenario(answer=200, edges=[{"id": 0}, {"id": 1}])
    fixed = DigitalTwin(both, two_edges, profile(0.8), seed=5).run(make_policy("max-sinr-equal")).completed[0]
    moving = DigitalTwin(both, two_edges, profile(0.8), seed=5).run(make_policy("alternate")).completed[0]
    assert fixed.migrations == 0 and moving.migrations >= 2
    assert moving.latency > fixed.latency


def test_profiles_and_scenarios_are_validated(tmp_path):
    path = tmp_path / "p.yaml"
    save_profile(profile(0.7), path)
    assert load_profile(path) == profile(0.7)
    path.write_text("name: x\ndevice: {}\n")
    with pytest.raises(ProfileError, match="invalid profile"):
        load_profile(path)
    bad_curve = profile(0.7).model_dump()
    bad_curve["edge"]["batch_scaling"] = [{"blocks": 2, "relative_time": 1.0}]
    with pytest.raises(ValueError):
        HardwareProfile.model_validate(bad_curve)
    assert profile(0.7).edge.relative_time(4) == pytest.approx(1 + 3 / 7)
    assert profile(0.7).edge.relative_time(16) == pytest.approx(2 + 8 / 7)

    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text("name: s\ntrace: t.npz\nprofile: p.yaml\nusers: 2\nedges: [{id: 0}, {id: 0}]\n"
                             "duration_slots: 5\narrivals: {kind: once}\nprompt_tokens: {kind: fixed, value: 3}\n"
                             "answer_tokens: {kind: fixed, value: 3}\n")
    with pytest.raises(ScenarioError, match="listed twice"):
        load_scenario(scenario_file)
    with pytest.raises(ScenarioError, match="user 1 is not in the trace"):
        DigitalTwin(scenario(users=2), constant_trace(), profile(0.7))


def test_a_grid_must_fit_the_capacity_of_each_layout():
    three = scenario(edges=[{"id": 0, "capacity": 2}, {"id": 1, "capacity": 3}, {"id": 2, "capacity": 4}])
    three.check_grid(5, [[0, 1], [1, 2], [0, 1, 2]])
    with pytest.raises(ScenarioError, match=r"6 users do not fit the capacity \(5\) of edges 0, 1"):
        three.check_grid(6, [[1, 2], [0, 1]])


def test_the_draft_length_game_maps_any_action_to_valid_decisions_and_is_deterministic():
    """(Its reward, with known answers: tests/system/test_marl.py.)"""
    from controller.policies.draft_agent import CHOICES, AgentSpec
    from controller.twin.agents import DraftLengthGame, GameError, agent_id

    trace = synthetic_trace(np.full(100, 3.0), np.full(100, 2.0), bandwidth_hz=BANDWIDTH)
    busy = scenario(slots=50, users=1, arrivals={"kind": "poisson", "rate_per_user_s": 2.0},
                    edges=[{"id": 0, "capacity": 4}])
    game = DraftLengthGame(DigitalTwin(busy, trace, profile(0.7)), AgentSpec(4), energy_weight=0.1)
    observations = game.reset(seed=2)
    assert set(observations) == {agent_id(0)} and observations[agent_id(0)].shape == (game.spec.observation_size,)
    rng = np.random.default_rng(0)
    rewards = []
    while True:
        actions = {agent: rng.integers(0, CHOICES, game.spec.max_users) for agent in game.agents}
        decision = game.decision(actions)
        assert all(a.draft_length >= 1 for a in decision.allocations)
        observations, reward, terminated, truncated, _ = game.step(actions)
        rewards.append(reward[agent_id(0)])
        if truncated["__all__"]:
            break
    assert len(rewards) == 50 and np.isfinite(rewards).all() and min(rewards) < 0
    assert game.reset(seed=2)[agent_id(0)].tolist() == game.reset(seed=2)[agent_id(0)].tolist()
    with pytest.raises(GameError, match="4 choices per agent"):
        game.step({agent_id(0): np.zeros(3)})
    with pytest.raises(GameError, match="user slots"):
        DraftLengthGame(DigitalTwin(scenario(edges=[{"id": 0, "capacity": 32}]), trace, profile(0.7)), AgentSpec(4))
