"""Soak: a steady load below saturation for a bounded time, and whether anything drifts.

One llama.cpp edge server behind a `linkemu serve` daemon replaying a channel trace, all on loopback; this process is
the client side (it hosts the devices' draft engines).  Requests arrive as a seeded Poisson process (--rate per
second, at most --max-concurrency in flight; arrivals beyond a bounded backlog are shed and counted): mostly short
greedy PSD generations through the emulator, some edge-only generations, and some sessions cancelled midway (open,
one block, stream dropped, attach again, dropped for good: a client gone away, reaped by the edge's idle timeout),
so the open/attach/cancel paths all run for the whole soak.

Measured per time window (--window-s) and printed as the run goes: requests offered vs completed per minute (the
load held), errors by gRPC status, p50/p99 end-to-end latency of PSD requests (scheduled arrival to last token, so
client-side queueing counts), sessions the edge holds, and RSS, thread count, open file descriptors and CPU share of
the edge, the link emulator and this process.  Why: a leak (memory, threads, fds, sessions) or a slow degradation
shows only over time, as a slope; a healthy soak is flat.  The summary gives each metric's least-squares slope per
minute and its first/last window values.  The link replays the testbed's trace (a minute, looped) on its most
reliable user-edge pair, which has no outage; another --trace may have some (waited through, up to 60 s), and then
a window of a whole number of trace loops keeps the windows comparable.

Every answer is checked for losslessness cheaply: greedy PSD (and edge-only) tokens must equal the edge-only
reference of the same prompt, computed once per prompt before the soak (a cancelled session's committed tokens
must be a prefix of it).  Where they differ, the first differing position is scored on the edge: a top-2 gap
within harness/teacher_forcing.py's NEAR_TIE_EPSILON is a near-tie that a block and a one-token step decided
differently (counted, not an error); a wider one is a lossy answer (an error).

    .venv/bin/python bench/soak.py                          # 30 minutes, results/soak.json
    .venv/bin/python bench/soak.py --minutes 1 --window-s 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bootstrap import RESULTS  # first: the repository on sys.path, one OpenMP thread

from device_client.draft import DraftEngine, LlamaCppDraftEngine, draft_token
from device_client.edge_handle import EdgeError, EdgeFailure, EdgeUnreachable, SessionSpec
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from device_client.workload import Workload
from tandem.models import default_data_dir
from toolbox.models import prepare_models
from tandem.sampling import PositionRandom, SamplingConfig
from tandem.trace_format import load_trace
from testbed.bed import Testbed
from testbed.config import DEFAULT_CONFIG, load_testbed_config
from testbed.metrics import scrape, total
from tandem.processes import EdgeProcess, LinkEmuProcess
from testbed.resources import usage
from harness.teacher_forcing import NEAR_TIE_EPSILON

KINDS = ("psd", "edge-only", "cancel")
GREEDY = SamplingConfig()
DRAFT_LENGTH = 4
VERDICT_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- daemons (transport and command lines: all here)

def transport_env(tls_dir: Path | None) -> dict[str, str]:
    """How every process of the soak (the daemons and this one, the devices' client library) secures gRPC: mutual
    TLS with a folder made by `tandem certs init` (identities edge-0 and device-0), else plaintext asked for
    explicitly (the daemons log it as a warning)."""
    return {"TANDEM_TLS_DIR": str(tls_dir)} if tls_dir else {"TANDEM_INSECURE": "1"}


def start_daemons(stack: ExitStack, data_dir: Path, trace: Path, logs: Path,
                  env: dict[str, str]) -> tuple[EdgeProcess, LinkEmuProcess]:
    """The edge, then the link emulator in front of it on the trace's most reliable user-edge pair (outages are
    waited through, up to 60 s); both stopped when ``stack`` closes.  Every simulated device here presents one
    identity, so the edge's per-identity limits (meant for one device each) are lifted to the edge's own."""
    edge = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--metrics-port", "0",
                        "--idle-timeout", "30", "--max-sessions", "64", "--max-sessions-per-identity", "64",
                        "--open-rate", "100"], log_path=logs / "edge.log", env=env)
    stack.enter_context(edge)
    user, edge_index = load_trace(trace).most_reliable_pair()
    link = LinkEmuProcess(["--trace", str(trace), "--upstream", edge.address, "--user", str(user), "--edge",
                           str(edge_index), "--share", "0.5", "--base-delay-ms", "2", "--outage-limit", "60",
                           "--metrics-port", "0"], log_path=logs / "linkemu.log", env=env)
    stack.enter_context(link)
    return edge, link


def testbed_trace() -> Path:
    """The testbed's trace (deploy/testbed.yaml's scenario: UMi, 3 edges x 8 users x 600 slots of 100 ms, so one
    loop a minute), made by the testbed on first use."""
    return Testbed(load_testbed_config(DEFAULT_CONFIG)).scenario.trace


# ---------------------------------------------------------------- process sampling

@dataclass(frozen=True)
class ProcSample:
    t_s: float  # since the soak started
    cpu_s: float
    rss_mb: float
    threads: int
    fds: int


def proc_sample(pid: int, t_s: float) -> ProcSample | None:
    """CPU time and RSS (testbed.resources), Threads from /proc/PID/status, and open fds; None once gone."""
    used = usage(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if used is None:
        return None
    threads = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
    return ProcSample(t_s, used.cpu_s, used.rss_bytes / 2**20, threads, fds)


class Sampler(threading.Thread):
    """Samples every process every ``every_s`` (and when asked, at each window's end)."""

    def __init__(self, pids: dict[str, int], clock: "Clock", every_s: float) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.pids, self.clock, self.every_s = pids, clock, every_s
        self.samples: dict[str, list[ProcSample]] = {name: [] for name in pids}
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> dict[str, ProcSample]:
        now = self.clock.now()
        taken = {name: s for name, pid in self.pids.items() if (s := proc_sample(pid, now))}
        with self._lock:
            for name, sample in taken.items():
                self.samples[name].append(sample)
        return taken

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            self.take()

    def first(self, name: str) -> ProcSample | None:
        with self._lock:
            return self.samples[name][0] if self.samples[name] else None

    def before(self, name: str, t_s: float) -> ProcSample | None:
        """The last sample of ``name`` taken at or before ``t_s``."""
        with self._lock:
            earlier = [s for s in self.samples[name] if s.t_s <= t_s]
        return earlier[-1] if earlier else None


# ---------------------------------------------------------------- load

class WrongLength(Exception):
    """An answer of other than --max-tokens tokens (EOS is ignored): tokens lost or repeated."""


@dataclass(frozen=True)
class Arrival:
    index: int
    at_s: float
    kind: str
    prompt: int


@dataclass
class Outcome:
    arrival: Arrival
    started_s: float
    finished_s: float
    error: str | None = None  # gRPC status name (or exception type)
    message: str = ""
    tokens: list[int] = field(default_factory=list)
    divergence: dict | None = None  # where the answer left the reference: position, gap, near_tie

    @property
    def near_tie(self) -> bool:
        return self.divergence is not None and self.divergence["near_tie"]

    @property
    def lossy(self) -> bool:
        return self.divergence is not None and not self.divergence["near_tie"]

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.arrival.at_s


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


def schedule(rate: float, duration_s: float, seed: int, shares: dict[str, float], prompts: int) -> list[Arrival]:
    """Poisson arrivals over ``duration_s``, each of a kind drawn with ``shares`` and a prompt drawn uniformly."""
    rng = np.random.default_rng(seed)
    kinds, probs = list(shares), np.array(list(shares.values()))
    arrivals, at = [], 0.0
    while (at := at + float(rng.exponential(1 / rate))) < duration_s:
        kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
        arrivals.append(Arrival(len(arrivals), at, kind, int(rng.integers(prompts))))
    return arrivals


def cancelled_session(connection: EdgeConnection, draft: DraftEngine, prompt_ids: list[int],
                      max_tokens: int) -> list[int]:
    """Open a greedy speculative session, send one block, drop the stream, attach again, drop it for good (never
    closed: the edge reaps it).  Returns the tokens the edge had committed."""
    spec = SessionSpec(prompt_ids, GREEDY, True, draft_length=DRAFT_LENGTH, max_new_tokens=max_tokens,
                       tokenizer_fingerprint=draft.tokenizer_fingerprint)
    session = connection.open(spec)
    random = PositionRandom(0, PositionRandom.DEVICE)
    block: list[int] = []
    for _ in range(DRAFT_LENGTH):
        block.append(draft_token(draft, prompt_ids + block, GREEDY, random).token_id)
    session.send_block(len(prompt_ids), block, None)
    verdict = session.receive_verdict(VERDICT_TIMEOUT_S)
    session.cancel()
    session = connection.attach(session.id)
    committed = list(session.committed)
    session.cancel()
    expected = block[:verdict.accepted] + [verdict.next_token]
    if committed != expected:
        raise EdgeError(EdgeFailure.REFUSED, f"attach returned {committed} after the verdict {expected}", "INTERNAL")
    return committed


def divergence(connection: EdgeConnection, prompt_ids: list[int], tokens: list[int],
               reference: list[int]) -> dict | None:
    """None when ``tokens`` follow ``reference``; else the first differing position and the target's log-probability
    gap there between the two tokens (None when one is outside its top 8: not a near-tie)."""
    split = next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), None)
    if split is None:
        return None
    scored = connection.score(prompt_ids + tokens[:split + 1], len(prompt_ids) + split, 8).positions[0]
    logprobs = dict(zip(scored.top_ids, scored.top_logprobs))
    both = tokens[split] in logprobs and reference[split] in logprobs
    gap = abs(logprobs[tokens[split]] - logprobs[reference[split]]) if both else None
    return {"position": split, "gap": gap, "near_tie": gap is not None and gap <= NEAR_TIE_EPSILON}


