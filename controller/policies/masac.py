"""``tma-masac``: TMA association, then each edge's shares from the actor MASAC trained in the digital twin.

The actor is the RLlib RLModule (``edge``, shared by every edge's agent) that ``tandem train`` trains, exported to a
checkpoint of Tandem's own format (controller/policies/checkpoints.py: JSON + safetensors, nothing executable) and
run in numpy, one batch of every edge's observation per slot.  The action is the squashed Gaussian's mode,
tanh(mean); how it becomes shares is ``edge_agent.decode``.

The controller names a checkpoint by the name of its folder in its ``policy_dir`` (``checkpoint=NAME``, default
``tma-masac``, the one shipped in policies/); a folder that is missing a file, was written for another encoding
or format, or whose weights do not fit that observation is refused with ``CheckpointError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from controller.policies.base import Decision, Observation
from controller.policies.checkpoints import (SHIPPED_POLICY_DIR, ActorNetwork, CheckpointError, NetworkSpec,
                                             check_tensors, export_actor, policy_folder, read_metadata,
                                             read_weights, write_checkpoint)
from controller.policies.edge_agent import AgentSpec, decode, encode
from controller.policies.tma import TmaEqual

__all__ = ["CheckpointError", "DEFAULT_CHECKPOINT", "LearnedShares", "MODULE_ID", "TmaMasac"]

MODULE_ID = "edge"
DEFAULT_CHECKPOINT = "tma-masac"  # the shipped policy's name in SHIPPED_POLICY_DIR


class LearnedShares:
    """The trained actor: observations of every edge in, deterministic actions out."""

    def __init__(self, actor: ActorNetwork, spec: AgentSpec) -> None:
        """``actor``'s network is always the one ``spec`` calls for: both constructors below build it from it."""
        self.actor, self.spec = actor, spec

    @classmethod
    def from_module(cls, module, spec: AgentSpec) -> "LearnedShares":
        """From an RLlib SAC RLModule being trained (its actor's weights are copied out)."""
        hidden, tensors = export_actor(module)
        network = NetworkSpec(spec.observation_size, hidden, 2 * spec.action_size)
        return cls(ActorNetwork(network, check_tensors(network, tensors)), spec)

    @classmethod
    def from_folder(cls, folder: Path) -> "LearnedShares":
        """From a checkpoint folder (an operator's path: `tandem evaluate --checkpoint DIR`; the controller only
        ever passes folders that ``policy_folder`` resolved in its policy directory)."""
        spec, network = read_metadata(folder)
        return cls(ActorNetwork(network, read_weights(folder, network)), spec)

    def save(self, folder: Path, training: dict) -> None:
        write_checkpoint(folder, self.spec, self.actor.network, self.actor.tensors(), training)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return self.actor(observations)


class TmaMasac(TmaEqual):
    """TMA association; the shares of each edge from the trained actor (``edge_agent`` encoding)."""

    name = "tma-masac"
    uses_policy_dir: ClassVar[bool] = True

    def __init__(self, seed: int = 0, checkpoint: str = DEFAULT_CHECKPOINT, actor: LearnedShares | None = None,
                 energy_weight: float = 0.0, parallel: bool = True, policy_dir: Path = SHIPPED_POLICY_DIR) -> None:
        """``checkpoint``: the NAME of a checkpoint folder in ``policy_dir`` (never a path: policy_folder)."""
        super().__init__(seed, parallel)
        if not (np.isfinite(energy_weight) and energy_weight >= 0):
            raise ValueError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        self.actor = actor or LearnedShares.from_folder(policy_folder(policy_dir, checkpoint))
        self.energy_weight = float(energy_weight)

    def decide(self, observation: Observation) -> Decision:
        spec = self.actor.spec
        spec.check_capacity(observation)
        association, costs = self.associate(observation)
        features = np.stack([encode(observation, association, costs, position, spec, self.energy_weight)
                             for position in range(len(observation.edges))])
        actions = self.actor(features)
        return decode(observation, association, costs, dict(enumerate(actions)), spec)
