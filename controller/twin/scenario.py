"""A digital-twin scenario: which trace, which users and edges, what they ask for, on which hardware.

    name: umi-3x12
    trace: ../traces/umi.npz            # paths relative to this file
    profile: ../profiles/phone-1b-gpu-8b.yaml
    users: 12                           # the first N users of the trace (or a list of indices)
    edges: [{id: 0, capacity: 8}, {id: 1}, {id: 2, compute_scale: 2.0, step_tokens: 32}]
    duration_slots: 600
    arrivals: {kind: poisson, rate_per_user_s: 0.05, until_s: 50}   # or {kind: once, at_s: 0}
    prompt_tokens: {kind: uniform, low: 64, high: 256}    # or {kind: fixed, value: 128}
    answer_tokens: {kind: uniform, low: 64, high: 256}
    draft_length: 4
    mode: psd                           # or sd
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.share_floor import DEFAULT_SHARE_FLOOR
from tandem.config_files import load_model_file
from tandem.edge_model import DEFAULT_STEP_TOKENS


class ScenarioError(ValueError):
    """A scenario that cannot be used, with the reason."""


class TokenCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fixed", "uniform"]
    value: int | None = Field(None, ge=1, le=1 << 20)
    low: int | None = Field(None, ge=1, le=1 << 20)
    high: int | None = Field(None, ge=1, le=1 << 20)

    @model_validator(mode="after")
    def _complete(self) -> "TokenCount":
        if self.kind == "fixed" and self.value is None:
            raise ValueError("a fixed count needs `value`")
        if self.kind == "uniform" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("a uniform count needs `low` <= `high`")
        return self

    def sample(self, rng: np.random.Generator) -> int:
        return self.value if self.kind == "fixed" else int(rng.integers(self.low, self.high + 1))


class Arrivals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["poisson", "once"]
    rate_per_user_s: float = Field(0.05, gt=0, le=1000, allow_inf_nan=False, description="poisson: requests per "
                                   "second per user")
    at_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="once: when every user sends its request")
    until_s: float | None = Field(None, gt=0, allow_inf_nan=False, description="poisson: no arrivals after this "
                                  "time, so that the requests in the system drain before the end")


class TwinEdge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(ge=0, description="the edge's index in the trace")
    capacity: int = Field(16, ge=1, description="most users it may serve at once")
    compute_scale: float = Field(1.0, gt=0, le=1000, allow_inf_nan=False, description="this edge's compute "
                                 "relative to the profile's edge (2 = twice as fast)")
    step_tokens: int = Field(DEFAULT_STEP_TOKENS, ge=1, le=1 << 16, description="tokens one engine step may batch "
                             "(the edge's --step-tokens)")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    trace: Path
    profile: Path
    users: int | list[int]
    edges: list[TwinEdge] = Field(min_length=1)
    duration_slots: int = Field(ge=1, le=1 << 20)
    arrivals: Arrivals
    prompt_tokens: TokenCount
    answer_tokens: TokenCount
    draft_length: int = Field(4, ge=1, le=64, description="the draft length devices ask for")
    max_draft_length: int | None = Field(None, ge=1, le=64, description="the longest block devices draft when a "
                                         "policy sets their draft length (default: draft_length)")
    mode: Literal["psd", "sd"] = "psd"
    rtt_s: float = Field(0.01, ge=0, le=10, allow_inf_nan=False, description="base round trip behind the radio")
    bytes_per_prompt_token: float = Field(2.0, gt=0, le=16, allow_inf_nan=False, description="packed varint ids")
    share_floor: float = Field(DEFAULT_SHARE_FLOOR, ge=0, le=1, allow_inf_nan=False, description="every member of "
                               "an edge with a request keeps at least share_floor / such members of it, as the "
                               "controller enforces for users with an open session")

    @model_validator(mode="after")
    def _unique(self) -> "Scenario":
        ids = [edge.id for edge in self.edges]
        if len(set(ids)) != len(ids):
            raise ValueError("an edge id is listed twice")
        if isinstance(self.users, list) and len(set(self.users)) != len(self.users):
            raise ValueError("a user is listed twice")
        if isinstance(self.users, int) and self.users < 1:
            raise ValueError("users must be at least 1")
        if self.max_draft_length is not None and self.max_draft_length < self.draft_length:
            raise ValueError("max_draft_length must be at least draft_length")
        return self

    @property
    def longest_draft(self) -> int:
        return self.max_draft_length or self.draft_length

    def user_ids(self) -> list[int]:
        return list(range(self.users)) if isinstance(self.users, int) else list(self.users)

    def check_against(self, num_users: int, num_edges: int) -> None:
        """The trace bounds the indices; ScenarioError naming the first out of range."""
        for user in self.user_ids():
            if not 0 <= user < num_users:
                raise ScenarioError(f"scenario {self.name}: user {user} is not in the trace ({num_users} users)")
        for edge in self.edges:
            if edge.id >= num_edges:
                raise ScenarioError(f"scenario {self.name}: edge {edge.id} is not in the trace ({num_edges} edges)")

    def check_grid(self, users: int, layouts: Iterable[Sequence[int]]) -> None:
        """A grid (training episodes, evaluation cells) plays up to ``users`` users on each layout, ids of this
        scenario's edges: ScenarioError naming the first whose capacity they do not fit."""
        capacity_of = {edge.id: edge.capacity for edge in self.edges}
        for layout in layouts:
            capacity = sum(capacity_of[edge] for edge in layout)
            if capacity < users:
                raise ScenarioError(f"scenario {self.name}: {users} users do not fit the capacity ({capacity}) of "
                                    f"edges {', '.join(map(str, layout))}")


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario; relative trace and profile paths are taken from the file's folder."""
    path = Path(path)
    scenario = load_model_file(Scenario, path, "scenario", ScenarioError)
    return scenario.model_copy(update={"trace": path.parent / scenario.trace,
                                       "profile": path.parent / scenario.profile})
