"""The multi-agent side of the twin: the agent encoding turns "no change" into exactly the heuristic and any action
into valid draft lengths, the network is permutation-equivariant, the reward pays a request's tokens in the slot
they are made, the environments pass RLlib's and PettingZoo's checks, a short PPO training run produces a policy
that decides valid slots (its exported actor computing what RLlib's module computes), and bad checkpoints or
scenarios are refused with a clear error.  (The trained policy inside the controller daemon:
tests/system/test_control_plane.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from controller.estimator import EdgeState, UserState
from controller.policies.base import Observation
from controller.policies.checkpoints import network_spec
from controller.policies.draft_agent import CHOICES, SHIFT, AgentSpec, decode, encode, members_of
from controller.policies.mappo import prior_policy
from controller.policies.set_network import SetPolicyNetwork
from harness.clients import run_tandem
from harness.scenarios import edge_timing, write_twin_scenario


def observation(users: int = 6, edges: int = 2, seed: int = 0, **user_fields) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(0, tuple(EdgeState(e, 1e6, edge_timing(0.1 * (1.0 + e)), 8) for e in range(edges)), tuple(
        UserState(u, se_up=tuple(rng.uniform(0.5, 5, edges)), se_down=tuple(rng.uniform(0.5, 5, edges)),
                  draft_s_per_token=0.02, acceptance=0.7, draft_length=4, max_draft_length=8,
                  pending_tokens=int(rng.integers(0, 3)) * int(rng.integers(1, 300)), rtt_s=0.01, **user_fields)
        for u in range(users)))


def test_no_change_is_the_heuristic_and_any_action_gives_valid_draft_lengths():
    spec = AgentSpec(8)
    obs = observation(users=12)
    prior = prior_policy().decide(obs)
    members = members_of(obs, prior, spec)
    busy = {u.user for u in obs.users if u.busy}
    assert {obs.users[row].user for rows in members.of_edge for row in rows} == busy  # idle users are no members
    same = decode(obs, prior, members, np.full((2, spec.max_users), SHIFT), spec)
    assert same == prior
    rng = np.random.default_rng(1)
    for _ in range(50):
        decision = decode(obs, prior, members, rng.integers(-3, CHOICES + 3, (2, spec.max_users)), spec)
        decision.check(obs)
        for before, after, user in zip(prior.allocations, decision.allocations, obs.users):
            assert (before.edge, before.bandwidth_share, before.compute_share) == (
                after.edge, after.bandwidth_share, after.compute_share)
            assert 1 <= after.draft_length <= 8 and abs(after.draft_length - before.draft_length) <= SHIFT
            if not user.busy:
                assert after.draft_length == before.draft_length
    features = encode(obs, prior, members, spec, energy_weight=0.5)
    assert features.shape == (2, spec.observation_size) and np.isfinite(features).all()
    assert (features[:, 3] == 0.5).all()  # the energy weight
    with pytest.raises(ValueError, match="choices of shape"):
        decode(obs, prior, members, np.zeros((2, 3)), spec)
    one = AgentSpec(1)  # more busy users on an edge than slots: the first are members, the rest keep the heuristic
    few = members_of(obs, prior, one)
    assert [len(rows) for rows in few.of_edge] == [min(1, len(rows)) for rows in members.of_edge]
    assert max(len(rows) for rows in members.of_edge) > 1
    assert decode(obs, prior, few, np.full((2, 1), SHIFT), one) == prior


def test_the_network_is_permutation_equivariant_and_ignores_empty_slots():
    spec = AgentSpec(6)
    network = network_spec(16)
    rng = np.random.default_rng(2)
    actor = SetPolicyNetwork(network, {name: rng.normal(0, 0.5, shape).astype(np.float32)
                                       for name, shape in network.tensor_shapes().items()})
    obs = observation(users=10, edges=1, seed=3)
    prior = prior_policy().decide(obs)
    members = members_of(obs, prior, spec)
    count = len(members.of_edge[0])
    assert count >= 3
    features = encode(obs, prior, members, spec, 0.0)
    logits = actor.logits(features)[0, :count]
    order = np.random.default_rng(4).permutation(count)
    shuffled = encode(obs, prior, type(members)((members.of_edge[0][order],)), spec, 0.0)
    assert np.allclose(actor.logits(shuffled)[0, :count], logits[order], atol=1e-5)
    noisy = features.copy()
    noisy[0, 4 + count * 9 + 1:] = 0.0  # empty slots: absent (their first feature is 0) whatever else they hold
    noisy[0, 4 + count * 9 + 1::9] = 7.0
    assert np.allclose(actor.logits(noisy)[0, :count], logits, atol=1e-5)


def test_the_reward_pays_a_requests_tokens_in_the_slot_they_are_made(umi_trace, tmp_path):
    """With γ = 1 and no energy weight, an agent's reward × its slots is −(request-seconds in the slot) / slot
    plus the tokens its requests gained × draft seconds per token / slot: the potential's change."""
    from controller.twin.agents import DraftLengthGame
    from controller.twin.scenario import load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import load_profile
    from tandem.trace_format import load_trace

    scenario = load_scenario(write_twin_scenario(tmp_path, umi_trace, slots=30))
    twin = DigitalTwin(scenario, load_trace(umi_trace), load_profile(scenario.profile))
    game = DraftLengthGame(twin, AgentSpec(4), gamma=1.0)
    game.reset(3)
    draft_s, checked = twin.profile.device.draft_seconds_per_token, 0
    while not twin.finished:
        choices = {agent: np.full(4, SHIFT) for agent in game.agents}
        edge_of = {a.user: a.edge for a in game.decision(choices).allocations}
        requests = {edge: [r for u in twin.users if edge_of[u.index] == edge for r in u.queue] for edge in game.edges}
        before = {edge: [(r.generated, r.arrival) for r in rs] for edge, rs in requests.items()}
        begin, end = twin.now, twin.now + twin.slot_s
        _, rewards, *_ = game.step(choices)
        for edge, rs in requests.items():
            gained = sum(r.generated - generated for r, (generated, _) in zip(rs, before[edge]))
            seconds = sum(max(0.0, min(end, r.finished if r.finished is not None else end) - max(begin, r.arrival))
                          for r in rs)
            expected = (-seconds + gained * draft_s) / twin.slot_s
            assert rewards[f"edge-{edge}"] * 4 == pytest.approx(expected, abs=1e-9)
            checked += gained > 0
    assert checked > 5


