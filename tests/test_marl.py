"""The multi-agent side of the twin: the environments pass RLlib's and PettingZoo's checks, the agent encoding maps
any action to valid shares (a zero action to the closed-form prior), migration has a cost the association sees,
a short MASAC training run produces a policy that decides valid slots, and bad checkpoints or scenarios are
refused with a clear error.  (The trained policy inside the controller daemon: tests/test_control_plane.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from controller.estimator import EdgeState, UserState, pair_costs
from controller.policies.base import Observation
from controller.policies.edge_agent import AgentSpec, decode, encode
from controller.policies.tma import TmaEqual, sequential_shares
from tests.conftest import edge_timing, run_tandem, write_twin_scenario


def observation(users: int = 6, edges: int = 2, seed: int = 0, **user_fields) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(0, tuple(EdgeState(e, 1e6, edge_timing(0.1 * (1.0 + e)), 8) for e in range(edges)), tuple(
        UserState(u, se_up=tuple(rng.uniform(0.5, 5, edges)), se_down=tuple(rng.uniform(0.5, 5, edges)),
                  draft_s_per_token=0.02, acceptance=0.7, draft_length=4, pending_tokens=int(rng.integers(1, 300)),
                  rtt_s=0.01, **user_fields)
        for u in range(users)))


def test_a_zero_action_is_the_closed_form_prior_and_any_action_gives_valid_shares():
    spec = AgentSpec(8)
    obs = observation()
    association, costs = TmaEqual().associate(obs)
    zero = decode(obs, association, costs, {e: np.zeros(spec.action_size) for e in range(2)}, spec)
    for position in range(2):
        members = np.flatnonzero(association == position)
        prior_b, _ = sequential_shares(costs, members, position)
        by_user = {a.user: a for a in zero.allocations}
        assert sorted(by_user[obs.users[m].user].bandwidth_share for m in members) == pytest.approx(sorted(prior_b))
    rng = np.random.default_rng(1)
    for trial in range(50):
        actions = {e: rng.uniform(-5, 5, spec.action_size) for e in range(2)}
        actions[0][trial % spec.action_size] = np.nan  # clipped and cleaned, never propagated
        decision = decode(obs, association, costs, actions, spec)
        decision.check(obs)  # the one share rule: non-negative, per-edge sums <= 1
        assert all(a.bandwidth_share > 0 and a.compute_share > 0 for a in decision.allocations)
    features = encode(obs, association, costs, 0, spec, energy_weight=0.5)
    assert features.shape == (spec.observation_size,) and np.isfinite(features).all() and features[2] == 0.5
    with pytest.raises(ValueError, match="an action of 16 numbers"):
        decode(obs, association, costs, {0: np.zeros(3), 1: np.zeros(3)}, spec)
    with pytest.raises(ValueError, match="trained for at most 2"):
        decode(obs, association, costs, {}, AgentSpec(2))


def test_the_association_keeps_a_request_where_its_context_is_unless_moving_pays():
    def one_user(context: int, edge: int | None) -> int:
        obs = Observation(0, (EdgeState(0, 1e6, edge_timing(1.0), 4), EdgeState(1, 1e6, edge_timing(1.05), 4)), (
            UserState(0, se_up=(2.0, 2.0), se_down=(2.0, 2.0), draft_s_per_token=0.001, acceptance=0.7,
                      draft_length=4, pending_tokens=100, edge=edge, context_tokens=context),))
        return int(TmaEqual().associate(obs)[0][0])

    assert one_user(context=0, edge=None) == 1  # the faster edge, when nothing is anywhere yet
    assert one_user(context=2000, edge=0) == 0  # rebuilding 2000 tokens there costs more than edge 1 saves
    assert one_user(context=1, edge=0) == 1  # a tiny context: moving pays
    costs = pair_costs(list(observation(edge=1, context_tokens=500).users),
                       [EdgeState(0, 1e6, edge_timing(1.0), 8), EdgeState(1, 1e6, edge_timing(2.0), 8)])
    assert (costs.move[:, 1] == 0).all() and (costs.move[:, 0] > 0).all()


@pytest.fixture(scope="module")
def episode_config(umi_trace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("marl")
    return {"scenario": str(write_twin_scenario(folder, umi_trace, slots=30)), "users": (2, 4), "edges": [2, 3],
            "energy_weights": [0.0, 0.5], "max_users": 4}


def test_the_rllib_environment_passes_rllib_checks(episode_config):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from controller.twin.rllib_env import TwinMultiAgentEnv

    env = TwinMultiAgentEnv(episode_config | {"seed": 3})
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
    with pytest.raises(GameError, match="do not fit the capacity"):
        Episodes(EpisodeConfig.model_validate(episode_config | {"scenario": str(small)}))
    with pytest.raises(ValidationError):
        EpisodeConfig.model_validate(episode_config | {"energy_weights": [float("nan")]})


def test_a_short_training_run_gives_a_policy_that_decides_valid_slots(trained_policy, umi_trace):
    from controller.policies import make_policy
    from controller.twin.scenario import load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import load_profile
    from tandem.traces.format import load_trace

    run = trained_policy.parent
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and "validation_latency_s" in rows[-1] and "qf_loss" in rows[-1]
    assert list((run / "tensorboard").iterdir()) and (run / "checkpoint" / "rllib_checkpoint.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["env_steps"] >= 600
    policy = make_policy("tma-masac", checkpoint=trained_policy.name, policy_dir=trained_policy.parent)
    scenario = load_scenario(write_twin_scenario(run, umi_trace))
    twin = DigitalTwin(scenario, load_trace(umi_trace), load_profile(scenario.profile), seed=5)
    while not twin.finished:
        obs = twin.observation()
        decision = policy.decide(obs)
        decision.check(obs)
        twin.step(decision)
    assert twin.summary().completed > 0


def test_the_exported_actor_computes_what_rllib_computes(trained_policy):
    """The checkpoint the controller loads (JSON + safetensors, Tandem's numpy MLP) gives the actions RLlib's own
    module gives: ``export_actor`` reads the SAC actor layer for layer.  (RLlib's checkpoint of this test's own
    run is read here as the reference; the controller never reads one.)"""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from controller.policies.masac import MODULE_ID, LearnedShares

    run = trained_policy.parent  # 3 iterations, evaluated at the 3rd: "best" is the latest checkpoint's actor
    module = RLModule.from_checkpoint(str(run / "checkpoint" / "learner_group" / "learner" / "rl_module" / MODULE_ID))
    actor = LearnedShares.from_folder(trained_policy)
    observations = np.random.default_rng(1).normal(size=(5, actor.spec.observation_size)).astype(np.float32)
    with torch.no_grad():
        output = module.forward_inference({"obs": torch.from_numpy(observations)})
    mean, _ = output["action_dist_inputs"].chunk(2, dim=-1)
    assert np.allclose(actor(observations), torch.tanh(mean).numpy(), atol=1e-5)


def test_a_corrupted_checkpoint_or_a_scenario_beyond_the_policy_is_refused(trained_policy, umi_trace, tmp_path):
    from controller.policies.masac import CheckpointError, TmaMasac

    corrupted = tmp_path / "corrupted"
    shutil.copytree(trained_policy, corrupted)
    (corrupted / "actor.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        TmaMasac(checkpoint="corrupted", policy_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a tma-masac policy folder"):
        TmaMasac(checkpoint="empty", policy_dir=tmp_path)
    (corrupted / "tandem-policy.json").write_text(json.dumps({"format": "tandem-policy", "encoding_version": 0,
                                                              "max_users": 4}))
    with pytest.raises(CheckpointError, match="encoding 0"):
        TmaMasac(checkpoint="corrupted", policy_dir=tmp_path)
    big = write_twin_scenario(tmp_path, umi_trace, users=4, capacity=9)  # 9 users per edge, trained for 4
    done = run_tandem("evaluate", "--scenario", str(big), "--trace", str(umi_trace), "--users", "4", "--edges", "3",
                      "--checkpoint", str(trained_policy), "--quiet", "--out", str(tmp_path / "eval"))
    assert done.returncode == 2 and "trained for at most 4 per edge" in done.stderr
    with pytest.raises(ValueError, match="trained for at most 4"):
        TmaMasac(checkpoint=trained_policy.name, policy_dir=trained_policy.parent).decide(
            observation(users=12, edges=1))
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
                      "--jobs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "evaluate.json").read_text())
    assert len(result["cells"]) == 2 * 1 * 2 * 2  # users x edges x modes x energy weights
    cell = result["cells"][0]
    assert set(cell["policies"]) == {"tma-masac", "oracle-lookahead", "tma-equal:draft_lengths=tuned", "tma-opt",
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
