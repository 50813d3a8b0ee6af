"""A workload phase on a running testbed: swap the policy in through the admin CLI, run the seeded workload from
fresh device fleets until its last request ended, and summarise what the devices measured (emulated time) with
the pacing overruns of edges and devices.  Used by `tandem demo` and bench/testbed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem.auth import read_token_file
from tandem.cli_support import UsageError
from tandem.pacing import MAX_VALID_OVERRUN_FRACTION
from testbed.metrics import scrape, total

PHASE_TRACE_SLOT = 0  # every phase plays the radio trace from here


@dataclass
class Phase:
    summary: dict
    records: list[dict]  # one per request, as the devices wrote them
    trace_slot: int  # the trace slot playing when the devices started (to replay the phase in the twin)


def set_policy(bed, policy: str) -> None:
    """`tandem policy set NAME [--param k=v ...]` for ``name[:k=v,...]``, as an operator swaps it (the admin
    certificate; in plaintext the run's admin token)."""
    from controller.twin.evaluate import policy_spec

    controller = bed.find("controller").address
    name, params = policy_spec(policy)
    options = [argument for key, value in params.items() for argument in ("--param", f"{key}={value}")]
    done = subprocess.run([sys.executable, "-m", "tandem", "policy", "set", name, *options, "--controller",
                           controller],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, **bed.client_env(), **bed.admin_env()})
    if done.returncode != 0:
        raise UsageError(f"`tandem policy set {policy}` failed: {done.stderr.strip()}")


def seek_trace(bed, slot: int) -> None:
    """Have the link emulator play its trace from ``slot`` on, now (LinkControl.Seek, as an admin)."""
    from tandem.rpc import bearer_metadata
    from tandem.wire.v1 import linkemu_pb2 as pb
    from tandem.wire.v1 import linkemu_pb2_grpc

    token = None if bed.config.tls else read_token_file(bed.admin_token_file)
    with bed.client_transport("admin").channel(bed.find("link emulator").control_address, "linkemu") as channel:
        linkemu_pb2_grpc.LinkControlStub(channel).Seek(pb.SeekRequest(slot=slot), timeout=30,
                                                        metadata=bearer_metadata(token))


def run_phase(bed, policy: str, phase_s: float, mode: str | None = None, name: str | None = None,
              trace_slot: int = PHASE_TRACE_SLOT, psd_variant: str | None = None,
              draft_weights: str | None = None) -> Phase:
    """``mode``: psd or sd (default: the scenario's), psd as ``psd_variant`` says (default: the device's);
    ``name``: the phase's files (default: the policy);
    ``trace_slot``: where the radio trace plays from as the devices start (the same for every phase compared);
    ``draft_weights``: the fleets' (shared, the default, or per-device)."""
    name = name or policy
    print(f"\n[{name}] swapping the policy {policy} in through the admin CLI...", flush=True)
    set_policy(bed, policy)
    time.sleep(2 * bed.trace.slot_s * bed.dilation)  # a decision or two under the new policy before arrivals
    edges = [d for d in bed.daemons if d.label.startswith("edge")]
    before = [scrape(bed.config.host, e.metrics_port) for e in edges]
    fleets = bed.start_devices(name, phase_s, mode=mode, psd_variant=psd_variant, draft_weights=draft_weights)
    seek_trace(bed, trace_slot)  # the devices' clocks start as they announce readiness: the same radio for each
    started = time.monotonic()
    while any(f.process.poll() is None for f in fleets):
        done = sum(_count_lines(f.results) for f in fleets)
        print(f"\r[{name}] {time.monotonic() - started:5.0f} s, {done} requests done", end="", flush=True)
        time.sleep(1.0)
    print()
    records = [json.loads(line) for f in fleets for line in f.results.read_text().splitlines()]
    device_summary = [json.loads(f.tail(1)) for f in fleets]
    after = [scrape(bed.config.host, e.metrics_port) for e in edges]
    edge_steps = sum(total(a, "tandem_edge_pacing_steps_total") - total(b, "tandem_edge_pacing_steps_total")
                     for a, b in zip(after, before))
    edge_overruns = sum(total(a, "tandem_edge_pacing_overruns_total") - total(b, "tandem_edge_pacing_overruns_total")
                        for a, b in zip(after, before))
    bed.daemons = [d for d in bed.daemons if d not in fleets]
    return Phase(summarize(name, records, device_summary, edge_steps, edge_overruns), records, trace_slot)


def summarize(policy: str, records: list[dict], device_summary: list[dict], edge_steps: float,
              edge_overruns: float) -> dict:
    ok = [r for r in records if "error" not in r]
    latency = np.array([r["latency_s"] for r in ok]) if ok else np.array([np.nan])
    steps = edge_steps + sum(s["pacing"]["steps"] for s in device_summary)
    overruns = edge_overruns + sum(s["pacing"]["overruns"] for s in device_summary)
    fraction = overruns / steps if steps else 0.0
    return {"policy": policy, "requests": len(ok), "errors": len(records) - len(ok),
            "mean_latency_s": float(np.mean(latency)), "p95_latency_s": float(np.percentile(latency, 95)),
            "mean_time_in_system_s": float(np.mean(latency)),  # the devices run until their last request ends
            "mean_ttft_s": float(np.mean([r["ttft_s"] for r in ok])) if ok else None,
            "mean_tokens_per_s": float(np.mean([r["tokens_per_s"] for r in ok])) if ok else None,
            "migrations": sum(r["migrations"] or 0 for r in ok), "pacing_steps": steps, "pacing_overruns": overruns,
            "overrun_fraction": fraction, "valid": fraction <= MAX_VALID_OVERRUN_FRACTION} | efficiency_of(ok)


def efficiency_of(records: list[dict]) -> dict:
    """Mean efficiency against the bound (device_client/efficiency.py) and each part's mean seconds per token."""
    timed = [r for r in records if r.get("efficiency") is not None and r.get("tokens")]
    if not timed:
        return {"mean_efficiency": None, "per_token_s": None}
    return {"mean_efficiency": float(np.mean([r["efficiency"] for r in timed])),
            "per_token_s": {part: float(np.mean([r["breakdown_s"][part] / r["tokens"] for r in timed]))
                            for part in timed[0]["breakdown_s"]}}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'policy':<32} {'requests':>8} {'errors':>6} {'mean s':>7} {'p95 s':>7} {'ttft s':>7} {'tok/s':>6} "
          f"{'effic':>6} {'moves':>5} {'overruns':>9}")
    for r in rows:
        print(f"{r['policy']:<32} {r['requests']:>8} {r['errors']:>6} {r['mean_latency_s']:>7.2f} "
              f"{r['p95_latency_s']:>7.2f} {r['mean_ttft_s'] or float('nan'):>7.2f} "
              f"{r['mean_tokens_per_s'] or float('nan'):>6.1f} {r.get('mean_efficiency') or float('nan'):>6.2f} "
              f"{r['migrations']:>5} "
              f"{r['overrun_fraction']:>8.1%}{'' if r['valid'] else '!'}")
    print("(emulated time: the profile's phones and GPU edges; a run with over 1% pacing overruns is marked '!' "
          "and is not valid)")


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for _ in path.open())
    except OSError:
        return 0
