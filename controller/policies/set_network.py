"""The learned policy's network, permutation-equivariant over an edge's members, as numpy.

    h_i  = φ(x_i)                      a shared encoder per member (two ReLU layers)
    c    = ψ([e, mean_i h_i, max_i h_i])   the edge's context: its features and the members pooled (masked)
    l_i  = π([h_i, c])                 each member's logits over its choices (one ReLU layer, then linear)

Reordering the members reorders the logits the same way, and one set of weights serves any number of members up
to the agent's slots: the module RLlib trains (``controller/twin/set_module.py``) is this network layer for
layer, with a value head on c that only training needs.  Plain numpy in the controller: no torch, no Ray, a few
small matrix products per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTOR_LAYERS = ("encoder.0", "encoder.1", "context.0", "policy.0", "policy.1")


@dataclass(frozen=True)
class SetNetworkSpec:
    user_features: int
    edge_features: int
    hidden: int
    choices: int

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The actor's tensors by name (the value head is not part of a checkpoint)."""
        h = self.hidden
        layers = {"encoder.0": (h, self.user_features), "encoder.1": (h, h),
                  "context.0": (h, self.edge_features + 2 * h), "policy.0": (h, 2 * h), "policy.1": (self.choices, h)}
        shapes = {}
        for name, shape in layers.items():
            shapes[f"{name}.weight"], shapes[f"{name}.bias"] = shape, shape[:1]
        return shapes


def split_observation(observations: np.ndarray, spec: SetNetworkSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, edge + slots × user] -> edge features [B, E_f], members [B, slots, U_f], present mask [B, slots]
    (the first user feature is 1 for a member)."""
    edge = observations[:, :spec.edge_features]
    users = observations[:, spec.edge_features:].reshape(len(observations), -1, spec.user_features)
    return edge, users, users[..., 0] > 0.5


class SetPolicyNetwork:
    """The actor: observations of edges in, each member slot's logits out."""

    def __init__(self, spec: SetNetworkSpec, tensors: dict[str, np.ndarray]) -> None:
        """``tensors``: float32 of ``spec.tensor_shapes()`` (checkpoints.check_tensors has checked them)."""
        self.spec = spec
        self._tensors = tensors

    def tensors(self) -> dict[str, np.ndarray]:
        return dict(self._tensors)

    def _layer(self, name: str, values: np.ndarray, relu: bool = True) -> np.ndarray:
        out = values @ self._tensors[f"{name}.weight"].T + self._tensors[f"{name}.bias"]
        return np.maximum(out, 0.0) if relu else out

    def logits(self, observations: np.ndarray) -> np.ndarray:
        """[B, slots, choices] for observations [B, observation_size]."""
        edge, users, present = split_observation(np.asarray(observations, dtype=np.float32), self.spec)
        h = self._layer("encoder.1", self._layer("encoder.0", users))
        mask = present[..., None]
        count = np.maximum(mask.sum(axis=1), 1)
        mean = (h * mask).sum(axis=1) / count
        peak = np.where(mask, h, 0.0).max(axis=1)  # h >= 0 after ReLU: 0 is max's neutral element here
        context = self._layer("context.0", np.concatenate([edge, mean, peak], axis=-1))
        joined = np.concatenate([h, np.broadcast_to(context[:, None, :], h.shape)], axis=-1)
        return self._layer("policy.1", self._layer("policy.0", joined), relu=False)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """[B, slots] greedy choices (the mode of each member's categorical)."""
        return np.argmax(self.logits(observations), axis=-1)
