"""What emulated users ask and when: a prompt set and Poisson arrivals, reproducible from a seed.

Every user draws its own arrivals and prompts from ``(seed, user)``, so two runs of the same workload (say, under
two policies) send the same requests at the same (emulated) times — a paired comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from device_client.speculation import DEFAULT_PSD_VARIANT, PsdVariant

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "configs" / "prompts.txt"


class WorkloadError(ValueError):
    pass


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompts: Path = Field(DEFAULT_PROMPTS, description="one prompt per line (# comments and blank lines skipped)")
    rate_per_user_s: float = Field(0.05, gt=0, le=100, allow_inf_nan=False, description="Poisson arrivals: "
                                   "requests per emulated second per user")
    start_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="first arrivals after this emulated time")
    until_s: float | None = Field(None, gt=0, allow_inf_nan=False, description="no arrivals after this emulated "
                                  "time (the fleet exits once the last request finished); None: run until stopped")
    max_tokens: int = Field(48, ge=1, le=4096, description="tokens per answer at most")
    ignore_eos: bool = Field(False, description="answers of exactly max_tokens (the twin's fixed lengths)")
    mode: Literal["psd", "sd", "edge-only"] = "psd"
    draft_length: int = Field(4, ge=1, le=64)
    psd_variant: PsdVariant = Field(DEFAULT_PSD_VARIANT, validate_default=True, description="with mode psd: the "
                                    "improvements of psd to use, e.g. pre+adaptive (device_client/speculation.py)")
    seed: int = Field(0, ge=0, lt=1 << 32)

    @field_validator("psd_variant", mode="before")
    @classmethod
    def _known_variant(cls, value: object) -> PsdVariant:
        if isinstance(value, PsdVariant):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a psd variant is a name such as {DEFAULT_PSD_VARIANT!r}, not {value!r}")
        return PsdVariant.parse(value)  # a VariantError (a ValueError) is a validation error

    @field_serializer("psd_variant")
    def _variant_name(self, variant: PsdVariant) -> str:
        return variant.name

    def load_prompts(self) -> list[str]:
        try:
            lines = self.prompts.read_text().splitlines()
        except OSError as error:
            raise WorkloadError(f"cannot read the prompt set {self.prompts}: {error}") from None
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not prompts:
            raise WorkloadError(f"the prompt set {self.prompts} has no prompt")
        return prompts

    def requests(self, user: int, num_prompts: int) -> Iterator[tuple[float, int]]:
        """(arrival time in emulated seconds, prompt index) of ``user``'s requests, in order."""
        rng = np.random.default_rng([self.seed, user])
        at = self.start_s
        while True:
            at += float(rng.exponential(1 / self.rate_per_user_s))
            if self.until_s is not None and at >= self.until_s:
                return
            yield at, int(rng.integers(num_prompts))
