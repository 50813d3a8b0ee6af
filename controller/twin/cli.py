"""`tandem twin run`: play a scenario in the digital twin under one or more policies, side by side."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from controller.twin.evaluate import BASELINE, DEFAULT_EVALUATED, HEADLINE
from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail


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
    from tandem.trace_format import TraceError

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
               "heuristic_validation_time_in_system_s": result.baseline_validation_time_s,
               "env_runner_nodes": result.env_runner_nodes}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return EXIT_OK


def run_curves(args: argparse.Namespace) -> int:
    from controller.twin.curves import CurvesError, plot_curves

    try:
        print(plot_curves(args.runs, args.out))
    except CurvesError as error:
        return fail(str(error), EXIT_USAGE)
    return EXIT_OK


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
    from tandem.trace_format import TraceError, load_trace

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


def run_twin(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from controller.policies import available, make_policy
    from controller.twin.scenario import ScenarioError, load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import ProfileError, load_profile
    from tandem.trace_format import TraceError, load_trace

    if args.seed < 0:
        return fail("--seed must be non-negative", EXIT_USAGE)
    try:
        scenario = load_scenario(args.scenario)
        trace = load_trace(scenario.trace)
        profile = load_profile(scenario.profile)
        scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
        names = args.policy or sorted(name for name in available() if name != "alternate")
        known = {"parallel": scenario.mode == "psd"}  # tma plans for drafting during verification only in psd
        policies = {name: make_policy(name, seed=args.seed, known=known) for name in names}
        for policy in policies.values():
            policy.check_scenario(scenario)
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
