"""`tandem evaluate`: every policy on the same held-out traces over a grid of layouts (edge counts, each the
best-covering subset), offered loads, modes and energy weights (controller/twin/load.py).

A replicate is one (trace, arrival seed) pair; every policy plays every replicate of a cell (the twin gives every
policy the same requests for a seed), so comparisons are paired: a reduction is computed per replicate (1 − time
in system / time in system of the reference, unfinished requests counted to the horizon) and reported as its mean
with a 95% confidence interval (Student t over replicates).  A replicate in which a policy completed no request
is an error (EvaluationError naming it), never a dropped NaN: lengthen the scenario or lower its load.  Policies
that ignore energy decide the same at every energy weight, so they are played once per cell and reported under
each weight; ``mappo`` reads the weight in its observation and is played at each.  A policy is named with
optional parameters, ``name:key=value,...`` (``max-sinr-hysteresis:draft_lengths=tuned``: one lever on the
baseline's association); ``oracle-lookahead`` is the twin's oracle (controller/twin/oracle.py).  The reference
"strongest non-learned policy" is, per cell, the non-learned policy with the lowest mean time in system there; the
baseline is max-SINR with handover hysteresis.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASELINE = "max-sinr-hysteresis"
LEARNED = "mappo"
HEADLINE = "mean_time_in_system_s"  # what reductions compare: every request, unfinished ones to the horizon
METRICS = ("mean_latency_s", "p95_latency_s", "mean_ttft_s", "mean_energy_j", "migrations", HEADLINE)


class EvaluationError(ValueError):
    """A result that cannot be reported honestly (a replicate without completions), with the reason."""


ORACLE = "oracle-lookahead"
TUNED = ":draft_lengths=tuned"  # the draft-length lever on a policy's association
DEFAULT_EVALUATED = (LEARNED, ORACLE, "tma-equal" + TUNED, "tma-opt", "tma-equal", BASELINE + TUNED, BASELINE,
                     "least-loaded", "max-sinr-equal")


def policy_spec(spec: str) -> tuple[str, dict]:
    """``name:key=value,...`` -> (name, parameters); ValueError naming a malformed one."""
    from controller.service import parse_param

    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"policy {spec!r}: parameters are key=value, got {item!r}")
        params[key] = parse_param(value)
    return name, params


@dataclass(frozen=True)
class Job:
    users: int
    edges: int  # edge count: the layout of that size
    load: float | None  # offered work / batched capacity (None: the scenario's arrivals)
    mode: str
    trace: int  # index in the evaluation traces
    seed: int
    policy: str
    energy_weight: float | None  # None: a policy that ignores it


@dataclass(frozen=True)
class EvaluationSettings:
    scenario: Path
    traces: tuple[Path, ...]
    seeds: tuple[int, ...]
    users: tuple[int, ...]
    edges: tuple[int, ...]
    modes: tuple[str, ...]
    energy_weights: tuple[float, ...]
    policies: tuple[str, ...]
    checkpoint: Path | None
    jobs: int = 2
    loads: tuple[float | None, ...] = (None,)
    layouts: dict | None = None  # edge count -> load.Layout (None: the first edges of the scenario)

    def job_list(self) -> list[Job]:
        jobs = []
        for users, edges, load, mode, trace, seed, policy in itertools.product(
                self.users, self.edges, self.loads, self.modes, range(len(self.traces)), self.seeds, self.policies):
            weights = self.energy_weights if policy == LEARNED else (None,)
            jobs += [Job(users, edges, load, mode, trace, seed, policy, weight) for weight in weights]
        return jobs


def grid_layouts(scenario, traces: list, users: int, edge_counts: Sequence[int]) -> dict:
    """Each edge count's layout (load.best_layouts) for cells of up to ``users`` users, once the traces are found to
    hold those users and the scenario's edges, and every layout their capacity (ScenarioError, ValueError)."""
    from controller.twin.load import best_layouts

    most = scenario.model_copy(update={"users": users})
    for trace in traces:
        most.check_against(trace.metadata.num_users, trace.metadata.num_edges)
    layouts = best_layouts(most, traces, list(edge_counts))
    scenario.check_grid(users, (layout.edges for layout in layouts.values()))
    return layouts


