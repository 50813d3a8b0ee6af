"""The batched twin and game (controller/twin/batch.py, batch_game.py) play the scalar twin's and game's model:
observation for observation, reward for reward and request for request when nothing is random (every drafted token
accepted, or none), on oversubscribed edges with migrations and outages; the same mean time in system otherwise;
and bad batches are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from controller.policies.draft_agent import AgentSpec
from harness.scenarios import write_twin_scenario


def small_world(umi_trace, tmp_path, alpha: float, slots: int = 150):
    """The test trace's 4 users on 3 slow edges whose step budget (6 tokens) their blocks overflow, drafting up to
    8 tokens, at acceptance ``alpha``."""
    from controller.twin.scenario import load_scenario
    from tandem.profiles import load_profile
    from tandem.trace_format import load_trace

    scenario = load_scenario(write_twin_scenario(tmp_path, umi_trace, slots=slots))
    scenario = scenario.model_copy(update={"max_draft_length": 8, "edges": [
        edge.model_copy(update={"step_tokens": 6}) for edge in scenario.edges]})
    profile = load_profile(scenario.profile)
    profile = profile.model_copy(update={"acceptance": profile.acceptance.model_copy(update={"per_token": alpha})})
    return scenario, load_trace(umi_trace), profile


def scalar_and_batch(scenario, trace, profile, seeds, weights, max_users=4):
    from controller.twin.agents import DraftLengthGame
    from controller.twin.batch import BatchTwin, requests_of
    from controller.twin.batch_game import BatchDraftGame
    from controller.twin.simulator import DigitalTwin

    spec = AgentSpec(max_users)
    games = [DraftLengthGame(DigitalTwin(scenario, trace, profile), spec, weight) for weight in weights]
    first = [game.reset(seed) for game, seed in zip(games, seeds)]
    batch = BatchDraftGame(BatchTwin([scenario] * len(seeds), [trace] * len(seeds), profile), spec, weights)
    # The very requests the scalar twins drew (the batched twin draws its own otherwise).
    requests = requests_of([game.twin.requests_by_slot for game in games], scenario.user_ids(), trace.slot_s)
    return games, first, batch, batch.reset(list(seeds), requests)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_without_randomness_the_batch_plays_exactly_what_the_scalar_game_plays(umi_trace, tmp_path, alpha):
    scenario, trace, profile = small_world(umi_trace, tmp_path, alpha)
    games, observed, batch, batch_observed = scalar_and_batch(scenario, trace, profile, (1, 2, 3), [0.0, 0.5, 0.0])
    rng = np.random.default_rng(4)
    over = False
    while not over:
        for index, game in enumerate(games):
            assert np.array_equal(np.stack([observed[index][agent] for agent in game.agents]),
                                  batch_observed[index])
        choices = rng.integers(0, 5, (len(games), len(games[0].agents), 4))
        played = [game.step(dict(zip(game.agents, choices[index]))) for index, game in enumerate(games)]
        batch_observed, rewards, over = batch.step(choices)
        observed = [step[0] for step in played]
        for index, (game, step) in enumerate(zip(games, played)):
            assert np.allclose([step[1][agent] for agent in game.agents], rewards[index], atol=1e-9)
            assert step[3]["__all__"] == over
    scalar = [game.twin.outcome() for game in games]
    assert np.allclose([run.mean_time_in_system() for run in scalar], batch.twin.time_in_system())
    requests = batch.twin.requests
    for index, run in enumerate(scalar):
        mine = requests.env == index
        assert run.completed and len(run.completed) == np.isfinite(requests.finished[mine]).sum()
        assert sorted(r.finished for r in run.completed) == pytest.approx(np.sort(
            requests.finished[mine][np.isfinite(requests.finished[mine])]))
        assert sum(r.migrations for r in run.completed + run.unfinished) == requests.migrations[mine].sum()
        assert sum(r.energy_j for r in run.completed + run.unfinished) == pytest.approx(requests.energy_j[mine].sum())
    assert requests.migrations.sum() > 0  # the handover moved sessions


def test_with_acceptance_draws_the_batch_gives_the_scalar_twins_mean_time_in_system(umi_trace, tmp_path):
    """α = 0.7: the two draw acceptance differently; over 24 paired episodes (the same requests) under the
    heuristic their mean time in system agrees within the noise."""
    from controller.policies.draft_agent import SHIFT

    scenario, trace, profile = small_world(umi_trace, tmp_path, 0.7, slots=120)
    seeds = tuple(range(10, 34))
    games, _, batch, _ = scalar_and_batch(scenario, trace, profile, seeds, [0.0] * len(seeds))
    keep = np.full((len(seeds), len(games[0].agents), 4), SHIFT)
    over = False
    while not over:
        for index, game in enumerate(games):
            game.step(dict(zip(game.agents, keep[index])))
        _, _, over = batch.step(keep)
    scalar = np.array([game.twin.outcome().mean_time_in_system() for game in games])
    difference = batch.twin.time_in_system() - scalar
    noise = difference.std(ddof=1) / np.sqrt(len(seeds))
    assert abs(difference.mean()) < max(3 * noise, 0.02 * scalar.mean()), (difference.mean(), noise, scalar.mean())


def test_batches_draw_their_episodes_and_refuse_what_does_not_fit(umi_trace, tmp_path):
    from controller.twin.batch import BatchTwin, draw_requests
    from controller.twin.episodes import EpisodeConfig, Episodes
    from controller.twin.scenario import ScenarioError

    scenario, trace, profile = small_world(umi_trace, tmp_path, 0.7)
    config = EpisodeConfig(scenario=write_twin_scenario(tmp_path, umi_trace, slots=100), users=(2, 4),
                           edges=[2, 3], loads=[0.2, 0.8], batch_envs=16)
    episodes = Episodes(config)
    game, seeds = episodes.batch(5)
    again, same = episodes.batch(5)
    assert seeds == same and len(set(seeds)) == 16
    assert {s.model_dump_json() for s in game.twin.scenarios} == {s.model_dump_json() for s in again.twin.scenarios}
    rates = sorted({s.arrivals.rate_per_user_s for s in game.twin.scenarios})
    assert len(rates) == 2 and rates[1] == pytest.approx(4 * rates[0])  # each episode its own load
    observations = game.reset(seeds)
    assert observations.shape == (16, game.twin.edges, episodes.spec.observation_size)
    drawn = draw_requests(game.twin.scenarios, game.twin.users, trace.slot_s, seeds)
    per_episode = np.bincount(drawn.env, minlength=16)
    by_rate = {rate: per_episode[[s.arrivals.rate_per_user_s == rate for s in game.twin.scenarios]].mean()
               for rate in rates}
    assert by_rate[rates[1]] > 2 * by_rate[rates[0]]
    other = scenario.model_copy(update={"draft_length": 2})
    with pytest.raises(ScenarioError, match="differ in their arrivals only"):
        BatchTwin([scenario, other], [trace, trace], profile)
    with pytest.raises(ValueError, match="2 seeds are needed"):
        BatchTwin([scenario, scenario], [trace, trace], profile).reset([1])


def test_the_rllib_environment_refuses_missing_or_misshapen_actions(umi_trace, tmp_path):
    from controller.twin.agents import GameError
    from controller.twin.rllib_env import TwinMultiAgentEnv

    env = TwinMultiAgentEnv({"scenario": str(write_twin_scenario(tmp_path, umi_trace, slots=20)), "max_users": 4,
                             "batch_envs": 3, "seed": 1})
    observations, _ = env.reset()
    assert len(observations) == 3 * 3 and "edge-2/2" in observations
    with pytest.raises(GameError, match="no action for"):
        env.step({agent: np.zeros(4, dtype=int) for agent in list(observations)[1:]})
    with pytest.raises(GameError, match="4 choices per agent"):
        env.step({agent: np.zeros(3, dtype=int) for agent in observations})
    steps, over = 0, False
    while not over:
        _, rewards, _, truncated, _ = env.step({agent: np.full(4, 2) for agent in env.agents})
        over, steps = truncated["__all__"], steps + 1
        assert all(np.isfinite(value) for value in rewards.values())
    assert steps == 20 and env.agents == []
    # Batches of 2 or 3 edges: every agent acts at every step; an absent edge's agent sees nothing and gets 0.
    env = TwinMultiAgentEnv({"scenario": str(write_twin_scenario(tmp_path, umi_trace, slots=5)), "max_users": 4,
                             "batch_envs": 2, "edges": [2, 3], "seed": 2})
    drawn = set()
    for _ in range(8):
        observations, _ = env.reset()
        assert set(observations) == set(env.possible_agents) and len(observations) == 2 * 3
        drawn.add(env.game.twin.edges)
        _, rewards, *_ = env.step({agent: np.full(4, 4) for agent in env.agents})
        if env.game.twin.edges == 2:
            assert not observations["edge-2/0"].any() and rewards["edge-2/1"] == 0.0
    assert drawn == {2, 3}