def run_request(arrival: Arrival, address: str, drafts: "queue.Queue[DraftEngine]", prompts: list[str],
                references: list[list[int]], max_tokens: int, clock: Clock) -> Outcome:
    """One request on its own connection with a draft engine from the pool; errors become the outcome."""
    draft = drafts.get()
    outcome = Outcome(arrival, clock.now(), 0.0)
    connection = EdgeConnection(address)
    reference = references[arrival.prompt]
    prompt_ids = draft.encode_chat(prompts[arrival.prompt])
    try:
        if arrival.kind == "cancel":
            outcome.tokens = cancelled_session(connection, draft, prompt_ids, max_tokens)
        else:
            request = GenerationRequest(prompts[arrival.prompt], arrival.kind, max_tokens, GREEDY,
                                        draft_length=DRAFT_LENGTH, ignore_eos=True)
            outcome.tokens = generate(connection, draft, request)[0].token_ids
            if len(outcome.tokens) != max_tokens:
                raise WrongLength(f"{len(outcome.tokens)} tokens, not {max_tokens}")
        outcome.divergence = divergence(connection, prompt_ids, outcome.tokens, reference)
    except EdgeError as error:
        outcome.error, outcome.message = error.status, error.details
    except EdgeUnreachable as error:
        outcome.error, outcome.message = "UNAVAILABLE", str(error)
    except Exception as error:  # noqa: BLE001 - a soak counts every failure, whatever it is
        outcome.error, outcome.message = type(error).__name__, str(error)
    finally:
        connection.close()
        drafts.put(draft)
    outcome.finished_s = clock.now()
    return outcome


