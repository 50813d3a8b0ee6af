"""Twin scenarios and edge timings for tests, built on the shipped phone/GPU profile."""

from __future__ import annotations

from pathlib import Path

import yaml

from tandem.edge_model import DEFAULT_STEP_TOKENS, EdgeTiming
from tandem.profiles import SHIPPED_PROFILE, load_profile

GPU_EDGE = load_profile(SHIPPED_PROFILE).edge  # the paper's edge: an 8B target on an H100, 7.25 ms per k=4 block


def edge_timing(compute_scale: float = 1.0, step_tokens: int = DEFAULT_STEP_TOKENS) -> EdgeTiming:
    """An edge of the shipped profile at this share of its GPU, for observations built by hand."""
    return EdgeTiming(GPU_EDGE, compute_scale, step_tokens)


def write_twin_scenario(folder: Path, trace: Path, users: int = 4, capacity: int = 4, slots: int = 60) -> Path:
    """A scenario on ``trace`` with the shipped phone/GPU profile, 3 edges and a busy Poisson workload."""
    path = folder / f"scenario-{users}-{capacity}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "test", "trace": str(trace), "profile": str(SHIPPED_PROFILE),
        "users": users, "edges": [{"id": e, "capacity": capacity, "compute_scale": 0.1} for e in range(3)],
        "duration_slots": slots, "arrivals": {"kind": "poisson", "rate_per_user_s": 0.5},
        "prompt_tokens": {"kind": "uniform", "low": 32, "high": 128},
        "answer_tokens": {"kind": "uniform", "low": 16, "high": 64}}))
    return path


def controller_config(**overrides):
    """A controller topology of two edges that do not answer (127.0.0.1:9) and two users, with ``overrides``."""
    from controller.config import ControllerConfig

    return ControllerConfig.model_validate({
        "edges": [{"id": 0, "address": "127.0.0.1:9"}, {"id": 2, "address": "127.0.0.1:9", "compute_scale": 0.5}],
        "users": [{"id": 0}, {"id": 5, "draft_length": 6}], "failover_after_s": 2.0, **overrides})
