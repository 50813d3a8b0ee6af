"""MAPPO: RLlib's PPO in multi-agent mode on the twin's draft-length game (``controller/twin/agents.py``).

Every edge's agent maps to one module, ``edge`` (parameter sharing: the edges are alike, and the module is
permutation-equivariant over members, so one training covers any number of users and 3, 4 or 5 edges).  The module
is ``set_module.SetPolicyModule``; the action is a residual over the best heuristic, so training starts from it.
Each iteration samples the environment and runs PPO's epochs over the batch; every ``eval_every`` iterations the
current actor plays full-horizon validation episodes (the scenario's whole duration, drain included) on every
validation trace × seed pair next to the heuristic it corrects, and the checkpoint with the lowest mean time in
system (every request, unfinished ones counted to the end) is kept, its completion reported beside it.

Output folder:
    checkpoint/             the latest RLlib checkpoint (Algorithm.save_to_path)
    best/                   the actor of the best iteration by validation time in system (what ``mappo`` loads)
    tensorboard/            TensorBoard event files (returns, losses, validation)
    progress.jsonl          one line per iteration
    curves.png              validation time in system and training return against environment steps
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from controller.policies import make_policy
from controller.policies.checkpoints import network_spec
from controller.policies.draft_agent import CHOICES, EDGE_FEATURES, USER_FEATURES
from controller.policies.mappo import MODULE_ID, LearnedDraftLengths, prior_policy
from controller.twin.curves import plot_curves
from controller.twin.episodes import EpisodeConfig, Episodes

BASELINE = "max-sinr-hysteresis:draft_lengths=tuned"  # the heuristic the actor corrects
MIN_VALIDATION_EPISODES = 4


@dataclass(frozen=True)
class TrainSettings:
    episodes: EpisodeConfig
    validation_traces: list[Path]
    out: Path
    iterations: int = 100
    seed: int = 0
    address: str | None = None
    eval_every: int = 10
    validation_seeds: tuple[int, ...] = (1_000_001, 1_000_002, 1_000_003, 1_000_004)
    env_runners: int = 0  # 0: sample in the driver (2 cores here); more on a cluster
    envs_per_runner: int = 1
    hidden: int = 64
    batch_size: int = 8192  # environment steps (twin slots) per iteration
    minibatch_size: int = 4096  # agent steps per update
    epochs: int = 8  # PPO passes over each batch: every agent-step is used in this many updates
    lr: float = 3e-4
    entropy: float = 0.001  # small: the actor starts at the heuristic and explores near it


@dataclass
class TrainResult:
    iterations: int
    env_steps: int
    agent_steps: int
    seconds: float
    peak_rss_mb: float
    best_iteration: int | None
    best_validation_time_s: float | None
    baseline_validation_time_s: float | None
    history: list[dict] = field(default_factory=list)
    env_runner_nodes: list[str] = field(default_factory=list)  # the Ray nodes the remote env runners ran on


def ppo_config(settings: TrainSettings, agents_per_episode: int):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from controller.twin.rllib_env import TwinMultiAgentEnv
    from controller.twin.set_module import SetPolicyModule

    env_config = settings.episodes.model_dump(mode="json") | {"seed": settings.seed}
    module = RLModuleSpec(module_class=SetPolicyModule, model_config={
        "user_features": USER_FEATURES, "edge_features": EDGE_FEATURES, "hidden": settings.hidden,
        "choices": CHOICES, "max_users": settings.episodes.max_users})
    return (
        PPOConfig()
        .environment(TwinMultiAgentEnv, env_config=env_config)
        .framework("torch")
        .env_runners(num_env_runners=settings.env_runners, num_envs_per_env_runner=settings.envs_per_runner)
        .training(lr=settings.lr, gamma=settings.episodes.gamma, lambda_=0.95,
                  train_batch_size_per_learner=max(1, settings.batch_size * agents_per_episode),
                  minibatch_size=settings.minibatch_size,
                  num_epochs=settings.epochs, entropy_coeff=settings.entropy, clip_param=0.2, vf_clip_param=100.0,
                  use_kl_loss=False)
        # Counted in agent steps: a batch then holds what the learner's minibatches (agent steps) split.
        .multi_agent(policies={MODULE_ID}, policy_mapping_fn=lambda agent, episode, **kw: MODULE_ID,
                     count_steps_by="agent_steps")
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={MODULE_ID: module}))
        .reporting(min_sample_timesteps_per_iteration=0, min_time_s_per_iteration=0)
        .debugging(seed=settings.seed, log_level="ERROR")
    )


@dataclass(frozen=True)
class Validation:
    time_in_system_s: float  # mean over the episodes of their mean time in system
    completion: float  # completed / arrived, over every episode


def validate(episodes: Episodes, traces: list, seeds: tuple[int, ...], policy_of) -> Validation:
    """Full-horizon episodes (the scenario's whole duration, its drain included) on every trace × seed."""
    from controller.twin.simulator import DigitalTwin

    times, completed, arrived = [], 0, 0
    for trace in traces:
        for seed in seeds:
            twin = DigitalTwin(episodes.full_scenario, trace, episodes.profile, seed=seed)
            summary = twin.run(policy_of(seed)).summary()
            times.append(summary.mean_time_in_system_s)
            completed, arrived = completed + summary.completed, arrived + summary.completed + summary.unfinished
    return Validation(float(np.mean(times)), completed / max(arrived, 1))


def train(settings: TrainSettings, progress: Callable[[int, dict], None] = lambda i, row: None) -> TrainResult:
    """Run MAPPO; raises GameError/ScenarioError/TraceError/ProfileError (bad inputs) before Ray starts."""
    import ray
    import torch
    from tensorboardX import SummaryWriter

    from controller.twin.set_module import export_actor
    from tandem.trace_format import load_trace

    os.environ["OMP_NUM_THREADS"] = "1"  # 10-20x faster for these small networks on a few cores
    torch.set_num_threads(1)
    episodes = Episodes(settings.episodes)  # validates scenario, traces and profile here, with a clear error
    validation = [load_trace(path) for path in settings.validation_traces] or episodes.traces
    for trace in validation:
        episodes.full_scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
    if len(validation) * len(settings.validation_seeds) < MIN_VALIDATION_EPISODES:
        raise ValueError(f"validation needs at least {MIN_VALIDATION_EPISODES} trace x seed pairs, got "
                         f"{len(validation)} x {len(settings.validation_seeds)}")
    settings.out.mkdir(parents=True, exist_ok=True)
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    if settings.address:
        ray.init(address=settings.address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # "local": a Ray of its own, never a cluster some earlier `ray start` left recorded in /tmp/ray.
        ray.init(address="local", num_cpus=max(2, settings.env_runners + 1), include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, configure_logging=False)
    started = time.monotonic()
    best_time, best_iteration, history, writer, runner_nodes = None, None, [], None, []
    network = network_spec(settings.hidden)
    try:
        writer = SummaryWriter(str(settings.out / "tensorboard"))
        baseline = validate(episodes, validation, settings.validation_seeds, prior_policy)
        algorithm = ppo_config(settings, len(episodes.agents)).build_algo()  # every agent acts each step (rllib_env.py)
        # Where sampling runs (on a cluster: spread over its nodes, as their CPUs allow).
        runner_nodes = sorted(algorithm.env_runner_group.foreach_env_runner(
            lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=False))
        with (settings.out / "progress.jsonl").open("w") as log:
            for iteration in range(1, settings.iterations + 1):
                result = algorithm.train()
                row = _row(iteration, result, time.monotonic() - started, settings.episodes.batch_envs)
                if iteration % settings.eval_every == 0 or iteration == settings.iterations:
                    actor = LearnedDraftLengths.from_tensors(export_actor(algorithm.get_module(MODULE_ID)), network,
                                                             episodes.spec)
                    checked = validate(episodes, validation, settings.validation_seeds,
                                       lambda seed: make_policy("mappo", seed, known={"actor": actor}))
                    row |= {"validation_time_in_system_s": checked.time_in_system_s,
                            "validation_completion": checked.completion,
                            "baseline_validation_time_in_system_s": baseline.time_in_system_s,
                            "baseline_validation_completion": baseline.completion}
                    algorithm.save_to_path(str((settings.out / "checkpoint").resolve()))
                    # A tie keeps the later actor: as good on validation, and trained longer.
                    if best_time is None or checked.time_in_system_s <= best_time:
                        best_time, best_iteration = checked.time_in_system_s, iteration
                        _replace_folder(settings.out / "best", lambda folder: actor.save(folder, {
                            "scenario": episodes.scenario.name, "iteration": iteration,
                            "env_steps": row.get("env_steps"), "validation_time_in_system_s": best_time,
                            "validation_completion": checked.completion,
                            "baseline": BASELINE, "baseline_validation_time_in_system_s": baseline.time_in_system_s,
                            "episodes": settings.episodes.model_dump(mode="json")}))
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "iteration":
                        writer.add_scalar(key, value, row.get("env_steps", iteration))
                log.write(json.dumps(row) + "\n")
                log.flush()
                history.append(row)
                progress(iteration, row)
        algorithm.stop()
    finally:
        if writer is not None:
            writer.close()
        ray.shutdown()
        if history:  # an interrupted run too: its curves so far, never at the cost of the run's own error
            try:
                plot_curves([settings.out], settings.out / "curves.png")
            except Exception as error:  # noqa: BLE001 - a plot must not hide why training stopped
                print(f"tandem train: could not plot the curves: {error}", file=sys.stderr)
    last = history[-1] if history else {}
    return TrainResult(
        iterations=len(history), env_steps=int(last.get("env_steps", 0)), agent_steps=int(last.get("agent_steps", 0)),
        seconds=time.monotonic() - started, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        best_iteration=best_iteration, best_validation_time_s=best_time,
        baseline_validation_time_s=baseline.time_in_system_s, history=history, env_runner_nodes=runner_nodes)


def _replace_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint beside ``folder``, then swap it in: an interruption never leaves no best actor."""
    fresh = folder.with_name(folder.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    write(fresh)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _row(iteration: int, result: dict, seconds: float, batch_envs: int) -> dict:
    """One line of progress; ``env_steps`` counts twin slots (RLlib's steps × the episodes of a batch) and the
    return is one episode's (RLlib's episode is a batch of them)."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get(MODULE_ID, {})
    batch_return = runners.get("episode_return_mean")
    row = {"iteration": iteration, "seconds": round(seconds, 1),
           "env_steps": runners.get("num_env_steps_sampled_lifetime", 0) * batch_envs,
           "agent_steps": runners.get("num_agent_steps_sampled_lifetime", {}),
           # None (left out) while no episode has ended yet: RLlib reports NaN for an empty window.
           "episode_return_mean": batch_return / batch_envs if batch_return is not None and np.isfinite(batch_return)
           else None}
    if isinstance(row["agent_steps"], dict):
        row["agent_steps"] = sum(row["agent_steps"].values())
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "vf_explained_var"):
        if key in learner:
            row[key] = float(learner[key])
    return {key: value for key, value in row.items() if value is not None}