def edge_only_references(address: str, draft: DraftEngine, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """The target's own greedy answer to each prompt (an edge-only session), the losslessness reference."""
    connection = EdgeConnection(address)
    try:
        request = [GenerationRequest(p, "edge-only", max_tokens, GREEDY, ignore_eos=True) for p in prompts]
        return [generate(connection, draft, r)[0].token_ids for r in request]
    finally:
        connection.close()


# ---------------------------------------------------------------- windows and trends

def percentiles(values: list[float]) -> dict[str, float] | None:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))} if values else None


def window_figures(index: int, start_s: float, end_s: float, arrivals: list[Arrival], shed: list[Arrival],
                   outcomes: list[Outcome], sampler: Sampler, edge_sessions: float | None) -> dict:
    """Load held, errors and latency of the requests that arrived / ended in [start_s, end_s), and each process's
    resources at end_s (CPU share over the window)."""
    minutes = (end_s - start_s) / 60
    ended = [o for o in outcomes if start_s <= o.finished_s < end_s]
    ok = [o for o in ended if o.error is None]
    errors: dict[str, int] = {}
    for o in ended:
        if o.error:
            errors[o.error] = errors.get(o.error, 0) + 1
    processes = {}
    for name in sampler.pids:
        last, first = sampler.before(name, end_s), sampler.before(name, start_s) or sampler.first(name)
        if last:
            cpu = (last.cpu_s - first.cpu_s) / (last.t_s - first.t_s) if first and last.t_s > first.t_s else None
            processes[name] = {"rss_mb": last.rss_mb, "threads": last.threads, "fds": last.fds, "cpu_share": cpu}
    offered = sum(start_s <= a.at_s < end_s for a in arrivals)
    return {
        "window": index, "start_s": start_s, "end_s": end_s, "offered": offered,
        "shed": sum(start_s <= a.at_s < end_s for a in shed), "completed": len(ok),
        "completed_by_kind": {k: sum(o.arrival.kind == k for o in ok) for k in KINDS},
        "offered_per_min": offered / minutes, "completed_per_min": len(ok) / minutes, "errors": errors,
        "lossy": sum(o.lossy for o in ok), "near_ties": sum(o.near_tie for o in ok),
        "latency_s": {k: percentiles([o.latency_s for o in ok if o.arrival.kind == k]) for k in ("psd", "edge-only")},
        "edge_sessions_active": edge_sessions, "processes": processes}


