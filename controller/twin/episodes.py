"""Training episodes: which game each episode of the multi-agent environments plays.

One scenario file fixes the hardware, the workload and the edges; every episode then draws, from its seed, one of
the training traces, a number of users (the first N of the trace), a number of edges (the first E of the
scenario), an offered load (when ``loads`` are given) and an energy weight, so that one policy (parameters
shared by every edge's agent) learns the whole evaluation grid.  The same seed always gives the same game.

Training plays episodes in batches (``batch``: ``batch_envs`` of them stepped at once by the batched twin,
batch_game.py): the episodes of a batch share their number of users and edges, and each draws its own trace, load,
energy weight and seed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.policies.draft_agent import CHOICES, OBSERVATION_BOUND, AgentSpec
from controller.twin.agents import DraftLengthGame, GameError, agent_id, check_slots
from controller.twin.batch import BatchTwin
from controller.twin.batch_game import BatchDraftGame
from controller.twin.load import at_load
from controller.twin.scenario import Scenario, load_scenario
from controller.twin.simulator import DigitalTwin
from tandem.profiles import HardwareProfile, load_profile
from tandem.trace_format import ChannelTrace, load_trace


class EpisodeConfig(BaseModel):
    """What the environments take (RLlib's ``env_config``, the PettingZoo constructor): plain data, so that Ray
    can ship it to remote workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scenario: Path
    traces: list[Path] = Field(default_factory=list, description="training traces (default: the scenario's)")
    users: tuple[int, int] | None = Field(None, description="users per episode, drawn in [low, high] (default: the "
                                          "scenario's)")
    edges: list[int] = Field(default_factory=list, description="edge counts to draw from (default: all edges)")
    energy_weights: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    loads: list[float] = Field(default_factory=list, description="offered loads to draw from (controller/twin/load.py; "
                               "default: the scenario's arrivals)")
    episode_slots: int | None = Field(None, ge=2, le=1 << 20, description="default: the scenario's duration")
    max_users: int = Field(24, ge=1, le=1024, description="user slots of each agent")
    gamma: float = Field(0.99, gt=0, le=1, description="discount of the returns (and of the reward's shaping)")
    batch_envs: int = Field(32, ge=1, le=4096, description="episodes the batched twin steps at once (training)")

    @field_validator("scenario")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.resolve()  # a Ray cluster's env runners do not start in the driver's working directory

    @field_validator("traces")
    @classmethod
    def _all_absolute(cls, paths: list[Path]) -> list[Path]:
        return [path.resolve() for path in paths]

    @model_validator(mode="after")
    def _ranges(self) -> "EpisodeConfig":
        if self.users is not None and not 1 <= self.users[0] <= self.users[1]:
            raise ValueError("users must be [low, high] with 1 <= low <= high")
        if any(e < 1 for e in self.edges):
            raise ValueError("edge counts must be at least 1")
        if any(not np.isfinite(w) or w < 0 for w in self.energy_weights):
            raise ValueError("energy weights must be finite and non-negative")
        if any(not 0 < load < 100 for load in self.loads):
            raise ValueError("loads must lie in (0, 100)")
        return self


class Episodes:
    """Makes the game of each episode; traces and the profile are read once."""

    def __init__(self, config: EpisodeConfig) -> None:
        self.config = config
        self.full_scenario: Scenario = load_scenario(config.scenario)  # its whole duration: validation plays it
        self.scenario = self.full_scenario  # what training episodes play
        if config.episode_slots is not None:
            self.scenario = self.scenario.model_copy(update={"duration_slots": config.episode_slots})
        self.profile: HardwareProfile = load_profile(self.scenario.profile)
        self.spec = AgentSpec(config.max_users)
        check_slots(self.spec, self.scenario)
        self.edge_counts = config.edges or [len(self.scenario.edges)]
        if max(self.edge_counts) > len(self.scenario.edges):
            raise GameError(f"edge counts {self.edge_counts}: the scenario has {len(self.scenario.edges)} edges")
        self.user_range = config.users or (len(self.scenario.user_ids()),) * 2
        for trace in self.traces:
            self._variant(self.user_range[1], max(self.edge_counts)).check_against(
                trace.metadata.num_users, trace.metadata.num_edges)
        self.scenario.check_grid(self.user_range[1], ([edge.id for edge in self.scenario.edges[:edges]]
                                                      for edges in self.edge_counts))

    @cached_property
    def traces(self) -> list[ChannelTrace]:
        return [load_trace(path) for path in (self.config.traces or [self.scenario.trace])]

    @property
    def agents(self) -> list[str]:
        """Every agent an episode may have (the most edges)."""
        return [agent_id(edge.id) for edge in self.scenario.edges[:max(self.edge_counts)]]

    def _variant(self, users: int, edges: int) -> Scenario:
        return self.scenario.model_copy(update={"users": users, "edges": self.scenario.edges[:edges]})

    def game(self, seed: int) -> DraftLengthGame:
        """The game of the episode with this seed (the caller resets it with the same seed)."""
        rng = np.random.default_rng(seed)
        trace = self.traces[int(rng.integers(len(self.traces)))]
        users = int(rng.integers(self.user_range[0], self.user_range[1] + 1))
        edges = int(rng.choice(self.edge_counts))
        weight = float(rng.choice(self.config.energy_weights))
        variant = self._variant(users, edges)
        if self.config.loads:
            variant = at_load(variant, self.profile, float(rng.choice(self.config.loads)))
        return DraftLengthGame(DigitalTwin(variant, trace, self.profile), self.spec, weight, self.config.gamma)

    def batch(self, seed: int) -> tuple[BatchDraftGame, list[int]]:
        """The batch of ``batch_envs`` episodes with this seed, and each episode's seed (the caller resets the game
        with them)."""
        rng = np.random.default_rng(seed)
        size = self.config.batch_envs
        users = int(rng.integers(self.user_range[0], self.user_range[1] + 1))
        variant = self._variant(users, int(rng.choice(self.edge_counts)))
        traces = [self.traces[int(index)] for index in rng.integers(len(self.traces), size=size)]
        weights = rng.choice(self.config.energy_weights, size)
        scenarios = ([at_load(variant, self.profile, float(load)) for load in rng.choice(self.config.loads, size)]
                     if self.config.loads else [variant] * size)
        game = BatchDraftGame(BatchTwin(scenarios, traces, self.profile), self.spec, weights, self.config.gamma)
        return game, [int(value) for value in rng.integers(1 << 31, size=size)]

    def batch_agents(self) -> list[str]:
        """The agents of every batch: each episode's edges, the most edges (those a batch lacks act on nothing)."""
        return [batch_agent_id(agent, index) for index in range(self.config.batch_envs) for agent in self.agents]

    def begin(self, seeds: np.random.Generator) -> tuple[DraftLengthGame, dict[str, np.ndarray]]:
        """A new episode, its seed drawn from ``seeds``: the game, reset, and its first observations."""
        episode_seed = int(seeds.integers(1 << 31))
        game = self.game(episode_seed)
        return game, game.reset(episode_seed)


def batch_agent_id(agent: str, episode: int) -> str:
    """An edge's agent in one episode of a batch."""
    return f"{agent}/{episode}"


def spaces(spec: AgentSpec):
    """(observation space, action space) of every agent: a Box, and a choice per member slot."""
    from gymnasium.spaces import Box, MultiDiscrete

    return (Box(-OBSERVATION_BOUND, OBSERVATION_BOUND, (spec.observation_size,), np.float32),
            MultiDiscrete([CHOICES] * spec.max_users))
