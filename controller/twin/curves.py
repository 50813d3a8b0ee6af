"""Learning curves of one or more `tandem train` runs (one per training seed), all of them, on one PNG.

Left: validation mean time in system against environment steps, each run's line, and the heuristic it corrects
(dashed: the same validation episodes, measured once per run).  Right: the mean training-episode return.  Read
from each run's ``progress.jsonl``; a run that has not validated yet shows only its returns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


class CurvesError(ValueError):
    """A run folder without a readable progress.jsonl, with the reason."""


def read_progress(run: Path) -> list[dict]:
    path = Path(run) / "progress.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise CurvesError(f"{run}: cannot read progress.jsonl ({error.strerror})") from None
    except ValueError as error:
        raise CurvesError(f"{run}: progress.jsonl is not JSON lines: {error}") from None


def plot_curves(runs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    progress = {Path(run).name or str(run): read_progress(run) for run in runs}
    figure, (validation, returns) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, rows) in enumerate(progress.items()):
        color = f"C{index}"
        checked = [row for row in rows if "validation_time_in_system_s" in row]
        if checked:
            steps = [row["env_steps"] for row in checked]
            validation.plot(steps, [row["validation_time_in_system_s"] for row in checked], "o-", color=color,
                            label=name)
            validation.plot(steps, [row["baseline_validation_time_in_system_s"] for row in checked], "--",
                            color=color, alpha=0.6, label=f"{name}: heuristic")
        # Finite returns only: RLlib reports NaN for an iteration in which no episode ended.
        trained = [row for row in rows if math.isfinite(row.get("episode_return_mean", math.nan))]
        returns.plot([row["env_steps"] for row in trained], [row["episode_return_mean"] for row in trained],
                     color=color, label=name)
    validation.set(xlabel="environment steps", ylabel="validation mean time in system (s)",
                   title="full-horizon validation (lower is better)")
    returns.set(xlabel="environment steps", ylabel="mean episode return", title="training episodes")
    for axis in (validation, returns):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