def slope_per_min(times_s: list[float], values: list[float | None]) -> float | None:
    """Least-squares slope (units per minute); None with fewer than two points."""
    points = [(t, v) for t, v in zip(times_s, values) if v is not None]
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return None
    t, v = np.array(points).T
    return float(np.polyfit(t / 60, v, 1)[0])


def trend(times_s: list[float], values: list[float | None], first: float | None, last: float | None) -> dict:
    return {"first": first, "last": last, "slope_per_min": slope_per_min(times_s, values)}


def trends(windows: list[dict], sampler: Sampler) -> dict:
    """Slope per metric: window metrics over window midpoints; process metrics over every sample."""
    mids = [(w["start_s"] + w["end_s"]) / 2 for w in windows]

    def series(get) -> dict:
        values = [get(w) for w in windows]
        return trend(mids, values, values[0] if values else None, values[-1] if values else None)

    def psd(w: dict, q: str) -> float | None:
        return (w["latency_s"]["psd"] or {}).get(q)

    out = {"completed_per_min": series(lambda w: w["completed_per_min"]),
           "offered_per_min": series(lambda w: w["offered_per_min"]),
           "psd_latency_p50_s": series(lambda w: psd(w, "p50")),
           "psd_latency_p99_s": series(lambda w: psd(w, "p99")),
           "edge_sessions_active": series(lambda w: w["edge_sessions_active"]), "processes": {}}
    for name, samples in sampler.samples.items():
        times = [s.t_s for s in samples]
        out["processes"][name] = {}
        for metric in ("rss_mb", "threads", "fds", "cpu_share"):
            ends = [w["processes"].get(name, {}).get(metric) for w in windows]  # the value at each window's end
            first, last = (ends[0], ends[-1]) if ends else (None, None)
            if metric == "cpu_share":  # a rate over each window
                out["processes"][name][metric] = trend(mids, ends, first, last)
            else:
                out["processes"][name][metric] = trend(times, [getattr(s, metric) for s in samples], first, last)
    return out


# ---------------------------------------------------------------- printing

def print_header(names: list[str]) -> None:
    procs = "  ".join(f"{n + ' MB/thr/fd/cpu':>25}" for n in names)
    print(f"{'win':>5} {'end s':>6} {'offer':>5} {'done':>4} {'shed':>4} {'busy':>4} {'err':>3} {'lossy':>5} "
          f"{'ties':>4} {'sess':>4} {'p50 s':>6} {'p99 s':>6}  {procs}", flush=True)


