"""The scenario a trace is generated for: geometry, radio parameters and mobility, from YAML with sane defaults.

Defaults follow 3GPP TR 38.901 / TR 38.913 evaluation assumptions per scenario kind (site height, transmit
power); everything can be overridden in a YAML file (`tandem traces generate --config FILE`), see docs/traces.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.config_files import load_config

STOCHASTIC_KINDS = ("umi", "uma", "rma")
# Ray-traced scenes shipped in the sionna-rt wheel that work on the CPU here (see docs/traces.md).
RT_SCENES = ("simple_street_canyon", "munich", "etoile", "florence", "san_francisco", "simple_street_canyon_with_cars")

# kind -> (edge height m, edge transmit power dBm, default area side m)
_KIND_DEFAULTS = {"umi": (10.0, 33.0, 400.0), "uma": (25.0, 43.0, 1000.0), "rma": (35.0, 46.0, 3000.0),
                  "rt": (20.0, 33.0, 300.0)}


class SpeedRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_mps: float = Field(gt=0, allow_inf_nan=False)
    max_mps: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> "SpeedRange":
        if self.max_mps < self.min_mps:
            raise ValueError(f"max_mps ({self.max_mps}) < min_mps ({self.min_mps})")
        return self


class Mobility(BaseModel):
    """Random waypoint inside the area: each user walks (or drives) to uniformly drawn waypoints."""

    model_config = ConfigDict(extra="forbid")
    vehicular_fraction: float = Field(default=0.25, ge=0, le=1)
    pedestrian: SpeedRange = SpeedRange(min_mps=0.5, max_mps=1.8)
    vehicular: SpeedRange = SpeedRange(min_mps=8.0, max_mps=15.0)
    max_pause_s: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    user_height_m: float = Field(default=1.5, gt=0, allow_inf_nan=False)


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position_m: tuple[float, float, float]
    bandwidth_mhz: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ScenarioConfig(BaseModel):
    """Everything `traces generate` needs besides the counts (edges, users, slots), slot length and seed."""

    model_config = ConfigDict(extra="forbid")
    scenario: str = "umi"
    area_m: tuple[float, float] | None = None  # width, height; centred on the origin
    edges: list[Edge] | None = None  # default: evenly spread on a circle
    edge_height_m: float | None = Field(default=None, gt=0)
    carrier_ghz: float = Field(default=3.5, gt=0.5, le=100, allow_inf_nan=False)
    bandwidth_mhz: float = Field(default=20.0, gt=0, le=400, allow_inf_nan=False)
    subcarrier_spacing_khz: Literal[15, 30, 60, 120] = 30
    sampled_subcarriers: int = Field(default=64, ge=4, le=1024)
    edge_tx_power_dbm: float | None = Field(default=None, ge=-30, le=60)
    user_tx_power_dbm: float = Field(default=23.0, ge=-30, le=40)
    edge_noise_figure_db: float = Field(default=5.0, ge=0, le=30)
    user_noise_figure_db: float = Field(default=9.0, ge=0, le=30)
    uplink_interference_margin_db: float = Field(default=3.0, ge=0, le=30)
    bler_target: float = Field(default=0.1, gt=0, lt=1)
    mobility_epoch_s: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)
    mobility: Mobility = Mobility()

    @model_validator(mode="after")
    def _known_scenario(self) -> "ScenarioConfig":
        if self.scenario not in STOCHASTIC_KINDS and not (
            self.scenario.startswith("rt:") and self.scene in RT_SCENES
        ):
            raise ValueError(f"scenario must be one of {', '.join(STOCHASTIC_KINDS)} or rt:<scene> with scene in "
                             f"{', '.join(RT_SCENES)}; got {self.scenario!r}")
        return self

    @property
    def kind(self) -> str:
        return "rt" if self.scenario.startswith("rt:") else self.scenario

    @property
    def scene(self) -> str:
        """The Sionna RT scene of an `rt:<scene>` scenario."""
        return self.scenario.removeprefix("rt:")

    @property
    def area(self) -> tuple[float, float]:
        side = _KIND_DEFAULTS[self.kind][2]
        return self.area_m or (side, side)

    @property
    def edge_power_dbm(self) -> float:
        return self.edge_tx_power_dbm if self.edge_tx_power_dbm is not None else _KIND_DEFAULTS[self.kind][1]

    def edge_positions(self, num_edges: int) -> list[tuple[float, float, float]]:
        if self.edges is not None:
            if len(self.edges) != num_edges:
                raise RadioScenarioError(f"the scenario file places {len(self.edges)} edges but --edges is {num_edges}")
            return [edge.position_m for edge in self.edges]
        height = self.edge_height_m or _KIND_DEFAULTS[self.kind][0]
        if num_edges == 1:
            return [(0.0, 0.0, height)]
        radius = 0.3 * min(self.area)
        return [(radius * math.cos(2 * math.pi * i / num_edges), radius * math.sin(2 * math.pi * i / num_edges),
                 height) for i in range(num_edges)]

    def edge_bandwidths_hz(self, num_edges: int) -> list[float]:
        if self.edges is None:
            return [self.bandwidth_mhz * 1e6] * num_edges
        return [(edge.bandwidth_mhz or self.bandwidth_mhz) * 1e6 for edge in self.edges]


class RadioScenarioError(ValueError):
    """A scenario that cannot be simulated, with the reason."""


def load_radio_scenario(path: Path | None, scenario: str | None) -> ScenarioConfig:
    """The YAML file (if any) with the --scenario flag on top; RadioScenarioError with the reason when invalid."""
    return load_config(ScenarioConfig, path, {"scenario": scenario}, RadioScenarioError)
