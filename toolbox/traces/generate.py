"""`tandem traces generate`: mobility, then Sionna channels, then link adaptation, then one trace file."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from tandem.trace_format import ARRAYS, DIRECTIONS, FORMAT_NAME, FORMAT_VERSION, ChannelTrace, TraceMetadata
from toolbox.traces.mobility import random_waypoint
from toolbox.traces.radio import LinkBudget, downlink_sinr, link_quality, to_db, uplink_sinr
from toolbox.traces.radio_scenario import ScenarioConfig, RadioScenarioError

MAX_SLOTS = 1_000_000
MAX_PAIRS = 20_000_000  # slots x users x edges: bounds memory (~1 GB of gains at 64 subcarriers per million)


@dataclass(frozen=True)
class TraceRequest:
    scenario: ScenarioConfig
    num_edges: int
    num_users: int
    num_slots: int
    slot_ms: float
    seed: int

    def check(self) -> None:
        for name, value, low in (("edges", self.num_edges, 1), ("users", self.num_users, 1),
                                 ("slots", self.num_slots, 1)):
            if value < low:
                raise RadioScenarioError(f"--{name} must be >= {low}, got {value}")
        if self.num_slots > MAX_SLOTS or self.num_slots * self.num_users * self.num_edges > MAX_PAIRS:
            raise RadioScenarioError(f"{self.num_slots} slots x {self.num_users} users x {self.num_edges} edges is more "
                                f"than this generator handles in memory ({MAX_PAIRS} slot-user-edge pairs)")
        if not 0.1 <= self.slot_ms <= 10_000:
            raise RadioScenarioError(f"--slot-ms must be within [0.1, 10000], got {self.slot_ms}")
        if not 0 <= self.seed < 2**31:
            raise RadioScenarioError(f"--seed must be within [0, 2^31), got {self.seed}")
        self.scenario.edge_positions(self.num_edges)  # a scenario file's edge list must match --edges


def _progress(total: int, description: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="", unit_scale=True, file=sys.stderr, disable=quiet,
                dynamic_ncols=True)


def generate_trace(request: TraceRequest, quiet: bool = False) -> ChannelTrace:
    """Simulate the scenario; deterministic for a request (same seed, same numbers)."""
    request.check()
    import sionna

    started = time.monotonic()
    scenario = request.scenario
    slot_s = request.slot_ms / 1000
    edge_pos = np.array(scenario.edge_positions(request.num_edges), dtype=np.float32)
    bandwidths = scenario.edge_bandwidths_hz(request.num_edges)
    scene = None
    area = scenario.area
    if scenario.kind == "rt":
        from toolbox.traces.sionna_rt import RayTracedScene

        scene = RayTracedScene(scenario.scene)  # loaded once: for its default area and for tracing
        if scenario.area_m is None:
            area = scene.default_area()
    rng = np.random.default_rng(request.seed)
    user_pos, _ = random_waypoint(rng, scenario.mobility, area, request.num_users, request.num_slots, slot_s)
    # Ray tracing follows every slot's position; the stochastic models re-drop geometry once per epoch.
    epoch_slots = 1 if scene is not None else max(1, round(scenario.mobility_epoch_s / slot_s))
    with _progress(request.num_slots, f"channels ({scenario.scenario})", quiet) as bar:
        if scene is not None:
            gains = scene.gains(scenario.carrier_ghz * 1e9, max(bandwidths), scenario.sampled_subcarriers,
                                edge_pos, user_pos, request.seed, on_slots=bar.update)
        else:
            from toolbox.traces.sionna_3gpp import stochastic_gains

            gains = stochastic_gains(scenario.kind, scenario.carrier_ghz * 1e9, max(bandwidths),
                                     scenario.sampled_subcarriers, edge_pos, user_pos, slot_s, epoch_slots,
                                     request.seed, on_window=bar.update)
    budget = LinkBudget(
        edge_bandwidth_hz=tuple(bandwidths), edge_tx_power_dbm=scenario.edge_power_dbm,
        user_tx_power_dbm=scenario.user_tx_power_dbm, edge_noise_figure_db=scenario.edge_noise_figure_db,
        user_noise_figure_db=scenario.user_noise_figure_db,
        uplink_interference_margin_db=scenario.uplink_interference_margin_db,
    )
    qualities = []
    for direction in DIRECTIONS:
        downlink = direction == "down"
        sinr = downlink_sinr(gains, budget) if downlink else uplink_sinr(gains, budget)
        with _progress(sinr[..., 0].size, f"link adaptation ({direction}link)", quiet) as bar:
            qualities.append(link_quality(sinr, downlink, scenario.bler_target, on_chunk=bar.update))
    metadata = TraceMetadata(
        format=FORMAT_NAME, version=FORMAT_VERSION, scenario=scenario.scenario, seed=request.seed,
        slot_ms=request.slot_ms, num_slots=request.num_slots, num_users=request.num_users,
        num_edges=request.num_edges, carrier_hz=scenario.carrier_ghz * 1e9, edge_bandwidth_hz=bandwidths,
        edge_tx_power_dbm=scenario.edge_power_dbm, user_tx_power_dbm=scenario.user_tx_power_dbm,
        edge_noise_figure_db=scenario.edge_noise_figure_db, user_noise_figure_db=scenario.user_noise_figure_db,
        uplink_interference_margin_db=scenario.uplink_interference_margin_db, mobility_epoch_slots=epoch_slots,
        sionna_version=sionna.__version__, generator="tandem traces generate",
        generation_seconds=round(time.monotonic() - started, 3),
        units={name: unit for name, (_, _, unit) in ARRAYS.items()}, directions=list(DIRECTIONS),
    )
    trace = ChannelTrace(
        metadata=metadata,
        sinr_db=np.stack([q.sinr_db for q in qualities]),
        se=np.stack([q.se for q in qualities]),
        se_shannon=np.stack([q.se_shannon for q in qualities]),
        mcs=np.stack([q.mcs for q in qualities]),
        path_gain_db=to_db(gains.mean(axis=-1)),
        user_pos=user_pos,
        edge_pos=edge_pos,
    )
    trace.check()
    return trace
