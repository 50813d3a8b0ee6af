"""``mappo``: the best heuristic, with each user's draft length corrected by the network multi-agent PPO trained in
the digital twin (``tandem train``; docs/twin.md).

The heuristic is ``max-sinr-hysteresis:draft_lengths=tuned``; every edge's agent reads its members
(``draft_agent.encode``) and the network (``set_network.SetPolicyNetwork``, one for every edge) moves each member's
k by −2..+2; the greedy choice is played.  A network that chooses "no change" everywhere is that heuristic.

The controller names a checkpoint by the name of its folder in its ``policy_dir`` (``checkpoint=NAME``, default
``mappo``, the one shipped in policies/); a folder that is missing a file, was written for another encoding or
format, or whose weights do not fit that network is refused with ``CheckpointError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from controller.policies.base import Decision, Observation, Policy
from controller.policies.baselines import MaxSinrHysteresis
from controller.policies.checkpoints import (SHIPPED_POLICY_DIR, CheckpointError, check_tensors, policy_folder,
                                             read_metadata, read_weights, write_checkpoint)
from controller.policies.draft_agent import AgentSpec, decode, encode, members_of
from controller.policies.set_network import SetNetworkSpec, SetPolicyNetwork

__all__ = ["CheckpointError", "DEFAULT_CHECKPOINT", "LearnedDraftLengths", "Mappo", "MODULE_ID", "prior_policy"]

MODULE_ID = "edge"
DEFAULT_CHECKPOINT = "mappo"  # the shipped policy's name in SHIPPED_POLICY_DIR


def prior_policy(seed: int = 0) -> MaxSinrHysteresis:
    """The heuristic the network corrects (a fresh one per run: it remembers each user's serving edge)."""
    return MaxSinrHysteresis(seed, draft_lengths="tuned")


class LearnedDraftLengths:
    """The trained actor with the shape of the agents it was trained for."""

    def __init__(self, network: SetPolicyNetwork, spec: AgentSpec) -> None:
        self.network, self.spec = network, spec

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], network: SetNetworkSpec,
                     spec: AgentSpec) -> "LearnedDraftLengths":
        return cls(SetPolicyNetwork(network, check_tensors(network, tensors)), spec)

    @classmethod
    def from_folder(cls, folder: Path) -> "LearnedDraftLengths":
        """From a checkpoint folder (an operator's path: `tandem evaluate --checkpoint DIR`; the controller only
        ever passes folders that ``policy_folder`` resolved in its policy directory)."""
        spec, network = read_metadata(folder)
        return cls(SetPolicyNetwork(network, read_weights(folder, network)), spec)

    def save(self, folder: Path, training: dict) -> None:
        write_checkpoint(folder, self.spec, self.network.spec, self.network.tensors(), training)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return self.network(observations)


class Mappo(Policy):
    """The best heuristic's decision, each busy user's k corrected by the trained network."""

    name = "mappo"
    from_caller: ClassVar[frozenset[str]] = frozenset({"policy_dir", "actor"})

    def __init__(self, seed: int = 0, checkpoint: str = DEFAULT_CHECKPOINT, actor: LearnedDraftLengths | None = None,
                 energy_weight: float = 0.0, policy_dir: Path = SHIPPED_POLICY_DIR) -> None:
        """``checkpoint``: the NAME of a checkpoint folder in ``policy_dir`` (never a path: policy_folder)."""
        super().__init__(seed)
        if not (np.isfinite(energy_weight) and energy_weight >= 0):
            raise ValueError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        self.actor = actor or LearnedDraftLengths.from_folder(policy_folder(policy_dir, checkpoint))
        self.energy_weight = float(energy_weight)
        self.prior = prior_policy(seed)

    def check_scenario(self, scenario) -> None:
        self.actor.spec.check_capacity_of(scenario)

    def decide(self, observation: Observation) -> Decision:
        spec = self.actor.spec
        spec.check_capacity(observation)
        prior = self.prior.decide(observation)
        members = members_of(observation, prior, spec)
        choices = self.actor(encode(observation, prior, members, spec, self.energy_weight))
        return decode(observation, prior, members, choices, spec)