_context: dict = {}


def _load(settings: EvaluationSettings) -> None:
    """Per worker process: scenario, traces, profile and the actor, read once."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from controller.policies.mappo import LearnedDraftLengths
    from controller.twin.scenario import load_scenario
    from tandem.profiles import load_profile
    from tandem.trace_format import load_trace

    scenario = load_scenario(settings.scenario)
    _context.update(settings=settings, scenario=scenario, profile=load_profile(scenario.profile),
                    traces=[load_trace(path) for path in settings.traces])
    if LEARNED in settings.policies:
        _context["actor"] = LearnedDraftLengths.from_folder(settings.checkpoint) if settings.checkpoint else None


def variant_of(job: Job):
    """The scenario a job plays: its layout, users, mode and load."""
    from controller.twin.load import at_load, with_layout

    scenario, settings = _context["scenario"], _context["settings"]
    layout = settings.layouts[job.edges] if settings.layouts else None
    variant = with_layout(scenario, layout) if layout else scenario.model_copy(
        update={"edges": scenario.edges[:job.edges]})
    variant = variant.model_copy(update={"users": job.users, "mode": job.mode})
    return at_load(variant, _context["profile"], job.load) if job.load is not None else variant


def play(job: Job) -> tuple[Job, dict]:
    from controller.policies import make_policy
    from controller.twin.oracle import LookaheadOracle
    from controller.twin.simulator import DigitalTwin

    twin = DigitalTwin(variant_of(job), _context["traces"][job.trace], _context["profile"], seed=job.seed)
    name, params = policy_spec(job.policy)
    if job.energy_weight is not None:  # set for the policies that read it (job_list)
        params["energy_weight"] = job.energy_weight
    policy = make_policy(name, seed=job.seed, known={"parallel": job.mode == "psd", "twin": twin,
                                                     "actor": _context.get("actor")},
                         extra={LookaheadOracle.name: LookaheadOracle}, **params)
    summary = twin.run(policy).summary().as_dict()
    return job, summary | {"completion": summary["completed"] / max(1, summary["completed"] + summary["unfinished"]),
                           "requests": summary["completed"] + summary["unfinished"]}


def run_jobs(settings: EvaluationSettings, progress=lambda: None) -> list[tuple[Job, dict]]:
    import multiprocessing

    jobs = settings.job_list()
    if settings.jobs <= 1:
        _load(settings)
        results = []
        for job in jobs:
            results.append(play(job))
            progress()
        return results
    with multiprocessing.get_context("spawn").Pool(settings.jobs, initializer=_load, initargs=(settings,)) as pool:
        results = []
        for result in pool.imap_unordered(play, jobs, chunksize=1):
            results.append(result)
            progress()
    return results


def interval(values: list[float]) -> dict:
    """Mean and the half-width of its 95% confidence interval (Student t; 0 for one value).  ValueError for a value
    that is not finite: every replicate counts."""
    from scipy.stats import t

    array = np.asarray(values, dtype=float)
    if not len(array) or not np.isfinite(array).all():
        raise ValueError(f"a confidence interval needs finite values, got {list(array)}")
    half = float(t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "ci95": half, "n": int(len(array))}


def aggregate(settings: EvaluationSettings, results: list[tuple[Job, dict]]) -> list[dict]:
    """One row per (users, edges, mode, energy weight): every policy's metrics and paired reductions."""
    by_key: dict[tuple, dict] = {}
    for job, summary in results:
        by_key[(job.users, job.edges, job.load, job.mode, job.trace, job.seed, job.policy,
                job.energy_weight)] = summary
    replicates = list(itertools.product(range(len(settings.traces)), settings.seeds))
    non_learned = [p for p in settings.policies if p != LEARNED and p != ORACLE]
    rows = []
    for users, edges, load, mode, weight in itertools.product(settings.users, settings.edges, settings.loads,
                                                              settings.modes, settings.energy_weights):
        def runs(policy: str) -> list[dict]:
            w = weight if policy == LEARNED else None
            return [by_key[(users, edges, load, mode, trace, seed, policy, w)] for trace, seed in replicates]

        table = {policy: runs(policy) for policy in settings.policies}
        for policy, summaries in table.items():
            for (trace, seed), summary in zip(replicates, summaries):
                if not summary["completed"]:
                    raise EvaluationError(
                        f"{policy} completed no request in replicate trace {trace}, seed {seed} of the cell {users} "
                        f"users x {edges} edges, load {load} ({mode}): lengthen the scenario or lower its load")
        metrics = {policy: {metric: interval([r[metric] for r in table[policy]]) for metric in METRICS}
                   | {"unfinished": float(np.mean([r["unfinished"] for r in table[policy]])),
                      "completion": interval([r["completed"] / max(1, r["completed"] + r["unfinished"])
                                              for r in table[policy]]),
                      "requests": int(sum(r["completed"] + r["unfinished"] for r in table[policy]))}
                   for policy in settings.policies}
        strongest = min(non_learned, key=lambda p: metrics[p][HEADLINE]["mean"]) if non_learned else None

        def reduction(policy: str, reference: str | None) -> dict | None:
            if reference is None or reference not in table:
                return None
            return interval([1 - a[HEADLINE] / b[HEADLINE] for a, b in zip(table[policy], table[reference])])

        layout = settings.layouts[edges] if settings.layouts else None
        rows.append({"users": users, "edges": edges, "load": load, "mode": mode, "energy_weight": weight,
                     "layout": list(layout.edges) if layout else None,
                     "coverage": layout.coverage if layout else None,
                     "strongest_non_learned": strongest, "policies": {
                         policy: metrics[policy] | {"reduction_vs_baseline": reduction(policy, BASELINE),
                                                    "reduction_vs_strongest": reduction(policy, strongest)}
                         for policy in settings.policies}})
    return rows


