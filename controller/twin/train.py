"""MASAC: RLlib's SAC in multi-agent mode on the twin's allocation game (association by TMA).

Every edge's agent maps to one module, ``edge`` (parameter sharing: the edges are alike, and a shared module
serves any number of them, so one training covers 3, 4 or 5 edges).  Each iteration samples the environment
and updates the actor, the twin Q-networks and the entropy weight (SAC, Haarnoja et al. 2018); every
``eval_every`` iterations the current actor plays the validation traces in the twin as ``tma-masac`` (the same
code the controller runs) next to ``tma-opt``, and the checkpoint with the lowest validation latency is kept.

Output folder:
    checkpoint/             the latest RLlib checkpoint (Algorithm.save_to_path)
    best/                   the actor of the best iteration by validation latency (what ``tma-masac`` loads)
    tensorboard/            TensorBoard event files (returns, losses, validation latency)
    progress.jsonl          one line per iteration
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from controller.policies.masac import MODULE_ID, LearnedShares
from controller.twin.episodes import EpisodeConfig, Episodes

BASELINE = "tma-opt"


@dataclass(frozen=True)
class TrainSettings:
    episodes: EpisodeConfig
    validation_traces: list[Path]
    out: Path
    iterations: int = 100
    seed: int = 0
    address: str | None = None
    eval_every: int = 10
    validation_seeds: tuple[int, ...] = (1_000_001,)
    env_runners: int = 0  # 0: sample in the driver (2 cores here); more on a cluster
    hidden: tuple[int, ...] = (256, 256)
    batch_size: int = 256
    learning_starts: int = 1000
    steps_per_update: int = 8  # environment steps sampled between two SAC updates (each of batch_size samples)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.95


@dataclass
class TrainResult:
    iterations: int
    env_steps: int
    agent_steps: int
    seconds: float
    peak_rss_mb: float
    best_iteration: int | None
    best_validation_latency_s: float | None
    baseline_validation_latency_s: float | None
    history: list[dict] = field(default_factory=list)


def sac_config(settings: TrainSettings):
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from controller.twin.rllib_env import TwinMultiAgentEnv

    env_config = settings.episodes.model_dump(mode="json") | {"seed": settings.seed}
    return (
        SACConfig()
        .environment(TwinMultiAgentEnv, env_config=env_config)
        .framework("torch")
        .env_runners(num_env_runners=settings.env_runners, num_envs_per_env_runner=1,
                     rollout_fragment_length=settings.steps_per_update)
        .training(
            actor_lr=settings.actor_lr, critic_lr=settings.critic_lr, alpha_lr=3e-4, gamma=settings.gamma,
            initial_alpha=0.1, train_batch_size_per_learner=settings.batch_size,
            num_steps_sampled_before_learning_starts=settings.learning_starts,
            replay_buffer_config={"type": "MultiAgentEpisodeReplayBuffer", "capacity": 200_000},
        )
        .multi_agent(policies={MODULE_ID}, policy_mapping_fn=lambda agent, episode, **kw: MODULE_ID)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(settings.hidden), fcnet_activation="relu"))
        .reporting(min_sample_timesteps_per_iteration=200, min_time_s_per_iteration=0)
        .debugging(seed=settings.seed, log_level="ERROR")
    )


def validation_latency(episodes: Episodes, traces: list, seeds: tuple[int, ...], decide_with) -> float:
    """Mean end-to-end latency (s) over validation traces and seeds, the scenario's full users and edges."""
    from controller.twin.simulator import DigitalTwin

    latencies = []
    for trace in traces:
        for seed in seeds:
            twin = DigitalTwin(episodes.scenario, trace, episodes.profile, seed=seed)
            latencies.append(twin.run(decide_with()).summary().mean_latency_s)
    return float(np.mean(latencies))


def train(settings: TrainSettings, progress: Callable[[int, dict], None] = lambda i, row: None) -> TrainResult:
    """Run MASAC; raises GameError/ScenarioError/TraceError/ProfileError (bad inputs) before Ray starts."""
    import ray
    import torch
    from tensorboardX import SummaryWriter

    from controller.policies import make_policy
    from controller.policies.masac import TmaMasac
    from tandem.traces.format import load_trace

    os.environ["OMP_NUM_THREADS"] = "1"  # 10-20x faster for these small networks on a few cores
    torch.set_num_threads(1)
    episodes = Episodes(settings.episodes)  # validates scenario, traces and profile here, with a clear error
    validation = [load_trace(path) for path in settings.validation_traces] or episodes.traces
    for trace in validation:
        episodes.scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
    parallel = episodes.scenario.mode == "psd"
    settings.out.mkdir(parents=True, exist_ok=True)
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    if settings.address:
        ray.init(address=settings.address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=max(2, settings.env_runners + 1), include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, configure_logging=False)
    writer = SummaryWriter(str(settings.out / "tensorboard"))
    started = time.monotonic()
    baseline = validation_latency(episodes, validation, settings.validation_seeds,
                                  lambda: make_policy(BASELINE, parallel=parallel))
    best_latency, best_iteration, history = None, None, []
    try:
        algorithm = sac_config(settings).build_algo()
        with (settings.out / "progress.jsonl").open("w") as log:
            for iteration in range(1, settings.iterations + 1):
                result = algorithm.train()
                row = _row(iteration, result, time.monotonic() - started)
                if iteration % settings.eval_every == 0 or iteration == settings.iterations:
                    actor = LearnedShares.from_module(algorithm.get_module(MODULE_ID), episodes.spec)
                    row["validation_latency_s"] = validation_latency(
                        episodes, validation, settings.validation_seeds,
                        lambda: TmaMasac(actor=actor, parallel=parallel))
                    row["baseline_validation_latency_s"] = baseline
                    algorithm.save_to_path(str((settings.out / "checkpoint").resolve()))
                    if best_latency is None or row["validation_latency_s"] < best_latency:
                        best_latency, best_iteration = row["validation_latency_s"], iteration
                        shutil.rmtree(settings.out / "best", ignore_errors=True)
                        actor.save(settings.out / "best", {
                            "scenario": episodes.scenario.name, "iteration": iteration,
                            "validation_latency_s": best_latency,
                            "episodes": settings.episodes.model_dump(mode="json")})
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "iteration":
                        writer.add_scalar(key, value, iteration)
                log.write(json.dumps(row) + "\n")
                log.flush()
                history.append(row)
                progress(iteration, row)
        algorithm.stop()
    finally:
        writer.close()
        ray.shutdown()
    last = history[-1] if history else {}
    return TrainResult(
        iterations=len(history), env_steps=int(last.get("env_steps", 0)), agent_steps=int(last.get("agent_steps", 0)),
        seconds=time.monotonic() - started, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        best_iteration=best_iteration, best_validation_latency_s=best_latency, baseline_validation_latency_s=baseline,
        history=history)


def _row(iteration: int, result: dict, seconds: float) -> dict:
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get(MODULE_ID, {})
    row = {"iteration": iteration, "seconds": round(seconds, 1),
           "env_steps": runners.get("num_env_steps_sampled_lifetime", 0),
           "agent_steps": runners.get("num_agent_steps_sampled_lifetime", {}),
           "episode_return_mean": runners.get("episode_return_mean")}
    if isinstance(row["agent_steps"], dict):
        row["agent_steps"] = sum(row["agent_steps"].values())
    for key in ("qf_loss", "policy_loss", "alpha_loss", "alpha_value"):
        if key in learner:
            row[key] = float(learner[key])
    return {key: value for key, value in row.items() if value is not None}

