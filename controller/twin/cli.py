"""`tandem twin run`: play a scenario in the digital twin under one or more policies, side by side."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from controller.twin.evaluate import BASELINE, DEFAULT_EVALUATED, HEADLINE
from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail



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


def add_train_command(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train the mappo policy (RLlib multi-agent PPO, one agent per edge) in the digital twin",
        description="The best heuristic (max-SINR with hysteresis, each user's draft length from the edge model) "
        "decides; one agent per edge, all sharing one permutation-equivariant network, moves its users' draft "
        "lengths by -2..+2 (docs/twin.md). Every episode draws a training trace, a number of users and edges and an "
        "energy weight. Periodically the actor plays full-horizon validation episodes on every validation trace x "
        "seed beside the heuristic; the one with the lowest mean time in system is saved in OUT/best, what `tandem "
        "policy set mappo --checkpoint NAME` (once copied into the controller's policy directory) and `tandem "
        "evaluate --checkpoint OUT/best` load. Progress in OUT/progress.jsonl, TensorBoard logs in OUT/tensorboard. "
        "With --address it runs on an existing Ray cluster.")
    train.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see docs/twin.md)")
    train.add_argument("--iterations", type=int, default=100, help="training iterations (100; each samples "
                       "--batch-size environment steps)")
    train.add_argument("--out", type=Path, help="output folder (default runs/mappo-<scenario name>)")
    train.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local "
                       "Ray on this machine")
    train.add_argument("--train-trace", type=Path, action="append", help="training trace (repeatable; default the "
                       "scenario's)")
    train.add_argument("--validation-trace", type=Path, action="append", help="validation trace (repeatable; "
                       "default the training traces)")
    train.add_argument("--validation-seeds", type=int, default=4, help="arrival seeds per validation trace; at "
                       "least 4 trace x seed pairs in all (4)")
    train.add_argument("--users", type=int, nargs=2, metavar=("LOW", "HIGH"), help="users per episode, drawn in "
                       "[LOW, HIGH] (default: the scenario's)")
    train.add_argument("--edges", type=int, nargs="+", help="edge counts to draw from (default: all the scenario's)")
    train.add_argument("--energy-weights", type=float, nargs="+", default=[0.0], help="energy weights (J^-1 in "
                       "units of requests in the system) to draw from (default 0)")
    train.add_argument("--loads", type=float, nargs="+", help="offered loads (offered work over the edges' batched "
                       "capacity, as in `tandem evaluate`) to draw from per episode (default: the scenario's arrivals)")
    train.add_argument("--episode-slots", type=int, default=300, help="slots per training episode (300; validation "
                       "always plays the scenario's whole duration)")
    train.add_argument("--max-users", type=int, default=24, help="user slots per agent, at least every edge's "
                       "capacity (24)")
    train.add_argument("--batch-size", type=int, default=8192, help="environment steps (twin slots) sampled per "
                       "iteration (8192)")
    train.add_argument("--minibatch-size", type=int, default=4096, help="agent steps per PPO update (4096)")
    train.add_argument("--batch-envs", type=int, default=32, help="episodes the batched twin steps at once (32)")
    train.add_argument("--epochs", type=int, default=8, help="PPO passes over each batch (8)")
    train.add_argument("--gamma", type=float, default=0.99, help="discount (0.99)")
    train.add_argument("--eval-every", type=int, default=10, help="validate every N iterations (10)")
    train.add_argument("--env-runners", type=int, default=0, help="Ray env runners sampling in parallel (0: in "
                       "the driver, right for 2 cores)")
    train.add_argument("--envs-per-runner", type=int, default=1, help="environments each runner steps in turn (1)")
    train.add_argument("--seed", type=int, default=0, help="seed of episodes and networks (0)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pydantic import ValidationError
    from tqdm import tqdm

    from controller.twin.agents import GameError
    from controller.twin.episodes import EpisodeConfig, Episodes
    from controller.twin.scenario import ScenarioError
    from controller.twin.train import TrainSettings, train
    from tandem.config_files import validation_reasons
    from tandem.profiles import ProfileError
    from tandem.traces.format import TraceError

    if min(args.iterations, args.eval_every, args.batch_size, args.minibatch_size, args.epochs,
           args.validation_seeds, args.envs_per_runner) < 1 or min(args.env_runners, args.seed) < 0:
        return fail("--iterations, --eval-every, --batch-size, --minibatch-size, --epochs, --validation-seeds and "
                    "--envs-per-runner must be at least 1; --env-runners and --seed non-negative", EXIT_USAGE)
    try:
        episodes = EpisodeConfig(scenario=args.scenario, traces=args.train_trace or [],
                                 users=tuple(args.users) if args.users else None, edges=args.edges or [],
                                 energy_weights=args.energy_weights, episode_slots=args.episode_slots,
                                 max_users=args.max_users, gamma=args.gamma, loads=args.loads or [],
                                 batch_envs=args.batch_envs)
        checked = Episodes(episodes)  # every input is read and checked before Ray starts
        out = args.out or Path("runs") / f"mappo-{checked.scenario.name}"
        settings = TrainSettings(
            episodes=episodes, validation_traces=args.validation_trace or [], out=out, iterations=args.iterations,
            seed=args.seed, address=args.address, eval_every=args.eval_every, env_runners=args.env_runners,
            envs_per_runner=args.envs_per_runner,
            validation_seeds=tuple(1_000_001 + i for i in range(args.validation_seeds)),
            batch_size=args.batch_size, minibatch_size=args.minibatch_size, epochs=args.epochs)
    except ValidationError as error:
        return fail(f"invalid training settings: {validation_reasons(error)}", EXIT_USAGE)
    except (ScenarioError, TraceError, ProfileError, GameError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    bar = tqdm(total=args.iterations, desc="train", unit="it", file=sys.stderr, disable=args.quiet)

    def progress(iteration: int, row: dict) -> None:
        shown = {"return": row.get("episode_return_mean"), "val s": row.get("validation_time_in_system_s"),
                 "heuristic s": row.get("baseline_validation_time_in_system_s")}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)
        bar.update()

    try:
        result = train(settings, progress)
    except (ScenarioError, TraceError, ProfileError, GameError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    finally:
        bar.close()
    summary = {"out": str(out), "iterations": result.iterations, "env_steps": result.env_steps,
               "agent_steps": result.agent_steps, "seconds": round(result.seconds, 1),
               "peak_rss_mb": round(result.peak_rss_mb), "best_iteration": result.best_iteration,
               "best_validation_time_in_system_s": result.best_validation_time_s,
               "heuristic_validation_time_in_system_s": result.baseline_validation_time_s}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return EXIT_OK


def add_curves_command(commands: argparse._SubParsersAction) -> None:
    curves = commands.add_parser(
        "train-curves", help="plot the learning curves of several `tandem train` runs (one per seed) on one PNG",
        description="Validation mean time in system (each run, and the heuristic it corrects, dashed) and mean "
        "training-episode return against environment steps, from each run folder's progress.jsonl.")
    curves.add_argument("runs", type=Path, nargs="+", help="`tandem train` output folders")
    curves.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    curves.set_defaults(handler=run_curves)


def run_curves(args: argparse.Namespace) -> int:
    from controller.twin.curves import CurvesError, plot_curves

    try:
        print(plot_curves(args.runs, args.out))
    except CurvesError as error:
        return fail(str(error), EXIT_USAGE)
    return EXIT_OK


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="every policy on held-out traces over a grid of layouts, loads, modes and energy weights",
        description="Plays every policy in the digital twin on the same held-out traces and arrival seeds (every "
        "policy gets identical requests) for each cell of the grid (users x edge layouts x offered loads x PSD/SD x "
        "energy weight) and reports mean time in system (unfinished requests counted to the end), completion, "
        "latency of the completed requests, time to first token and device energy with 95%% confidence intervals, "
        "and each policy's paired time-in-system reduction against max-sinr-hysteresis and against the strongest "
        "non-learned policy. A layout of N edges is the scenario's N edges that cover the most user-slots on the "
        "traces; a load is offered work over the layout's batched capacity. Writes OUT/evaluate.json and PNG "
        "plots; --report writes the Markdown report (docs/evaluation.md).")
    evaluate.add_argument("--scenario", type=Path, required=True, help="scenario YAML (its edges, workload, profile)")
    evaluate.add_argument("--trace", type=Path, action="append", required=True, help="held-out trace (repeatable; "
                          "never one the policy was trained or validated on)")
    evaluate.add_argument("--seeds", type=int, default=2, help="arrival seeds per trace (2), from 2000000 on: "
                          "never used in training")
    evaluate.add_argument("--users", type=int, nargs="+", help="user counts (default: the scenario's)")
    evaluate.add_argument("--edges", type=int, nargs="+", default=[3, 4, 5], help="edge counts: each the "
                          "best-covering subset of the scenario's edges (3 4 5)")
    evaluate.add_argument("--loads", type=float, nargs="+", help="offered work / batched capacity, e.g. 0.3 0.6 0.9 "
                          "(default: the scenario's arrivals)")
    evaluate.add_argument("--modes", nargs="+", choices=["psd", "sd"], default=["psd", "sd"])
    evaluate.add_argument("--energy-weights", type=float, nargs="+", default=[0.0, 0.5])
    evaluate.add_argument("--policy", action="append", help="policy to play, name[:key=value,...] (repeatable; "
                          "default: " + ", ".join(DEFAULT_EVALUATED) + ")")
    evaluate.add_argument("--checkpoint", type=Path, help="mappo policy folder (default: the shipped one, "
                          "policies/mappo)")
    evaluate.add_argument("--out", type=Path, default=Path("results/evaluate"), help="folder for JSON and plots")
    evaluate.add_argument("--report", type=Path, help="write the Markdown table here (e.g. docs/evaluation.md)")
    evaluate.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import shlex

    from tqdm import tqdm

    from controller.policies import available
    from controller.policies.checkpoints import SHIPPED_POLICY_DIR
    from controller.policies.mappo import DEFAULT_CHECKPOINT, CheckpointError, LearnedDraftLengths
    from controller.twin.evaluate import (LEARNED, ORACLE, EvaluationError, EvaluationSettings, aggregate,
                                          grid_layouts, headline, policy_spec, run_jobs)
    from controller.twin.load import batched_capacity, device_capacity, with_layout
    from controller.twin.report import markdown, plots
    from controller.twin.scenario import ScenarioError, load_scenario
    from tandem.profiles import ProfileError, load_profile
    from tandem.traces.format import TraceError, load_trace

    policies = tuple(args.policy or DEFAULT_EVALUATED)
    if args.seeds < 1 or args.jobs < 1 or min(args.users or [1]) < 1 or min(args.edges) < 1:
        return fail("--seeds, --jobs, --users and --edges must be at least 1", EXIT_USAGE)
    if any(not (w >= 0 and w < float("inf")) for w in args.energy_weights):
        return fail("--energy-weights must be finite and non-negative", EXIT_USAGE)
    if any(not (0 < load < 100) for load in args.loads or []):
        return fail("--loads must lie in (0, 100)", EXIT_USAGE)
    try:
        names = [policy_spec(policy)[0] for policy in policies]
    except ValueError as error:
        return fail(str(error), EXIT_USAGE)
    unknown = sorted(set(names) - set(available()) - {ORACLE})
    if unknown:
        return fail(f"unknown policies {unknown} (installed: {', '.join(sorted(available()))}, and {ORACLE})",
                    EXIT_USAGE)
    try:
        scenario = load_scenario(args.scenario)
        load_profile(scenario.profile)
        users = args.users or [len(scenario.user_ids())]
        layouts = grid_layouts(scenario, [load_trace(path) for path in args.trace], max(users), args.edges)
        checkpoint = None
        if LEARNED in policies:
            checkpoint = args.checkpoint or SHIPPED_POLICY_DIR / DEFAULT_CHECKPOINT
            LearnedDraftLengths.from_folder(checkpoint).spec.check_capacity_of(scenario)
    except (ScenarioError, TraceError, ProfileError, CheckpointError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    settings = EvaluationSettings(
        scenario=args.scenario, traces=tuple(args.trace), seeds=tuple(2_000_000 + i for i in range(args.seeds)),
        users=tuple(users), edges=tuple(args.edges), modes=tuple(args.modes),
        energy_weights=tuple(args.energy_weights), policies=policies, checkpoint=checkpoint, jobs=args.jobs,
        loads=tuple(args.loads or [None]), layouts=layouts)
    started = time.monotonic()
    with tqdm(total=len(settings.job_list()), desc="evaluate", unit="run", file=sys.stderr,
              disable=args.quiet) as bar:
        results = run_jobs(settings, bar.update)
    try:
        rows = aggregate(settings, results)
    except EvaluationError as error:
        return fail(str(error), EXIT_USAGE)
    headlines = {mode: headline(rows, LEARNED, mode) for mode in settings.modes} if LEARNED in policies else {}
    command = "tandem evaluate " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "tandem evaluate"
    meta = {"command": command, "seconds": time.monotonic() - started,
            "replicates": len(settings.traces) * len(settings.seeds), "traces": [str(p) for p in settings.traces],
            "seeds": list(settings.seeds), "checkpoint": str(checkpoint) if checkpoint else None,
            "layouts": {str(edges): {"edges": list(layout.edges), "coverage": layout.coverage,
                                     "batched_capacity_tokens_per_s": batched_capacity(
                                         with_layout(scenario, layout), load_profile(scenario.profile))}
                        for edges, layout in layouts.items()},
            "device_capacity_tokens_per_s": device_capacity(scenario.model_copy(update={"users": max(users)}),
                                                            load_profile(scenario.profile))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluate.json").write_text(json.dumps({"meta": meta, "headline": headlines, "cells": rows},
                                                       indent=1) + "\n")
    written = plots(rows, args.out)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(rows, headlines, command, meta) + "\n")
    print(json.dumps({"headline": headlines, "json": str(args.out / "evaluate.json"),
                      "plots": [str(p) for p in written], "report": str(args.report) if args.report else None}))
    return EXIT_OK


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
        summary["time_in_system_reduction_vs_baseline"] = (
            1 - summary[HEADLINE] / baseline[HEADLINE] if baseline else None)
    if args.json:
        print(json.dumps({"scenario": scenario.name, "seed": args.seed, "policies": results}))
        return EXIT_OK
    print(f"scenario {scenario.name}, seed {args.seed}, {scenario.duration_slots} slots of {trace.slot_s:g} s")
    print(f"{'policy':<20} {'done':>5} {'left':>5} {'in sys s':>8} {'mean s':>8} {'p95 s':>8} {'ttft s':>8} "
          f"{'energy J':>9} {'moves':>6} {'vs ' + BASELINE:>24}")
    for name, s in results.items():
        reduction = s["time_in_system_reduction_vs_baseline"]
        print(f"{name:<20} {s['completed']:>5} {s['unfinished']:>5} {s[HEADLINE]:>8.3f} {s['mean_latency_s']:>8.3f} "
              f"{s['p95_latency_s']:>8.3f} {s['mean_ttft_s']:>8.3f} {s['mean_energy_j']:>9.2f} {s['migrations']:>6} "
              f"{'' if reduction is None else f'{reduction:+.1%}':>24}")
    return EXIT_OK