def print_window(w: dict, names: list[str], label: str | None = None) -> None:
    latency = w["latency_s"]["psd"] or {"p50": math.nan, "p99": math.nan}
    procs = []
    for name in names:
        p = w["processes"].get(name)
        cpu = f"{p['cpu_share']:.2f}" if p and p["cpu_share"] is not None else "-"
        procs.append(f"{p['rss_mb']:>7.0f}/{p['threads']:>3}/{p['fds']:>4}/{cpu:>4}" if p else "gone")
    sessions = w["edge_sessions_active"]
    print(f"{label or w['window']:>5} {w['end_s']:>6.0f} {w['offered']:>5} {w['completed']:>4} {w['shed']:>4} "
          f"{w['in_flight']:>4} "
          f"{sum(w['errors'].values()):>3} {w['lossy']:>5} {w['near_ties']:>4} "
          f"{'-' if sessions is None else f'{sessions:.0f}':>4} {latency['p50']:>6.2f} {latency['p99']:>6.2f}  "
          + "  ".join(f"{p:>25}" for p in procs) + (f"  errors {w['errors']}" if w["errors"] else ""), flush=True)


def print_summary(results: dict) -> None:
    totals, t = results["totals"], results["trends"]
    print(f"\n{totals['offered']} offered, {totals['completed']} completed ({totals['completed_by_kind']}), "
          f"{totals['shed']} shed, {totals['unfinished']} unfinished, errors {totals['errors'] or 'none'}, "
          f"{totals['lossy']} lossy answers, {totals['near_ties']} near-ties")
    latency, service = totals["psd_latency_s"], totals["psd_service_s"]
    if latency and service:
        print(f"psd latency p50 {latency['p50']:.2f} s, p99 {latency['p99']:.2f} s (service, without waiting for a "
              f"slot: p50 {service['p50']:.2f} s, p99 {service['p99']:.2f} s); request slots busy "
              f"{totals['busy_fraction']:.0%} of the time (saturation: 100%)")
    print(f"{'metric':<28} {'first':>9} {'last':>9} {'slope/min':>10}")
    rows = [(k, v) for k, v in t.items() if k != "processes"]
    rows += [(f"{name} {metric}", v) for name, metrics in t["processes"].items() for metric, v in metrics.items()]
    for name, v in rows:
        cells = [f"{x:>9.3f}" if x is not None else f"{'-':>9}" for x in (v["first"], v["last"])]
        slope = f"{v['slope_per_min']:>+10.4f}" if v["slope_per_min"] is not None else f"{'-':>10}"
        print(f"{name:<28} {cells[0]} {cells[1]} {slope}")


# ---------------------------------------------------------------- the soak

