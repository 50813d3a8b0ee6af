"""`tandem traces show`: what a trace holds, and the ranges that tell whether it is sane."""

from __future__ import annotations

import numpy as np

from tandem.trace_format import DIRECTIONS, ChannelTrace

NO_PATH_DB = -250.0  # gains are floored at -300 dB where ray tracing finds no path at all


def _range(values: np.ndarray) -> str:
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return f"min {values.min():8.2f}  p5 {p5:8.2f}  median {p50:8.2f}  p95 {p95:8.2f}  max {values.max():8.2f}"


def best_edges(trace: ChannelTrace) -> np.ndarray:
    """[T, U]: the edge with the strongest downlink SINR per slot and user (the max-SINR association)."""
    return trace.sinr_db[DIRECTIONS.index("down")].argmax(axis=-1)


def on_edges(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[T, U] values of a [T, U, E] array on the chosen edge per slot and user."""
    return np.take_along_axis(values, edges[..., None], axis=-1)[..., 0]


def summarise(trace: ChannelTrace) -> str:
    meta = trace.metadata
    best = best_edges(trace)
    lines = [
        f"scenario {meta.scenario}, seed {meta.seed}, format v{meta.version}, Sionna {meta.sionna_version}",
        f"{meta.num_edges} edges x {meta.num_users} users x {meta.num_slots} slots of {meta.slot_ms:g} ms "
        f"({meta.num_slots * meta.slot_ms / 1000:g} s), mobility epoch {meta.mobility_epoch_slots} slots",
        f"carrier {meta.carrier_hz / 1e9:g} GHz, bandwidth per edge "
        f"{', '.join(f'{b / 1e6:g}' for b in meta.edge_bandwidth_hz)} MHz, edge {meta.edge_tx_power_dbm:g} dBm, "
        f"user {meta.user_tx_power_dbm:g} dBm; generated in {meta.generation_seconds:.1f} s",
    ]
    linked = trace.path_gain_db > NO_PATH_DB
    if linked.any():
        lines.append(f"path loss (dB, all pairs)   {_range(-trace.path_gain_db[linked])}")
    if not linked.all():
        lines.append(f"no propagation path (ray tracing): {1 - linked.mean():.1%} of slot-user-edge pairs")
    for d, direction in enumerate(DIRECTIONS):
        best_sinr = on_edges(trace.sinr_db[d], best)
        best_se = on_edges(trace.se[d], best)
        lines += [
            f"{direction}link SINR (dB, best edge) {_range(best_sinr)}",
            f"{direction}link SE (bit/s/Hz, best) {_range(best_se)}   Shannon median "
            f"{np.median(on_edges(trace.se_shannon[d], best)):.2f}",
            f"{direction}link outage (SE = 0): {np.mean(best_se == 0):.1%} of slots on the best edge, "
            f"{np.mean(trace.se[d] == 0):.1%} of all pairs",
        ]
    full_rate = on_edges(trace.se[0], best) * np.array(meta.edge_bandwidth_hz)[best] / 1e6
    lines.append(f"downlink rate with the whole band of the best edge (Mbit/s) {_range(full_rate)}")
    switches = np.count_nonzero(np.diff(best, axis=0))
    lines.append(f"best-edge changes: {switches} over {meta.num_users} users "
                 f"({switches / max(1, meta.num_users):.1f} per user)")
    return "\n".join(lines)