@pytest.fixture(scope="module")
def episode_config(umi_trace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("marl")
    return {"scenario": str(write_twin_scenario(folder, umi_trace, slots=30)), "users": (2, 4), "edges": [2, 3],
            "energy_weights": [0.0, 0.5], "max_users": 4, "batch_envs": 3}


def test_the_rllib_environment_passes_rllib_checks(episode_config):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from controller.twin.rllib_env import TwinMultiAgentEnv

    env = TwinMultiAgentEnv(episode_config | {"seed": 3, "loads": [0.3, 0.6]})
    check_multiagent_environments(env)
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert first.keys() == again.keys() and all((first[a] == again[a]).all() for a in first)


def test_the_pettingzoo_wrapper_passes_the_parallel_api_test(episode_config):
    from pettingzoo.test import parallel_api_test

    from controller.twin.pettingzoo_env import TwinParallelEnv

    parallel_api_test(TwinParallelEnv(episode_config), num_cycles=60)


def test_an_episode_config_that_does_not_fit_is_refused(episode_config, umi_trace, tmp_path):
    from pydantic import ValidationError

    from controller.twin.agents import GameError
    from controller.twin.episodes import EpisodeConfig, Episodes
    from controller.twin.scenario import ScenarioError

    with pytest.raises(GameError, match="trained for at most 2 per edge"):
        Episodes(EpisodeConfig.model_validate(episode_config | {"max_users": 2}))
    with pytest.raises(ScenarioError, match="not in the trace"):
        Episodes(EpisodeConfig.model_validate(episode_config | {"users": (2, 40)}))
    small = write_twin_scenario(tmp_path, umi_trace, capacity=1)
    with pytest.raises(ScenarioError, match="do not fit the capacity"):
        Episodes(EpisodeConfig.model_validate(episode_config | {"scenario": str(small)}))
    rates = [Episodes(EpisodeConfig.model_validate(episode_config | {"loads": [load]})).game(1).twin.scenario
             .arrivals.rate_per_user_s for load in (0.4, 0.8)]  # the same episode (seed) at twice the load
    assert rates[1] == pytest.approx(2 * rates[0])
    for bad in ({"energy_weights": [float("nan")]}, {"gamma": 0.0}, {"gamma": 1.5}, {"loads": [0.0]}):
        with pytest.raises(ValidationError):
            EpisodeConfig.model_validate(episode_config | bad)


def test_a_short_training_run_gives_a_policy_that_decides_valid_slots(trained_policy, umi_trace):
    from controller.policies import make_policy
    from controller.twin.scenario import load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import load_profile
    from tandem.trace_format import load_trace

    run = trained_policy.parent
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and "policy_loss" in rows[-1] and "entropy" in rows[-1]
    assert {"validation_time_in_system_s", "validation_completion", "baseline_validation_time_in_system_s"} <= set(
        rows[-1])
    assert list((run / "tensorboard").iterdir()) and (run / "checkpoint" / "rllib_checkpoint.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["env_steps"] >= 600
    assert (run / "curves.png").stat().st_size > 1000
    both = run.parent / "both.png"
    done = run_tandem("train-curves", str(run), str(run), "-o", str(both))
    assert done.returncode == 0 and both.stat().st_size > 1000, done.stderr
    done = run_tandem("train-curves", str(run.parent / "nowhere"), "-o", str(both))
    assert done.returncode == 2 and "cannot read progress.jsonl" in done.stderr
    metadata = json.loads((trained_policy / "tandem-policy.json").read_text())
    assert metadata["training"]["baseline"] == "max-sinr-hysteresis:draft_lengths=tuned"
    policy = make_policy("mappo", checkpoint=trained_policy.name, policy_dir=trained_policy.parent)
    scenario = load_scenario(write_twin_scenario(run, umi_trace))
    twin = DigitalTwin(scenario, load_trace(umi_trace), load_profile(scenario.profile), seed=5)
    while not twin.finished:
        obs = twin.observation()
        decision = policy.decide(obs)
        decision.check(obs)
        twin.step(decision)
    assert twin.summary().completed > 0


def test_the_exported_actor_computes_what_rllib_computes(trained_policy):
    """The checkpoint the controller loads (JSON + safetensors, Tandem's numpy network) gives the logits RLlib's
    own module gives for every member slot.  (RLlib's checkpoint of this test's own run is read here as the
    reference; the controller never reads one.)"""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from controller.policies.mappo import MODULE_ID, LearnedDraftLengths

    run = trained_policy.parent  # 3 iterations, evaluated at the 3rd: "best" is the latest checkpoint's actor
    module = RLModule.from_checkpoint(str(run / "checkpoint" / "learner_group" / "learner" / "rl_module" / MODULE_ID))
    actor = LearnedDraftLengths.from_folder(trained_policy)
    observations = np.abs(np.random.default_rng(1).normal(size=(5, actor.spec.observation_size))).astype(np.float32)
    users = observations[:, 4:].reshape(5, actor.spec.max_users, -1)
    users[..., 0] = np.random.default_rng(2).integers(0, 2, users.shape[:2])  # some slots present, some empty
    observations[:, 4:] = users.reshape(5, -1)
    with torch.no_grad():
        output = module.forward_inference({"obs": torch.from_numpy(observations)})
    logits = output["action_dist_inputs"].numpy().reshape(5, actor.spec.max_users, CHOICES)
    present = users[..., 0] > 0.5
    assert present.any() and (~present).any()
    assert np.allclose(actor.network.logits(observations)[present], logits[present], atol=1e-4)
    assert (logits[~present].argmax(axis=-1) == SHIFT).all()  # an empty slot always keeps the prior


def test_a_corrupted_checkpoint_or_a_scenario_beyond_the_policy_is_refused(trained_policy, umi_trace, tmp_path):
    from controller.policies.mappo import CheckpointError, Mappo

    corrupted = tmp_path / "corrupted"
    shutil.copytree(trained_policy, corrupted)
    (corrupted / "actor.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        Mappo(checkpoint="corrupted", policy_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a learned-policy folder"):
        Mappo(checkpoint="empty", policy_dir=tmp_path)
    metadata = json.loads((trained_policy / "tandem-policy.json").read_text())
    (corrupted / "tandem-policy.json").write_text(json.dumps(metadata | {"encoding_version": 0}))
    with pytest.raises(CheckpointError, match="version 0"):
        Mappo(checkpoint="corrupted", policy_dir=tmp_path)
    big = write_twin_scenario(tmp_path, umi_trace, users=4, capacity=9)  # 9 users per edge, trained for 4
    done = run_tandem("evaluate", "--scenario", str(big), "--trace", str(umi_trace), "--users", "4", "--edges", "3",
                      "--checkpoint", str(trained_policy), "--quiet", "--out", str(tmp_path / "eval"))
    assert done.returncode == 2 and "trained for at most 4 per edge" in done.stderr
    with pytest.raises(ValueError, match="trained for at most 4"):  # a topology with larger edges
        Mappo(checkpoint=trained_policy.name, policy_dir=trained_policy.parent).decide(observation(users=3, edges=1))
    crowded = observation(users=12, edges=1)  # 12 busy users crowd one edge of capacity 4: decided, not refused
    crowded = Observation(0, (EdgeState(0, 1e6, edge_timing(0.1), 4),), tuple(
        UserState(u.user, u.se_up, u.se_down, 0.02, 0.7, 4, pending_tokens=50) for u in crowded.users))
    Mappo(checkpoint=trained_policy.name, policy_dir=trained_policy.parent).decide(crowded).check(crowded)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nusers: [1, 1]\n")
    done = run_tandem("train", "--scenario", str(bad), "--iterations", "1")
    assert done.returncode == 2 and "invalid scenario" in done.stderr


def test_evaluate_reports_every_policy_with_confidence_intervals(trained_policy, umi_trace, tmp_path):
    # All three edges of the small test trace: with two, some users have no usable edge most of the time, and a
    # replicate in which a policy completes nothing is refused (tested in test_edge_model.py).
    scenario = write_twin_scenario(tmp_path, umi_trace, slots=300)
    report = tmp_path / "evaluation.md"
    done = run_tandem("evaluate", "--scenario", str(scenario), "--trace", str(umi_trace), "--seeds", "2",
                      "--users", "2", "4", "--edges", "3", "--modes", "psd", "sd", "--checkpoint",
                      str(trained_policy), "--out", str(tmp_path / "eval"), "--report", str(report), "--quiet",
                      "--jobs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "evaluate.json").read_text())
    assert len(result["cells"]) == 2 * 1 * 2 * 2  # users x edges x modes x energy weights
    cell = result["cells"][0]
    assert set(cell["policies"]) == {"mappo", "oracle-lookahead", "tma-equal:draft_lengths=tuned", "tma-opt",
                                     "tma-equal", "max-sinr-hysteresis:draft_lengths=tuned", "max-sinr-hysteresis",
                                     "least-loaded", "max-sinr-equal"}
    baseline = cell["policies"]["max-sinr-hysteresis"]
    assert baseline["reduction_vs_baseline"]["mean"] == 0 and baseline["mean_time_in_system_s"]["n"] == 2
    assert cell["layout"] == [0, 1, 2] and 0 < cell["coverage"] <= 1
    assert {"psd", "sd"} == set(result["headline"])
    for plot in ("time_vs_load.png", "time_vs_edges.png", "energy_latency.png"):
        assert (tmp_path / "eval" / plot).stat().st_size > 1000
    text = report.read_text()
    assert "Headroom per lever, PSD" in text and "it cuts mean time in system against max-sinr-hysteresis" in text
