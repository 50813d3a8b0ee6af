"""The allocation game as an RLlib ``MultiAgentEnv``: one agent per edge server (``edge-<id>``), the episode's game
from ``Episodes`` (traces, users, edges and energy weight drawn per episode), observations and actions as
``controller/policies/draft_agent.py`` documents them.  ``env_config`` is an ``EpisodeConfig`` as a dict, plus
``seed`` (the episode seeds of each env runner follow from it and the runner's index)."""

from __future__ import annotations

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from controller.twin.episodes import EpisodeConfig, Episodes, spaces


class TwinMultiAgentEnv(MultiAgentEnv):
    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        base_seed = int(config.pop("seed", 0))
        worker = (getattr(config, "worker_index", 0), getattr(config, "vector_index", 0))
        self.episodes = Episodes(EpisodeConfig.model_validate(config))
        observation_space, action_space = spaces(self.episodes.spec)
        self.possible_agents = self.episodes.agents
        self.agents = list(self.possible_agents)
        self.observation_spaces = {agent: observation_space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}
        self._seeds = np.random.default_rng([base_seed, *worker])
        self.game = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        self.game, observations = self.episodes.begin(self._seeds)
        self.agents = list(self.game.agents)
        return observations, {agent: {} for agent in observations}

    def step(self, action_dict: dict[str, np.ndarray]):
        observations, rewards, terminated, truncated, infos = self.game.step(action_dict)
        if truncated["__all__"] or terminated["__all__"]:
            self.agents = []
        return observations, rewards, terminated, truncated, infos
