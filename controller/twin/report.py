"""Plots and the Markdown table of `tandem evaluate` results (rows from ``evaluate.aggregate``)."""

from __future__ import annotations

from pathlib import Path

from controller.twin.evaluate import BASELINE, LEARNED


def _cells(rows: list[dict], mode: str, weight: float) -> list[dict]:
    return [row for row in rows if row["mode"] == mode and row["energy_weight"] == weight]


def plots(rows: list[dict], out: Path) -> list[Path]:
    """latency vs users (per edge count), latency vs edges (most users), the energy-latency trade-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    weight = min(row["energy_weight"] for row in rows)
    cells = _cells(rows, "psd", weight)
    policies = list(cells[0]["policies"])
    edge_counts = sorted({row["edges"] for row in cells})
    figure, axes = plt.subplots(1, len(edge_counts), figsize=(5 * len(edge_counts), 4), squeeze=False)
    for axis, edges in zip(axes[0], edge_counts):
        chosen = sorted((row for row in cells if row["edges"] == edges), key=lambda row: row["users"])
        for policy in policies:
            stats = [row["policies"][policy]["mean_latency_s"] for row in chosen]
            axis.errorbar([row["users"] for row in chosen], [s["mean"] for s in stats],
                          yerr=[s["ci95"] for s in stats], label=policy, capsize=3, marker="o", markersize=3)
        axis.set(title=f"{edges} edges (PSD)", xlabel="users", ylabel="mean end-to-end latency (s)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    written.append(out / "latency_vs_users.png")
    figure.savefig(written[-1], dpi=120)
    plt.close(figure)

    most = max(row["users"] for row in cells)
    chosen = sorted((row for row in cells if row["users"] == most), key=lambda row: row["edges"])
    figure, axis = plt.subplots(figsize=(6, 4))
    for policy in policies:
        stats = [row["policies"][policy]["mean_latency_s"] for row in chosen]
        axis.errorbar([row["edges"] for row in chosen], [s["mean"] for s in stats], yerr=[s["ci95"] for s in stats],
                      label=policy, capsize=3, marker="o", markersize=3)
    axis.set(title=f"{most} users (PSD)", xlabel="edges", ylabel="mean end-to-end latency (s)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    written.append(out / "latency_vs_edges.png")
    figure.savefig(written[-1], dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    most_edges = max(row["edges"] for row in rows)
    for row in rows:
        if row["mode"] != "psd" or row["users"] != most or row["edges"] != most_edges:
            continue
        for policy, stats in row["policies"].items():
            if policy != LEARNED and row["energy_weight"] != weight:
                continue  # energy-blind policies decide the same at every weight
            label = f"{policy} (w={row['energy_weight']:g})" if policy == LEARNED else policy
            axis.errorbar(stats["mean_energy_j"]["mean"], stats["mean_latency_s"]["mean"],
                          xerr=stats["mean_energy_j"]["ci95"], yerr=stats["mean_latency_s"]["ci95"], fmt="o",
                          capsize=3, label=label)
    axis.set(title=f"energy vs latency, {most} users x {most_edges} edges (PSD)", xlabel="device energy per "
             "request (J)", ylabel="mean end-to-end latency (s)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    written.append(out / "energy_latency.png")
    figure.savefig(written[-1], dpi=120)
    plt.close(figure)
    return written


def _pct(stats: dict | None) -> str:
    if not stats or stats["mean"] != stats["mean"]:
        return "–"
    return f"{stats['mean']:+.1%} ± {stats['ci95']:.1%}"


def markdown(rows: list[dict], headlines: dict, command: str, meta: dict) -> str:
    lines = [f"Produced by `{command}` ({meta['replicates']} replicates per cell: held-out traces × arrival seeds; "
             f"{meta['seconds']:.0f} s on this machine). Reductions are paired per replicate, ± the 95% confidence "
             "half-width (Student t).", ""]
    for mode, by_weight in headlines.items():
        for weight, h in by_weight.items():
            lines.append(f"- **{mode.upper()}, energy weight {weight}**: {LEARNED} cuts mean latency against "
                         f"{BASELINE} by **{h['average_reduction_vs_baseline']:.1%} on average** over the "
                         f"{h['cells']} cells and **{h['best_reduction_vs_baseline']:.1%} at best** "
                         f"({h['best_cell']}); its margin over tma-opt averages "
                         f"{h['average_margin_over_tma_opt']:+.1%} (better in {h['cells_better_than_tma_opt']} of "
                         f"{h['cells']} cells).")
    lines.append("")
    for mode in sorted({row["mode"] for row in rows}):
        for weight in sorted({row["energy_weight"] for row in rows}):
            cells = _cells(rows, mode, weight)
            policies = list(cells[0]["policies"])
            lines += [f"### {mode.upper()}, energy weight {weight:g}", "",
                      "| users × edges | " + " | ".join(f"{p} mean s" for p in policies)
                      + f" | {LEARNED} vs {BASELINE} | {LEARNED} vs strongest other | strongest other |",
                      "|---|" + "---|" * (len(policies) + 3)]
            for row in sorted(cells, key=lambda r: (r["users"], r["edges"])):
                stats = row["policies"]
                learned = stats.get(LEARNED, {})
                lines.append(
                    f"| {row['users']} × {row['edges']} | "
                    + " | ".join(f"{stats[p]['mean_latency_s']['mean']:.2f} ± {stats[p]['mean_latency_s']['ci95']:.2f}"
                                 for p in policies)
                    + f" | {_pct(learned.get('reduction_vs_baseline'))} | {_pct(learned.get('reduction_vs_strongest'))}"
                    f" | {row['strongest_non_learned']} |")
            lines.append("")
            largest = max(cells, key=lambda r: (r["users"], r["edges"]))
            lines += [f"{largest['users']} users × {largest['edges']} edges, every metric (mean ± 95% CI):", "",
                      "| policy | mean latency s | p95 latency s | time to first token s | energy J/request | "
                      "unfinished | latency vs " + BASELINE + " |", "|---|---|---|---|---|---|---|"]
            for policy, stats in largest["policies"].items():
                lines.append(f"| {policy} | " + " | ".join(
                    f"{stats[m]['mean']:.2f} ± {stats[m]['ci95']:.2f}"
                    for m in ("mean_latency_s", "p95_latency_s", "mean_ttft_s", "mean_energy_j"))
                    + f" | {stats['unfinished']:.1f} | {_pct(stats['reduction_vs_baseline'])} |")
            lines.append("")
    return "\n".join(lines)
