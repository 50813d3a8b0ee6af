"""The draft-length game as an RLlib ``MultiAgentEnv``: a batch of episodes stepped at once by the batched twin
(``Episodes.batch``; controller/twin/batch_game.py), one agent per edge per episode (``edge-<id>/<episode>``, all
mapped to one module), observations and actions as ``controller/policies/draft_agent.py`` documents them.  One
RLlib environment step is ``batch_envs`` twin slots.  ``env_config`` is an ``EpisodeConfig`` as a dict, plus
``seed`` (each env runner's batch seeds follow from it and the runner's index).

Every agent acts at every step, whatever number of edges a batch drew: the agents of the edges a batch does not
have see an empty edge (zero observation: no members, so no choice is sampled from them — the module pins empty
slots to "no change") and get 0.  So each step has the same agents (RLlib's per-agent step counters, which a
missing agent turns into NaN, stay whole) and its twin slots are exactly ``batch_envs``."""

from __future__ import annotations

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from controller.twin.agents import GameError
from controller.twin.episodes import EpisodeConfig, Episodes, spaces


class TwinMultiAgentEnv(MultiAgentEnv):
    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        base_seed = int(config.pop("seed", 0))
        worker = (getattr(config, "worker_index", 0), getattr(config, "vector_index", 0))
        self.episodes = Episodes(EpisodeConfig.model_validate(config))
        observation_space, action_space = spaces(self.episodes.spec)
        self.possible_agents = self.episodes.batch_agents()
        self.agents = list(self.possible_agents)
        self.observation_spaces = {agent: observation_space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}
        self._seeds = np.random.default_rng([base_seed, *worker])
        self.game = None

    def _named(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """[episodes, edges of the batch, ...] as a dict over every agent (an absent edge's: zeros)."""
        padded = np.zeros((values.shape[0], len(self.episodes.agents), *values.shape[2:]), dtype=values.dtype)
        padded[:, :values.shape[1]] = values
        return dict(zip(self.agents, padded.reshape(-1, *values.shape[2:])))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        self.game, seeds = self.episodes.batch(int(self._seeds.integers(1 << 31)))
        self.agents = list(self.possible_agents)
        return self._named(self.game.reset(seeds)), {agent: {} for agent in self.agents}

    def step(self, action_dict: dict[str, np.ndarray]):
        missing = [agent for agent in self.agents if agent not in action_dict]
        if missing:
            raise GameError(f"no action for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        twin, size = self.game.twin, self.episodes.spec.max_users
        try:
            choices = np.stack([np.asarray(action_dict[agent]).reshape(size) for agent in self.agents])
        except ValueError as error:
            raise GameError(f"actions must be {size} choices per agent: {error}") from None
        choices = choices.reshape(twin.envs, len(self.episodes.agents), size)[:, :twin.edges]
        observations, rewards, over = self.game.step(choices)
        named = self._named(observations)
        rewards = {agent: float(value) for agent, value in self._named(rewards).items()}
        # The last observation is a real one even when the episodes are cut at their horizon: PPO bootstraps the
        # truncated return from its value.
        terminated = {agent: False for agent in self.agents} | {"__all__": False}
        truncated = {agent: over for agent in self.agents} | {"__all__": over}
        if over:
            self.agents = []
        return named, rewards, terminated, truncated, {}
