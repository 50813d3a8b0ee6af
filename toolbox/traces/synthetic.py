"""Traces with chosen spectral efficiencies (no simulation): for tests, benchmarks and what-if runs of the
emulator, e.g. an exact rate, a step, or an outage at a known slot."""

from __future__ import annotations

import numpy as np

from tandem.trace_format import ARRAYS, DIRECTIONS, FORMAT_NAME, FORMAT_VERSION, ChannelTrace, TraceMetadata


def synthetic_trace(se_down: np.ndarray, se_up: np.ndarray, slot_ms: float = 100.0,
                    bandwidth_hz: float = 1e6) -> ChannelTrace:
    """Per-slot spectral efficiencies (bit/s/Hz) for each direction: shape [T] for one user and one edge, or
    [T, U, E] for U users and E edges."""
    se = np.stack([np.asarray(se_down, np.float32), np.asarray(se_up, np.float32)])
    if se.ndim == 2:
        se = se[:, :, None, None]
    if se.ndim != 4:
        raise ValueError(f"spectral efficiencies must have shape [T] or [T, U, E], got {se.shape[1:]}")
    _, num_slots, num_users, num_edges = se.shape
    sinr = np.where(se > 0, np.exp2(np.minimum(se, 60)) - 1, 1e-3).astype(np.float32)  # Shannon-consistent
    metadata = TraceMetadata(
        format=FORMAT_NAME, version=FORMAT_VERSION, scenario="synthetic", seed=0, slot_ms=slot_ms,
        num_slots=num_slots, num_users=num_users, num_edges=num_edges, carrier_hz=3.5e9,
        edge_bandwidth_hz=[bandwidth_hz] * num_edges,
        edge_tx_power_dbm=0.0, user_tx_power_dbm=0.0, edge_noise_figure_db=0.0, user_noise_figure_db=0.0,
        uplink_interference_margin_db=0.0, mobility_epoch_slots=1, sionna_version="none",
        generator="toolbox.traces.synthetic", generation_seconds=0.0,
        units={name: unit for name, (_, _, unit) in ARRAYS.items()}, directions=list(DIRECTIONS))
    return ChannelTrace(
        metadata=metadata, sinr_db=(10 * np.log10(sinr)).astype(np.float32), se=se, se_shannon=se.copy(),
        mcs=np.zeros(se.shape, np.int8), path_gain_db=np.full((num_slots, num_users, num_edges), -80.0, np.float32),
        user_pos=np.zeros((num_slots, num_users, 3), np.float32), edge_pos=np.zeros((num_edges, 3), np.float32))
