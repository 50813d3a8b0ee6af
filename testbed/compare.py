"""Comparing policies on the testbed as a reviewer would: paired requests, a 95% interval, the twin beside it.

Every phase replays the same seeded workload, so request (user, seq) is the same request under every policy: the
reduction of mean time in system is computed over the pairs, with a Student-t interval on the paired differences
(divided by the baseline's mean).  A request that failed has no time in system and breaks its pair; failures are
reported.  The twin replays a phase with the very arrival times, lengths and trace slot the testbed played, and
the acceptance the testbed's models showed (``twin_replay``), so its prediction for the same run sits beside the
measurement.
"""

from __future__ import annotations

import math

import numpy as np

from controller.twin.evaluate import policy_spec
from controller.twin.scenario import TokenCount
from controller.twin.simulator import DigitalTwin


def _times(records: list[dict]) -> dict[tuple[int, int], float]:
    return {(r["user"], r["seq"]): r["latency_s"] for r in records if "error" not in r}


def paired_reduction(baseline: list[dict], policy: list[dict]) -> dict:
    """1 − mean time in system under ``policy`` / under ``baseline`` over the requests both completed, with the
    half-width of its 95% interval and whether it excludes 0."""
    from scipy.stats import t

    base, other = _times(baseline), _times(policy)
    pairs = sorted(set(base) & set(other))
    if len(pairs) < 2:
        return {"reduction": math.nan, "ci95": math.nan, "pairs": len(pairs), "significant": False}
    b = np.array([base[p] for p in pairs])
    d = b - np.array([other[p] for p in pairs])
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    reduction, ci = float(d.mean() / b.mean()), half / float(b.mean())
    return {"reduction": reduction, "ci95": ci, "pairs": len(pairs), "significant": abs(reduction) > ci,
            "unpaired": len(set(base) ^ set(other))}


def measured_acceptance(records: list[dict], draft_length: int) -> float:
    """The per-token α of the testbed's draft/target pair, from a phase whose blocks all had ``draft_length``
    tokens (a fixed-length policy): its accepted / drafted count converted as the estimator does."""
    from controller.estimator import acceptance_from_rate

    rates = [r["acceptance"] for r in records if "error" not in r and r.get("acceptance") is not None]
    if not rates:
        raise ValueError("no request of the phase reported its acceptance")
    return float(acceptance_from_rate(float(np.mean(rates)), draft_length))


def twin_replay(bed, policy: str, records: list[dict], trace_slot: int, mode: str,
                acceptance: float | None = None) -> dict:
    """The phase in the twin: its arrivals, its trace slot, its prompt and answer lengths, under ``policy``
    (``name[:key=value,...]``); ``acceptance``: the α the twin draws with (default the profile's — the testbed's
    models are not the profile's, measured_acceptance gives theirs)."""
    from controller.policies import make_policy

    arrivals: dict[int, list[float]] = {}
    for record in records:
        arrivals.setdefault(record["user"], []).append(record["arrival_s"])
    prompt = [r["prompt_tokens"] for r in records if "prompt_tokens" in r]
    last = max(r["arrival_s"] for r in records)
    scenario = bed.scenario.model_copy(update={
        "prompt_tokens": TokenCount(kind="fixed", value=round(float(np.mean(prompt)))),
        "answer_tokens": TokenCount(kind="fixed", value=bed.config.max_tokens), "mode": mode,
        "duration_slots": int((last + 120) / bed.trace.slot_s)})
    profile = bed.profile if acceptance is None else bed.profile.model_copy(update={
        "acceptance": bed.profile.acceptance.model_copy(update={"per_token": acceptance})})
    twin = DigitalTwin(scenario, bed.trace, profile, seed=0, arrivals=arrivals, trace_offset=trace_slot)
    name, params = policy_spec(policy)
    # A policy that plans for drafting during verification (tma) is told whether the phase drafts in parallel.
    summary = twin.run(make_policy(name, known={"parallel": mode == "psd"}, **params)).summary().as_dict()
    return {"mean_latency_s": summary["mean_latency_s"], "p95_latency_s": summary["p95_latency_s"],
            "mean_ttft_s": summary["mean_ttft_s"], "mean_energy_j": summary["mean_energy_j"],
            "mean_time_in_system_s": summary["mean_time_in_system_s"], "requests": summary["completed"],
            "unfinished": summary["unfinished"], "migrations": summary["migrations"]}


def describe(policy: str, baseline: str, measured: dict, predicted: float | None) -> str:
    """One plain sentence: the measured reduction with its interval (or that it is not significant), and the
    twin's prediction for the same run."""
    text = (f"{policy} vs {baseline}: mean time in system {measured['reduction']:+.1%} ± {measured['ci95']:.1%} "
            f"(95% CI over {measured['pairs']} paired requests)")
    text += "" if measured["significant"] else " — not significant: the interval includes 0"
    if predicted is not None:
        text += f"; the twin predicts {predicted:+.1%} for the same arrivals and trace slot"
    return text