class Soak:
    """Dispatches the arrivals on time, reports each window as it closes, then drains."""

    def __init__(self, args: argparse.Namespace, address: str, drafts: "queue.Queue[DraftEngine]",
                 prompts: list[str], references: list[list[int]], sampler: Sampler, edge: EdgeProcess,
                 clock: Clock, config: dict) -> None:
        self.args, self.address, self.drafts, self.prompts, self.config = args, address, drafts, prompts, config
        self.references, self.sampler, self.edge, self.clock = references, sampler, edge, clock
        self.pool = ThreadPoolExecutor(args.max_concurrency, thread_name_prefix="soak-request")
        self.futures: list[Future] = []
        self.offered: list[Arrival] = []
        self.shed: list[Arrival] = []
        self.windows: list[dict] = []

    def outcomes(self) -> list[Outcome]:
        return [f.result() for f in self.futures if f.done()]

    def dispatch(self, arrival: Arrival) -> None:
        """Submit, unless --max-backlog requests already wait for a free slot (then shed: counted, not run)."""
        self.offered.append(arrival)
        recent = self.futures[-(self.args.max_backlog + self.args.max_concurrency):]  # FIFO: the waiting are last
        waiting = sum(not f.running() and not f.done() for f in recent)
        if waiting >= self.args.max_backlog:
            self.shed.append(arrival)
            return
        self.futures.append(self.pool.submit(run_request, arrival, self.address, self.drafts, self.prompts,
                                             self.references, self.args.max_tokens, self.clock))

    def close_window(self, index: int, start_s: float, end_s: float) -> dict:
        """The window's figures, with the edge's sessions and the requests in flight or waiting at its end."""
        self.sampler.take()
        edge = scrape("127.0.0.1", self.edge.metrics_port) if self.edge.metrics_port else {}
        sessions = total(edge, "tandem_edge_sessions_active") if edge else None
        figures = window_figures(index, start_s, end_s, self.offered, self.shed, self.outcomes(), self.sampler,
                                 sessions)
        return figures | {"in_flight": sum(not f.done() for f in self.futures)}

    def run(self, arrivals: list[Arrival], duration_s: float) -> None:
        names = list(self.sampler.pids)
        print_header(names)
        pending = iter(arrivals)
        upcoming = next(pending, None)
        window_s = self.args.window_s
        index = 0
        while index * window_s < duration_s:
            end_s = min((index + 1) * window_s, duration_s)
            now = self.clock.now()
            if upcoming and upcoming.at_s <= now:
                self.dispatch(upcoming)
                upcoming = next(pending, None)
            elif now >= end_s:
                self.windows.append(self.close_window(index, index * window_s, end_s))
                print_window(self.windows[-1], names)
                write_results(self.args.out, self.results(None))  # partial: a long run that dies still tells
                index += 1
            else:
                time.sleep(min(upcoming.at_s if upcoming else math.inf, end_s) - now)

    def results(self, drain: dict | None) -> dict:
        """Everything measured so far (``partial`` until the drain is done)."""
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()}
        return {"partial": drain is None, "config": config | self.config,
                "totals": totals(self, drain or {"unfinished": None}), "windows": self.windows, "drain": drain,
                "trends": trends(self.windows, self.sampler),
                "requests": [request_record(o) for o in self.outcomes()],
                "samples": {name: [vars(s) for s in samples] for name, samples in self.sampler.samples.items()},
                "elapsed_s": self.clock.now()}

    def drain(self, duration_s: float) -> dict:
        """Wait (at most --drain-s) for the requests still in flight; their figures form the drain row."""
        _, unfinished = wait(self.futures, timeout=self.args.drain_s)
        self.pool.shutdown(wait=not unfinished, cancel_futures=True)
        figures = self.close_window(len(self.windows), duration_s, self.clock.now() + 1e-6)
        figures["unfinished"] = len(unfinished)
        print_window(figures, list(self.sampler.pids), label="drain")
        return figures


def request_record(o: Outcome) -> dict:
    """One request, compactly: when it arrived, started (got a free slot) and ended, and how."""
    return {"index": o.arrival.index, "kind": o.arrival.kind, "prompt": o.arrival.prompt,
            "arrival_s": round(o.arrival.at_s, 3), "started_s": round(o.started_s, 3),
            "finished_s": round(o.finished_s, 3), "latency_s": round(o.latency_s, 3), "tokens": len(o.tokens),
            "error": o.error, "divergence": o.divergence}


