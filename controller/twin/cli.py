"""`tandem twin run`: play a scenario in the digital twin under one or more policies, side by side."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail

BASELINE = "max-sinr-equal"


def add_twin_commands(commands: argparse._SubParsersAction) -> None:
    twin = commands.add_parser("twin", help="the digital twin: policies on a scenario, without daemons")
    actions = twin.add_subparsers(dest="twin_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="play a scenario under each policy and compare latency, time to first token and energy",
        description="Slot by slot on the scenario's channel trace and hardware profile (docs/twin.md): each policy "
        "decides every slot, the twin plays every user's speculative-decoding rounds with the same latency model "
        "the policies use. Deterministic for a seed; every policy sees the same requests.")
    run.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see docs/twin.md)")
    run.add_argument("--policy", action="append", help=f"policy to play (repeatable; default: every installed one "
                     f"but the diagnostic `alternate`); reductions are against {BASELINE}")
    run.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and acceptance (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=run_twin)


def add_profile_command(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser(
        "profile", help="measure this machine's draft and target engines into a hardware profile",
        description="Measures the llama.cpp draft (decode step, prefill), the target engine (block verification "
        "by length, batch curve, prefill) and the draft's acceptance of the target's greedy answers on a prompt set, "
        "and writes a profile file (schema: tandem/profiles.py, docs/twin.md). Power cannot be measured here: "
        "give it with --draft-power-w / --transmit-power-w (recorded as assumptions).")
    profile.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp", help="target engine")
    profile.add_argument("--out", type=Path, help="profile file to write (default profiles/cpu-<engine>.yaml)")
    profile.add_argument("--name", help="profile name (default cpu-<engine>)")
    profile.add_argument("--prompts", type=Path, default=Path(__file__).resolve().parents[2] / "configs" /
                         "prompts.txt", help="one prompt per line (default configs/prompts.txt)")
    profile.add_argument("--repeats", type=int, default=5, help="timings per figure, the median is kept (5)")
    profile.add_argument("--answer-tokens", type=int, default=48, help="target answer length per prompt (48)")
    profile.add_argument("--draft-power-w", type=float, default=15.0, help="assumed power while drafting (15 W)")
    profile.add_argument("--transmit-power-w", type=float, default=0.2, help="assumed radio power (0.2 W)")
    profile.add_argument("--data-dir", type=Path, help="where prepared models live (default ~/.cache/tandem)")
    profile.set_defaults(handler=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    import platform

    from controller.twin.measure import BATCHES, MeasureSettings, run_measure
    from edge_server.config import EdgeConfig
    from edge_server.engines import make_engine
    from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, load_prepared
    from tandem.profiles import save_profile

    if args.repeats < 1 or args.answer_tokens < 2:
        return fail("--repeats must be at least 1 and --answer-tokens at least 2", EXIT_USAGE)
    if not (0 <= args.draft_power_w <= 1000 and 0 <= args.transmit_power_w <= 100):
        return fail("--draft-power-w must lie in [0, 1000] and --transmit-power-w in [0, 100]", EXIT_USAGE)
    try:
        lines = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    except OSError as error:
        return fail(f"cannot read prompts {args.prompts}: {error.strerror}", EXIT_USAGE)
    if not lines:
        return fail(f"{args.prompts} holds no prompt", EXIT_USAGE)
    data_dir = args.data_dir or default_data_dir()
    try:
        prepared = load_prepared(data_dir / "models" / DEFAULT_MODEL_NAME)
    except ModelError as error:
        return fail(str(error), EXIT_USAGE)
    from device_client.draft import LlamaCppDraftEngine

    draft = LlamaCppDraftEngine(prepared.draft_gguf)
    prompts = [draft.encode_chat(line) for line in lines]
    # A warm context per concurrent block, as an edge sized for the batch would have (fewer would re-prefill).
    engine = make_engine(EdgeConfig(engine=args.engine, data_dir=data_dir, llamacpp={"slots": max(BATCHES)}))
    name = args.name or f"cpu-{args.engine}"
    host = f"{platform.node()} ({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}"
    profile = run_measure(engine, draft, prepared.draft_gguf.name, prompts, name, host,
                          MeasureSettings(args.repeats, args.answer_tokens, args.draft_power_w,
                                          args.transmit_power_w),
                          lambda step: print(f"[profile] {step}", file=sys.stderr, flush=True))
    out = args.out or Path("profiles") / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(profile, out)
    print(f"wrote {out}: draft {profile.device.draft_seconds_per_token * 1000:.2f} ms/token, verify k=4 "
          f"{profile.edge.block_seconds(4) * 1000:.2f} ms, acceptance {profile.acceptance.per_token:.2f}")
    return EXIT_OK


def run_twin(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from controller.policies import available, make_policy
    from controller.twin.scenario import ScenarioError, load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import ProfileError, load_profile
    from tandem.traces.format import TraceError, load_trace

    if args.seed < 0:
        return fail("--seed must be non-negative", EXIT_USAGE)
    try:
        scenario = load_scenario(args.scenario)
        trace = load_trace(scenario.trace)
        profile = load_profile(scenario.profile)
        scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
        names = args.policy or sorted(name for name in available() if name != "alternate")
        policies = {name: make_policy(name, seed=args.seed) for name in names}
    except (ScenarioError, TraceError, ProfileError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    results = {}
    for name, policy in policies.items():
        twin = DigitalTwin(scenario, trace, profile, seed=args.seed)
        with tqdm(total=scenario.duration_slots, desc=name, unit="slot", file=sys.stderr,
                  disable=args.quiet or args.json) as bar:
            while not twin.finished:
                twin.step(policy.decide(twin.observation()))
                bar.update()
        results[name] = twin.summary().as_dict()
    baseline = results.get(BASELINE)
    for summary in results.values():
        summary["latency_reduction_vs_baseline"] = (
            1 - summary["mean_latency_s"] / baseline["mean_latency_s"] if baseline else None)
    if args.json:
        print(json.dumps({"scenario": scenario.name, "seed": args.seed, "policies": results}))
        return EXIT_OK
    print(f"scenario {scenario.name}, seed {args.seed}, {scenario.duration_slots} slots of {trace.slot_s:g} s")
    print(f"{'policy':<16} {'done':>5} {'left':>5} {'mean s':>8} {'p95 s':>8} {'ttft s':>8} {'energy J':>9} "
          f"{'moves':>6} {'vs ' + BASELINE:>20}")
    for name, s in results.items():
        reduction = s["latency_reduction_vs_baseline"]
        print(f"{name:<16} {s['completed']:>5} {s['unfinished']:>5} {s['mean_latency_s']:>8.3f} "
              f"{s['p95_latency_s']:>8.3f} {s['mean_ttft_s']:>8.3f} {s['mean_energy_j']:>9.2f} {s['migrations']:>6} "
              f"{'' if reduction is None else f'{reduction:+.1%}':>20}")
    return EXIT_OK
