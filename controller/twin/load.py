"""Loads and layouts for comparing policies in the twin: how hard the edges are pushed, and which edges serve.

**Load** is offered work over batched capacity: the answer tokens the users ask for per second, over the tokens
per second the layout's edges emit when saturated (each edge full of blocks, m = min(capacity, S / (k + 1))
blocks per step of T(m, k), τ(α, k) tokens per block: the one edge model, tandem/edge_model.py).  A load of 0.6
sets every user's Poisson rate to 0.6 × capacity / (users × mean answer length).  The devices bound it too: a user
drafts k tokens per round at least, so ``device_capacity`` is reported beside it.

**A layout per edge count**: the scenario's edges whose subset of that size leaves the fewest user-slots without a
usable edge (spectral efficiency above 0 both ways) on the given traces, with that coverage reported, so that
fewer edges do not mean coverage holes by accident (dropping edges by position left 40% of user-slots without an
edge).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from controller.estimator import tokens_per_round
from controller.twin.scenario import Scenario, TwinEdge
from tandem.edge_model import EdgeTiming
from tandem.profiles import HardwareProfile
from tandem.trace_format import ChannelTrace


def mean_answer_tokens(scenario: Scenario) -> float:
    answer = scenario.answer_tokens
    return float(answer.value) if answer.kind == "fixed" else (answer.low + answer.high) / 2


def edge_capacity(edge: TwinEdge, profile: HardwareProfile, draft_length: int) -> float:
    """Tokens per second a saturated edge emits."""
    timing = EdgeTiming(profile.edge, edge.compute_scale, edge.step_tokens)
    blocks = max(1, min(edge.capacity, timing.step_tokens // (draft_length + 1)))
    tau = float(tokens_per_round(profile.acceptance.per_token, draft_length))
    return blocks * tau / float(timing.step_seconds(blocks, draft_length))


def batched_capacity(scenario: Scenario, profile: HardwareProfile) -> float:
    return sum(edge_capacity(edge, profile, scenario.draft_length) for edge in scenario.edges)


def device_capacity(scenario: Scenario, profile: HardwareProfile) -> float:
    """Tokens per second the users could emit if no edge ever made them wait (drafting alone bounds a round)."""
    k = scenario.draft_length
    tau = float(tokens_per_round(profile.acceptance.per_token, k))
    return len(scenario.user_ids()) * tau / (k * profile.device.draft_seconds_per_token)


def at_load(scenario: Scenario, profile: HardwareProfile, load: float) -> Scenario:
    """The scenario with every user's Poisson rate set for this offered load."""
    if not load > 0:
        raise ValueError(f"a load must be positive, got {load}")
    rate = load * batched_capacity(scenario, profile) / (len(scenario.user_ids()) * mean_answer_tokens(scenario))
    return scenario.model_copy(update={"arrivals": scenario.arrivals.model_copy(update={
        "kind": "poisson", "rate_per_user_s": rate})})


@dataclass(frozen=True)
class Layout:
    edges: tuple[int, ...]  # trace edge ids
    coverage: float  # share of user-slots with a usable edge, over the traces


def coverage(traces: list[ChannelTrace], users: list[int], edges: tuple[int, ...]) -> float:
    covered = [((trace.se[:, :, users][:, :, :, list(edges)] > 0).all(axis=0)).any(axis=2).mean() for trace in traces]
    return float(np.mean(covered))


def best_layouts(scenario: Scenario, traces: list[ChannelTrace], counts: list[int]) -> dict[int, Layout]:
    """For each edge count, the subset of the scenario's edges with the best coverage (ties: the first)."""
    ids = [edge.id for edge in scenario.edges]
    users = scenario.user_ids()
    layouts = {}
    for count in counts:
        if not 1 <= count <= len(ids):
            raise ValueError(f"{count} edges: the scenario has {len(ids)}")
        scored = [(coverage(traces, users, subset), subset) for subset in itertools.combinations(ids, count)]
        best = max(scored, key=lambda item: item[0])
        layouts[count] = Layout(best[1], best[0])
    return layouts


def with_layout(scenario: Scenario, layout: Layout) -> Scenario:
    by_id = {edge.id: edge for edge in scenario.edges}
    return scenario.model_copy(update={"edges": [by_id[edge] for edge in layout.edges]})