def totals(soak: Soak, drain: dict) -> dict:
    outcomes = soak.outcomes()
    ok = [o for o in outcomes if o.error is None]
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            errors[o.error] = errors.get(o.error, 0) + 1
    return {"offered": len(soak.offered), "shed": len(soak.shed), "completed": len(ok),
            "completed_by_kind": {k: sum(o.arrival.kind == k for o in ok) for k in KINDS},
            "unfinished": drain["unfinished"], "errors": errors,
            "error_messages": sorted({f"{o.error}: {o.message}" for o in outcomes if o.error})[:10],
            "lossy": sum(o.lossy for o in ok), "near_ties": sum(o.near_tie for o in ok),
            "divergences": [{"index": o.arrival.index, "kind": o.arrival.kind, "prompt": o.arrival.prompt,
                             **o.divergence} for o in ok if o.divergence][:20],
            "psd_latency_s": percentiles([o.latency_s for o in ok if o.arrival.kind == "psd"]),
            "psd_service_s": percentiles([o.finished_s - o.started_s for o in ok if o.arrival.kind == "psd"]),
            "busy_fraction": sum(o.finished_s - o.started_s for o in outcomes)
            / max(soak.clock.now(), 1e-9) / soak.args.max_concurrency}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of arrivals (default 30)")
    parser.add_argument("--window-s", type=float, default=60.0, help="reporting window in seconds (default 60)")
    parser.add_argument("--rate", type=float, default=0.3, help="requests per second, Poisson (default 0.3)")
    parser.add_argument("--max-concurrency", type=int, default=2, help="requests in flight at most (default 2)")
    parser.add_argument("--max-backlog", type=int, default=8, help="arrivals waiting for a free slot before "
                        "further ones are shed (default 8)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (default 16)")
    parser.add_argument("--edge-only-share", type=float, default=0.1, help="share of edge-only requests (0.1)")
    parser.add_argument("--cancel-share", type=float, default=0.1, help="share of sessions cancelled midway (0.1)")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts (the workload's first N; 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-s", type=float, default=5.0, help="process sampling period (default 5 s)")
    parser.add_argument("--drain-s", type=float, default=120.0, help="wait for in-flight requests (default 120 s)")
    parser.add_argument("--trace", type=Path, help="channel trace (default: the testbed's)")
    parser.add_argument("--tls-dir", type=Path, help="mutual TLS with this folder from `tandem certs init` "
                        "(default: plaintext, TANDEM_INSECURE=1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    if not (args.minutes > 0 and args.window_s > 0 and args.rate > 0 and args.max_concurrency > 0):
        parser.error("--minutes, --window-s, --rate and --max-concurrency must be positive")
    if not 0 <= args.edge_only_share + args.cancel_share < 1:
        parser.error("--edge-only-share + --cancel-share must be in [0, 1)")
    return args


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def soak(args: argparse.Namespace, prompts: list[str], arrivals: list[Arrival], config: dict) -> dict:
    """Daemons up, references computed, the soak run and drained, daemons down; the results."""
    prepared = prepare_models(default_data_dir())
    logs = args.out.parent / f"{args.out.stem}-logs"  # kept: a long soak's daemon logs explain its figures
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        trace = args.trace or testbed_trace()
        edge, link = start_daemons(stack, default_data_dir(), trace, logs, config["transport_env"])
        print(f"edge {edge.address} (log {edge.log_path}), linkemu {link.address}; {len(arrivals)} arrivals "
              f"over {args.minutes:g} min", flush=True)
        drafts: queue.Queue[DraftEngine] = queue.Queue()
        for _ in range(args.max_concurrency):
            drafts.put(LlamaCppDraftEngine(prepared.draft_gguf, n_ctx=1024))
        references = edge_only_references(edge.address, drafts.queue[0], prompts, args.max_tokens)
        clock = Clock()
        sampler = Sampler({"edge": edge.pid, "linkemu": link.pid, "bench": os.getpid()}, clock, args.sample_s)
        sampler.take()
        sampler.start()
        run = Soak(args, link.address, drafts, prompts, references, sampler, edge, clock,
                   config | {"trace": str(trace)})
        run.run(arrivals, args.minutes * 60)
        drain = run.drain(args.minutes * 60)
        sampler.stopping.set()
        return run.results(drain)


def main() -> int:
    args = parse_args()
    env = transport_env(args.tls_dir)
    os.environ.update(env)  # this process's client library (EdgeConnection) reads it too
    prompts = Workload().load_prompts()[:args.prompts]
    shares = {"psd": 1 - args.edge_only_share - args.cancel_share, "edge-only": args.edge_only_share,
              "cancel": args.cancel_share}
    arrivals = schedule(args.rate, args.minutes * 60, args.seed, shares, len(prompts))
    results = soak(args, prompts, arrivals, {"shares": shares, "transport_env": env, "prompts_used": prompts})
    print_summary(results)
    write_results(args.out, results)
    print(f"results in {args.out}")
    t = results["totals"]
    return 0 if not t["errors"] and not t["lossy"] and not t["unfinished"] else 1


if __name__ == "__main__":
    sys.exit(main())
