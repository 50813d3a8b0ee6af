"""The allocation game as a PettingZoo ``ParallelEnv``, for multi-agent RL libraries other than RLlib: the same
agents (``edge-<id>``), episodes, observations, actions and rewards as ``rllib_env.TwinMultiAgentEnv``."""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from controller.twin.episodes import EpisodeConfig, Episodes, spaces


class TwinParallelEnv(ParallelEnv):
    metadata = {"name": "tandem_twin_v1", "render_modes": []}

    def __init__(self, config: EpisodeConfig | dict, seed: int = 0) -> None:
        self.episodes = Episodes(config if isinstance(config, EpisodeConfig) else EpisodeConfig.model_validate(config))
        self._observation_space, self._action_space = spaces(self.episodes.spec)
        self.possible_agents = self.episodes.agents
        self.agents: list[str] = []
        self._seeds = np.random.default_rng(seed)
        self.game = None

    def observation_space(self, agent: str):
        return self._observation_space

    def action_space(self, agent: str):
        return self._action_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        self.game, observations = self.episodes.begin(self._seeds)
        self.agents = list(self.game.agents)
        return observations, {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        observations, rewards, terminated, truncated, infos = self.game.step(actions)
        terminated.pop("__all__")
        truncated.pop("__all__")
        if any(terminated.values()) or any(truncated.values()):
            self.agents = []
        return observations, rewards, terminated, truncated, infos