def headline(rows: list[dict], policy: str, mode: str = "psd") -> dict:
    """Average and best reduction (time in system) of ``policy`` against the baseline, and its margin over each
    cell's strongest non-learned policy, per weight."""
    out = {}
    for weight in sorted({row["energy_weight"] for row in rows}):
        cells = [row for row in rows if row["mode"] == mode and row["energy_weight"] == weight
                 and policy in row["policies"]]
        if not cells:
            continue
        vs_base = [row["policies"][policy]["reduction_vs_baseline"]["mean"] for row in cells]
        best = int(np.argmax(vs_base))
        margins = [row["policies"][policy]["reduction_vs_strongest"] for row in cells
                   if row["policies"][policy]["reduction_vs_strongest"]]
        means = [m["mean"] for m in margins]
        out[str(weight)] = {
            "average_reduction_vs_baseline": float(np.mean(vs_base)),
            "best_reduction_vs_baseline": float(vs_base[best]),
            "best_cell": f"{cells[best]['users']} users x {cells[best]['edges']} edges, load {cells[best]['load']}",
            "average_margin_over_strongest": float(np.mean(means)) if means else None,
            "cells_better_than_strongest": sum(m > 0 for m in means),
            # cells where the 95% interval of the paired margin lies wholly above / below zero
            "cells_significantly_better_than_strongest": sum(m["mean"] - m["ci95"] > 0 for m in margins),
            "cells_significantly_worse_than_strongest": sum(m["mean"] + m["ci95"] < 0 for m in margins),
            "cells": len(cells)}
    return out
