"""How fast can parallel speculative decoding be on a profile, against sd at its best draft length?

A Monte Carlo of one device and one edge with one block in flight (the protocol of device_client/decoding.py),
i.i.d. acceptance alpha per drafted token, the profile's draft time per token and verify time (at the edge's
compute scale), a fixed link round trip, and the bets a device can make while its block is verified:

- sd: draft k, send, wait;
- psd post: bet on a full accept (the drafts ahead survive with alpha^(k+1)); drafting ahead starts a step while
  no verdict has come, up to k + 1 tokens, so a verdict may wait for the step in progress;
- psd pre+adaptive: post, plus a block whose bet failed is one token sent at once, a block whose bet held carries
  every draft made ahead (up to k), and a step ahead starts only when it pays (``step_pays``);
- psd pre+adaptive, two bets: that, plus a second bet on a rejection at the first position with the edge's correction
  guessed right with probability ``--runner-up`` (the draft's runner-up; drafted alongside, at no cost);
- perfect overlap: every bet holds (the bound of device_client/efficiency.py: max(round trip, k t_draft) per
  round).

Each schedule at its best k in 1..8.  Beside them, exact figures (harness/psd_optimum.py): sd's closed form, the
optimal one-chain schedule (every choice of block and of drafting ahead open: the ceiling of every variant but
branch's second chain), that optimum with a block sent after a hold paying no link (an optimistic bound on several
blocks in flight), and the least acceptance at which the optimum reaches --gain over sd.  Prints ms per token and
the ratio to sd; no daemon, no model.

    .venv/bin/python bench/psd_ceiling.py [--profile profiles/phone-1b-gpu-8b.yaml] [--rtt-ms 20]

``--from-run results/psd_profile_bench.json`` instead holds a run of bench/psd.py to the optimum of its own links
(their acceptance, draft time and round trip): the gain each variant measured against the most the model allows.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from bootstrap import REPO, RESULTS  # first: the repository on sys.path, one OpenMP thread

from device_client.speculation import step_pays
from harness.psd_optimum import acceptance_for_gain, gain_ceiling, model_alpha, runs_ceiling
from tandem.profiles import load_profile

SCHEDULES = ("sd", "post", "pre", "pre2", "overlap")
PEAK_SCALES = [0.01 * 100 ** (i / 40) for i in range(41)]  # edge compute shares x0.01 .. x1, geometric
TOKENS = 50_000  # per schedule and setting: the means are then exact to about 1%


def simulate(alpha: float, k: int, draft_s: float, round_trip, schedule: str, runner_up: float, seed: int) -> float:
    """Mean seconds per committed token of ``schedule`` ("sd", "post", "pre", "pre2", "overlap")."""
    rng = random.Random(seed)
    seconds = tokens = 0.0
    ready = 0  # drafts made ahead that survived the verdict
    while tokens < TOKENS:
        pre = schedule in ("pre", "pre2")
        block = (1 if ready == 0 else min(k, ready)) if pre else k
        flight = round_trip(block)
        accepted = 0
        while accepted < block and rng.random() < alpha:
            accepted += 1
        tokens += accepted + 1
        if schedule == "overlap":  # the next block drafted while this one is in flight, whatever the verdict
            seconds += max(flight, k * draft_s) if tokens > accepted + 1 else k * draft_s + flight
            continue
        seconds += max(0, block - ready) * draft_s
        if schedule == "sd":
            seconds += flight
            ready = 0
            continue
        # Drafting ahead: a step starts while no verdict has come, up to the bet's k + 1 tokens (with pre, only when
        # it pays: device_client/speculation.step_pays); the verdict is taken when the step in progress ends.
        ahead = 0
        while ahead < k + 1 and ahead * draft_s < flight and (
                not pre or step_pays(alpha ** (block + 1), draft_s, flight - ahead * draft_s, 2 if ahead == 0 else 1)):
            ahead += 1
        seconds += max(flight, ahead * draft_s)
        if accepted == block and rng.random() < alpha:  # the full accept bet on, and its bonus guessed
            ready = min(ahead - 1, k) if ahead >= 1 else 0
        elif schedule == "pre2" and accepted == 0 and rng.random() < runner_up:
            ready = min(ahead, k)  # the second bet, drafted alongside the first (a batch of two on the phone)
        else:
            ready = 0
    return seconds / tokens


def exact(alpha: float, draft_s: float, round_trip, link_s: float) -> dict:
    """sd and the optimal schedule, exactly, with blocks of up to 8; and the optimum if held rounds paid no link."""
    plain = gain_ceiling(alpha, draft_s, round_trip, 8)
    pipelined = gain_ceiling(alpha, draft_s, round_trip, 8, round_trip_after_hold=lambda k: round_trip(k) - link_s)
    return {"sd_exact_s_per_token": plain["sd_s_per_token"], "optimal": plain,
            "optimal_link_free_after_hold": pipelined}


def from_run(path: Path, out: Path) -> int:
    """Each link of a recorded bench/psd.py run against the optimum at that link's acceptance, draft time and round
    trip (the bench's closed forms take the round trip as fixed).  The optimum's ratio is over the model's sd at its
    best length, the measured one over the run's sd: each the strongest sd of its own."""
    try:
        run = json.loads(path.read_text())
        links = run["links"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {path} is not a bench/psd.py result ({error})", file=sys.stderr)
        return 2
    longest = int(run.get("args", {}).get("draft_length", 4))
    report = {"run": str(path), "longest": longest, "links": {}}
    for name, link in links.items():
        c = link.get("ceilings") or {}
        sd_rate = link.get("rows", {}).get("sd", {}).get("tokens_per_s")
        if not (c.get("alpha") is not None and c.get("draft_token_s") and c.get("round_trip_s") and sd_rate):
            print(f"{name} link: no sd figures or ceilings recorded; skipped")
            continue

        def round_trip(k: int, rt=c["round_trip_s"]) -> float:  # the bench's closed forms take it as fixed
            return rt

        ceiling = gain_ceiling(model_alpha(c["alpha"]), c["draft_token_s"], round_trip, longest)
        print(f"{name} link: alpha {c['alpha']:.3f}, {c['draft_token_s'] * 1000:.1f} ms per draft token, round trip "
              f"{c['round_trip_s'] * 1000:.1f} ms: the optimum is {ceiling['optimal_psd_s_per_token'] * 1000:.1f} ms "
              f"per token, x{ceiling['optimal_over_sd']:.3f} over sd (blocks up to {longest})")
        blocks = [(a, k) for r in link.get("runs", {}).get("sd", [])
                  for a, k in zip(r.get("accepted_lengths", []), r.get("block_lengths", []))]
        # Acceptance in runs, fitted to sd's blocks (recorded since 2026-12-05).
        in_runs = runs_ceiling([a for a, _ in blocks], [k for _, k in blocks], c["draft_token_s"], round_trip, longest)
        if in_runs is not None:
            print(f"  with acceptance in runs (a block's first token {in_runs['first_alpha']:.3f}, after an accepted "
                  f"one {in_runs['alpha']:.3f}): sd {in_runs['sd_s_per_token'] * 1000:.1f} ms per token (measured "
                  f"{1000 / sd_rate:.1f}), the optimum {in_runs['optimal_psd_s_per_token'] * 1000:.1f}, "
                  f"x{in_runs['optimal_over_sd']:.3f} over sd")
        gain = ceiling["optimal_over_sd"] - 1
        modes = {}
        for mode, row in link["rows"].items():
            if not mode.startswith("psd:") or not row.get("tokens_per_s"):
                continue
            medians = row["tokens_per_s"] / sd_rate
            paired = row.get("vs_sd") or {}
            share = (medians - 1) / gain if gain > 1e-3 else None  # no gain to share when psd cannot beat sd
            modes[mode] = {"ratio_of_medians": medians, "paired": paired, "share_of_optimal_gain": share}
            ci = paired.get("ci95") or [float("nan")] * 2
            ratio = paired.get("ratio")
            print(f"  {mode:<24} medians x{medians:.3f} ("
                  + ("-" if share is None else f"{share:.0%}") + " of the optimal gain"
                  + (", a second chain: outside the model" if "branch" in mode else "") + "), paired geometric mean "
                  + ("-" if ratio is None else f"x{ratio:.3f} ({ci[0]:.2f}-{ci[1]:.2f})"))
        report["links"][name] = {"ceiling": ceiling, "ceiling_in_runs": in_runs, "modes": modes}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "phone-1b-gpu-8b.yaml")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="link round trip (default 20: the bench's links)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    parser.add_argument("--compute-scales", type=float, nargs="+", default=[0.05, 0.1, 1.0])
    parser.add_argument("--runner-up", type=float, default=0.4,
                        help="how often the draft's runner-up is the edge's correction (default 0.4)")
    parser.add_argument("--gain", type=float, default=1.3,
                        help="report the least acceptance at which the optimum reaches this gain over sd (1.3)")
    parser.add_argument("--from-run", type=Path, metavar="JSON",
                        help="hold a bench/psd.py result to the optimum of its links instead")
    parser.add_argument("--out", type=Path, help="default results/psd_ceiling.json (--from-run: psd_optimum.json)")
    args = parser.parse_args()
    if args.from_run:
        return from_run(args.from_run, args.out or RESULTS / "psd_optimum.json")
    if not all(0 <= a < 1 for a in args.alphas) or args.rtt_ms < 0 or not all(s > 0 for s in args.compute_scales):
        parser.error("--alphas must be in [0, 1), --rtt-ms >= 0, --compute-scales > 0")
    profile = load_profile(args.profile)
    draft_s = profile.device.draft_seconds_per_token
    link_s = args.rtt_ms / 1000
    rows = []
    print(f"{profile.name}: {draft_s * 1000:.0f} ms per draft token, link round trip {args.rtt_ms:g} ms; ms per "
          "token at each schedule's best k (ratio to sd at its best k)")

    def edge_round_trip(scale: float):
        """The round trip of a block of k tokens to an edge with ``scale`` of the profile's compute."""
        return lambda k: link_s + float(profile.edge.block_seconds(k)) / scale

    for scale in args.compute_scales:
        round_trip = edge_round_trip(scale)
        needed = acceptance_for_gain(args.gain, draft_s, round_trip, 8)
        print(f"edge x{scale:g}: " + (f"the optimum reaches x{args.gain:g} over sd from acceptance {needed:.3f}"
                                      if needed is not None else
                                      f"the optimum reaches x{args.gain:g} over sd at no acceptance up to 0.99"))
        for alpha in args.alphas:
            row = {"compute_scale": scale, "alpha": alpha, "round_trip_k4_s": round_trip(4),
                   f"acceptance_for_x{args.gain:g}": needed}
            for schedule in SCHEDULES:
                best = min((simulate(alpha, k, draft_s, round_trip, schedule, args.runner_up, seed=k), k)
                           for k in range(1, 9))
                row[schedule] = {"s_per_token": best[0], "k": best[1]}
            row.update(exact(alpha, draft_s, round_trip, link_s))
            sd = row["sd"]["s_per_token"]
            figures = [f"{name} {row[name]['s_per_token'] * 1000:.0f} (k={row[name]['k']}, "
                       f"x{sd / row[name]['s_per_token']:.2f})" for name in SCHEDULES]
            print(f"  alpha {alpha:g} (round trip at k=4 {row['round_trip_k4_s'] * 1000:.0f} ms): "
                  + ", ".join(figures))
            optimal, free = row["optimal"], row["optimal_link_free_after_hold"]
            print(f"    exact: sd {row['sd_exact_s_per_token'] * 1000:.1f}, optimal psd "
                  f"{optimal['optimal_psd_s_per_token'] * 1000:.1f} (x{optimal['optimal_over_sd']:.3f}), with no "
                  f"link after a hold {free['optimal_psd_s_per_token'] * 1000:.1f} (x{free['optimal_over_sd']:.3f})")
            rows.append(row)
    peaks = {}
    for alpha in args.alphas:  # the edge share at which psd gains most: the round trip a few draft steps long
        def gain_at(scale: float) -> float:
            return gain_ceiling(alpha, draft_s, edge_round_trip(scale), 8)["optimal_over_sd"]

        scale = max(PEAK_SCALES, key=gain_at)
        peaks[str(alpha)] = {"compute_scale": scale, "optimal_over_sd": gain_at(scale),
                             "round_trip_k4_s": edge_round_trip(scale)(4)}
        print(f"alpha {alpha:g}: over edge shares x0.01-x1 the optimum gains most at x{scale:.3f} (round trip at k=4 "
              f"{peaks[str(alpha)]['round_trip_k4_s'] * 1000:.0f} ms): x{peaks[str(alpha)]['optimal_over_sd']:.3f}")
    out = args.out or RESULTS / "psd_ceiling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": profile.name, "rtt_ms": args.rtt_ms, "runner_up": args.runner_up,
                               "rows": rows, "peaks_over_edge_share": peaks}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
