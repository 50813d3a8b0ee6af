"""Hardware pacing with time dilation: real engines compute real tokens, and each step takes as long as the
emulated hardware would, stretched by a dilation factor D.

Time-dilated emulation (Gupta et al., "DieCast: testing distributed systems with an accurate scale model", NSDI
2008): a phone's draft model and a GPU edge's target cannot run here, but their step times are known (a hardware
profile, tandem/profiles.py).  Every paced step is held until ``profile_seconds x D`` has passed since it started;
the link emulator divides its rates by D and multiplies its delays by D (linkemu/emulator.py), so every part of the
system runs D times slower than the emulated one, consistently, and whoever reports a latency divides it by D.  A
step whose real compute took longer than its dilated budget could not be paced: it is counted as an overrun, and a
run with more than ``MAX_VALID_OVERRUN_FRACTION`` of them is invalid (raise D).  D = 0 turns pacing off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_VALID_OVERRUN_FRACTION = 0.01


def check_dilation(dilation: float) -> float:
    """The one rule for D everywhere (daemons, configs, the pacer): 0 (off) or at least 1."""
    if not (dilation == 0 or dilation >= 1):
        raise ValueError(f"dilation must be 0 (off) or >= 1, got {dilation}")
    return dilation


class PacingSettings(BaseModel):
    """A daemon's pacing in its config: which profile it emulates, at which dilation."""

    model_config = ConfigDict(extra="forbid")
    profile: Path | None = Field(None, description="hardware profile (tandem/profiles.py) to emulate")
    dilation: float = Field(0.0, ge=0, le=10_000, allow_inf_nan=False, description="hold each step for its "
                            "profile time x this factor (0 = no pacing; else >= 1)")

    @model_validator(mode="after")
    def _complete(self) -> "PacingSettings":
        check_dilation(self.dilation)
        if self.dilation > 0 and self.profile is None:
            raise ValueError("pacing (dilation > 0) needs a hardware profile")
        return self


@dataclass
class Pacer:
    dilation: float = 0.0  # D; 0 = off
    on_step: Callable[[bool], None] | None = field(default=None, repr=False)  # called with "overran?" per step
    steps: int = 0
    overruns: int = 0

    def __post_init__(self) -> None:
        check_dilation(self.dilation)

    @property
    def enabled(self) -> bool:
        return self.dilation > 0

    @property
    def overrun_fraction(self) -> float:
        return self.overruns / self.steps if self.steps else 0.0

    def undilated(self, seconds: float) -> float:
        """A duration measured in dilated time, as the emulated system would have seen it."""
        return seconds / self.dilation if self.enabled else seconds

    def remaining(self, started: float, profile_seconds: float) -> float:
        """Seconds to hold a step that started at ``started`` (time.perf_counter) so that it lasts its dilated
        profile time; counts the step, and an overrun when its real compute already took longer."""
        if not self.enabled:
            return 0.0
        left = started + profile_seconds * self.dilation - time.perf_counter()
        self.steps += 1
        overran = left < 0
        self.overruns += overran
        if self.on_step is not None:
            self.on_step(overran)
        return max(0.0, left)

    def hold(self, started: float, profile_seconds: float) -> None:
        if (left := self.remaining(started, profile_seconds)) > 0:
            time.sleep(left)

    async def hold_async(self, started: float, profile_seconds: float) -> None:
        if (left := self.remaining(started, profile_seconds)) > 0:
            await asyncio.sleep(left)
