"""``tma-masac``: TMA association, then each edge's shares from the actor MASAC trained in the digital twin.

The actor is the RLlib RLModule (``edge``, shared by every edge's agent) that ``tandem train`` saves; it is loaded
from its checkpoint folder with ``RLModule.from_checkpoint`` (no Ray runtime is started) and run with torch, one
batch of every edge's observation per slot.  The action is the squashed Gaussian's mode, tanh(mean); how it
becomes shares is ``edge_agent.decode``.

A policy folder holds ``module/`` (the RLModule checkpoint) and ``tandem-policy.json``, which records the encoding
version and the user slots the actor was trained with; a folder that is missing either, was written for another
encoding, or whose network does not take that observation is refused with ``CheckpointError`` naming the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from controller.policies.base import Decision, Observation
from controller.policies.edge_agent import ENCODING_VERSION, AgentSpec, decode, encode
from controller.policies.tma import TmaEqual

MODULE_ID = "edge"
METADATA = "tandem-policy.json"
MODULE_DIR = "module"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "policies" / "tma-masac"


class CheckpointError(ValueError):
    """A policy folder that cannot be used, with the reason."""


def write_metadata(folder: Path, spec: AgentSpec, training: dict) -> None:
    (folder / METADATA).write_text(json.dumps({
        "format": "tandem-policy", "encoding_version": ENCODING_VERSION, "module_id": MODULE_ID,
        "max_users": spec.max_users, "training": training}, indent=2) + "\n")


def read_metadata(folder: Path) -> AgentSpec:
    path = Path(folder) / METADATA
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise CheckpointError(f"{folder} is not a tma-masac policy folder: cannot read {METADATA} "
                              f"({error.strerror})") from None
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deeply
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != "tandem-policy":
        raise CheckpointError(f"{path} is not a tandem policy description")
    version, max_users = data.get("encoding_version"), data.get("max_users")
    if not _is_int(version) or version != ENCODING_VERSION:
        raise CheckpointError(f"{path} was trained with observation encoding {version!r}; "
                              f"this version reads encoding {ENCODING_VERSION}: train again (tandem train)")
    if not _is_int(max_users):
        raise CheckpointError(f"{path}: max_users must be an integer, got {max_users!r}")
    try:
        return AgentSpec(max_users)
    except ValueError as error:
        raise CheckpointError(f"{path}: bad max_users ({error})") from None


def _is_int(value: object) -> bool:
    """An integer as write_metadata writes it: not a float (24.9, Infinity), a string or a bool (true == 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


class LearnedShares:
    """The trained actor: observations of every edge in, deterministic actions out."""

    def __init__(self, module, spec: AgentSpec) -> None:
        import torch

        self.module, self.spec, self._torch = module, spec, torch
        module.eval()
        probe = self(np.zeros((1, spec.observation_size), dtype=np.float32))  # the network must fit the encoding
        if probe.shape != (1, spec.action_size):
            raise CheckpointError(f"the actor outputs {probe.shape[1]} numbers per edge, the encoding needs "
                                  f"{spec.action_size}")

    @classmethod
    def from_module(cls, module, spec: AgentSpec) -> "LearnedShares":
        return cls(module, spec)

    @classmethod
    def from_folder(cls, folder: Path) -> "LearnedShares":
        folder = Path(folder)
        spec = read_metadata(folder)
        from ray.rllib.core.rl_module.rl_module import RLModule

        try:
            module = RLModule.from_checkpoint(str((folder / MODULE_DIR).resolve()))
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is refused with its reason
            raise CheckpointError(f"cannot load the actor from {folder / MODULE_DIR}: "
                                  f"{type(error).__name__}: {error}") from None
        try:
            return cls(module, spec)
        except CheckpointError:
            raise
        except Exception as error:  # noqa: BLE001 - a network of another shape
            raise CheckpointError(f"the actor in {folder} does not take this observation "
                                  f"({spec.observation_size} features): {error}") from None

    def save(self, folder: Path, training: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.module.save_to_path(str((folder / MODULE_DIR).resolve()))
        write_metadata(folder, self.spec, training)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            output = self.module.forward_inference({"obs": torch.from_numpy(np.asarray(observations, np.float32))})
        mean, _log_std = output["action_dist_inputs"].chunk(2, dim=-1)
        return torch.tanh(mean).numpy()


class TmaMasac(TmaEqual):
    """TMA association; the shares of each edge from the trained actor (``edge_agent`` encoding)."""

    name = "tma-masac"

    def __init__(self, seed: int = 0, checkpoint: str | Path | None = None, actor: LearnedShares | None = None,
                 energy_weight: float = 0.0, parallel: bool = True) -> None:
        super().__init__(seed, parallel)
        if not (np.isfinite(energy_weight) and energy_weight >= 0):
            raise ValueError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        self.actor = actor or LearnedShares.from_folder(Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT)
        self.energy_weight = float(energy_weight)

    def decide(self, observation: Observation) -> Decision:
        spec = self.actor.spec
        spec.check_capacity(observation)
        association, costs = self.associate(observation)
        features = np.stack([encode(observation, association, costs, position, spec, self.energy_weight)
                             for position in range(len(observation.edges))])
        actions = self.actor(features)
        return decode(observation, association, costs, dict(enumerate(actions)), spec)
