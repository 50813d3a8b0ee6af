"""Hardware profiles: how fast a device drafts and an edge verifies, what it costs in energy, how often drafts are
accepted.  One versioned, validated YAML schema shared by the digital twin (controller/twin/), the controller's
assumptions and the testbed's pacing; every number says where it comes from (``sources``).

    schema_version: 1
    name: phone-1b-gpu-8b
    device:   {draft_model, draft_seconds_per_token, prefill_seconds_per_token, draft_power_w, transmit_power_w}
    edge:     {target_model, verify_base_seconds, verify_seconds_per_token, prefill_seconds_per_token,
               batch_scaling: [{blocks: 1, relative_time: 1.0}, {blocks: 8, relative_time: 1.3}, ...]}
    acceptance: {per_token: 0.7, by_draft_length: {4: 2.4}}       # α, and measured accepted tokens per block
    sources:  [...]

A block of k drafted tokens is verified by one forward pass over k + 1 positions: ``verify_base_seconds +
verify_seconds_per_token * (k + 1)`` at batch 1; a step verifying n blocks together takes ``relative_time(n)``
times a single block's time (linear interpolation between the listed points, linear extrapolation past the last).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tandem.config_files import load_model_file

SCHEMA_VERSION = 1
SHIPPED_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "phone-1b-gpu-8b.yaml"  # the paper's hardware


class ProfileError(ValueError):
    """A profile file that cannot be used, with the reason."""


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    draft_model: str = Field(min_length=1)
    draft_seconds_per_token: float = Field(gt=0, le=60, allow_inf_nan=False, description="batch-1 decode step")
    prefill_seconds_per_token: float = Field(0.0, ge=0, le=60, allow_inf_nan=False)
    draft_power_w: float = Field(ge=0, le=1000, allow_inf_nan=False, description="power drawn while drafting")
    transmit_power_w: float = Field(ge=0, le=100, allow_inf_nan=False, description="radio power while sending")


class BatchPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    blocks: int = Field(ge=1)
    relative_time: float = Field(gt=0, allow_inf_nan=False)


class EdgeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    target_model: str = Field(min_length=1)
    verify_base_seconds: float = Field(ge=0, le=60, allow_inf_nan=False)
    verify_seconds_per_token: float = Field(ge=0, le=60, allow_inf_nan=False)
    prefill_seconds_per_token: float = Field(ge=0, le=60, allow_inf_nan=False)
    batch_scaling: tuple[BatchPoint, ...] = (BatchPoint(blocks=1, relative_time=1.0),)

    @field_validator("batch_scaling")
    @classmethod
    def _curve(cls, points: tuple[BatchPoint, ...]) -> tuple[BatchPoint, ...]:
        if not points or points[0].blocks != 1 or abs(points[0].relative_time - 1.0) > 1e-9:
            raise ValueError("batch_scaling must start at {blocks: 1, relative_time: 1.0}")
        for before, after in zip(points, points[1:]):
            if after.blocks <= before.blocks or after.relative_time < before.relative_time:
                raise ValueError("batch_scaling must have increasing blocks and non-decreasing times")
        return points

    @model_validator(mode="after")
    def _positive(self) -> "EdgeProfile":
        if self.verify_base_seconds + self.verify_seconds_per_token <= 0:
            raise ValueError("verifying a block must take some time")
        return self

    def block_seconds(self, draft_length: float | np.ndarray) -> float | np.ndarray:
        """One block of ``draft_length`` tokens verified alone (a forward pass over k + 1 positions); element-wise
        for an array of lengths."""
        return self.verify_base_seconds + self.verify_seconds_per_token * (draft_length + 1)

    def relative_time(self, blocks: float | np.ndarray) -> float | np.ndarray:
        """How much longer a step of ``blocks`` blocks takes than a step of one: linear interpolation between the
        measured points, linear extrapolation past the last (element-wise for an array; a fractional count is an
        average step)."""
        count = np.maximum(np.asarray(blocks, dtype=float), 1.0)
        points = self.batch_scaling
        if len(points) == 1:
            times = count  # no batching measured: n blocks take n times as long
        else:
            xs = np.array([p.blocks for p in points], dtype=float)
            ys = np.array([p.relative_time for p in points], dtype=float)
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            times = np.where(count <= xs[-1], np.interp(count, xs, ys), ys[-1] + slope * (count - xs[-1]))
        return float(times) if np.ndim(times) == 0 else times


class AcceptanceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_token: float = Field(ge=0, le=1, allow_inf_nan=False, description="α: each drafted token is accepted with "
                             "this probability, given the earlier ones were")
    by_draft_length: dict[int, float] = Field(default_factory=dict, description="measured mean accepted drafted "
                                              "tokens per block, by draft length")


class HardwareProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1)
    device: DeviceProfile
    edge: EdgeProfile
    acceptance: AcceptanceProfile
    measured_on: str | None = Field(None, description="host and date, for a measured profile")
    sources: list[str] = Field(default_factory=list, description="where every number comes from")


def load_profile(path: Path) -> HardwareProfile:
    """Read and validate a profile; ProfileError naming the file and the first problems."""
    return load_model_file(HardwareProfile, path, "profile", ProfileError)


def save_profile(profile: HardwareProfile, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False))
