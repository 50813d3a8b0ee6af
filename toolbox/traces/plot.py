"""`tandem traces plot`: PNGs of a trace (SINR over time per user, association map of best edges)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem.trace_format import DIRECTIONS, ChannelTrace
from toolbox.traces.summary import best_edges, on_edges


def plot_trace(trace: ChannelTrace, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = trace.metadata
    seconds = np.arange(meta.num_slots) * trace.slot_s
    best = best_edges(trace)
    written = []

    figure, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for d, (axis, direction) in enumerate(zip(axes, DIRECTIONS)):
        sinr = on_edges(trace.sinr_db[d], best)
        for user in range(meta.num_users):
            axis.plot(seconds, sinr[:, user], linewidth=0.8, label=f"user {user}")
        axis.set_ylabel(f"{direction}link SINR (dB)")
        axis.grid(alpha=0.3)
    axes[0].set_title(f"{meta.scenario}: SINR to the best edge per user (seed {meta.seed})")
    axes[-1].set_xlabel("time (s)")
    if meta.num_users <= 12:
        axes[0].legend(ncol=6, fontsize=7, loc="lower right")
    figure.tight_layout()
    written.append(out_dir / "sinr_over_time.png")
    figure.savefig(written[-1], dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 7))
    colours = plt.get_cmap("tab10")
    for user in range(meta.num_users):
        axis.plot(trace.user_pos[:, user, 0], trace.user_pos[:, user, 1], color="0.8", linewidth=0.6, zorder=1)
        axis.scatter(trace.user_pos[:, user, 0], trace.user_pos[:, user, 1], s=3, zorder=2,
                     c=[colours(e % 10) for e in best[:, user]])
    for edge in range(meta.num_edges):
        axis.scatter(*trace.edge_pos[edge, :2], marker="^", s=160, color=colours(edge % 10), edgecolor="black",
                     zorder=3, label=f"edge {edge}")
    axis.set_title(f"{meta.scenario}: user paths coloured by best (max downlink SINR) edge")
    axis.set_xlabel("x (m)")
    axis.set_ylabel("y (m)")
    axis.set_aspect("equal")
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    written.append(out_dir / "association_map.png")
    figure.savefig(written[-1], dpi=110)
    plt.close(figure)
    return written
