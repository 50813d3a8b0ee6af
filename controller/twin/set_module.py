"""The RLlib RLModule that ``tandem train`` trains: ``set_network``'s permutation-equivariant actor in torch, layer
for layer, with a value head on the edge's context (PPO's critic).

Member slots that are empty get logits that put all mass on "no change": they add nothing to the log-probability,
the entropy or the loss.  The actor starts close to the heuristic it corrects: its last layer's weights start
near 0 and its bias favours "no change" (about 0.8 of the mass), so exploration begins narrow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from torch import nn

from controller.policies.draft_agent import SHIFT
from controller.policies.set_network import ACTOR_LAYERS, SetNetworkSpec

EMPTY_SLOT_LOGIT = -1e4  # an empty slot's other choices: exp() of it is 0 in float32
INITIAL_BIAS_PER_STEP = -1.5  # a choice's starting logit per step of k away from "no change": ~0.8 on it with 5


def _key(name: str) -> str:
    """A ``set_network`` layer name as a ``ModuleDict`` key (which may not hold dots)."""
    return name.replace(".", "_")


class SetPolicyModule(TorchRLModule, ValueFunctionAPI):
    """model_config: ``user_features``, ``edge_features``, ``hidden``, ``choices``, ``max_users``."""

    def setup(self) -> None:
        config = self.model_config
        self.spec = SetNetworkSpec(config["user_features"], config["edge_features"], config["hidden"],
                                   config["choices"])
        self.max_users = int(config["max_users"])
        shapes = self.spec.tensor_shapes()
        self.actor = nn.ModuleDict({_key(name): nn.Linear(shapes[f"{name}.weight"][1], shapes[f"{name}.weight"][0])
                                    for name in ACTOR_LAYERS})
        last = self.actor[_key(ACTOR_LAYERS[-1])]
        nn.init.normal_(last.weight, std=0.01)
        with torch.no_grad():
            last.bias.copy_(INITIAL_BIAS_PER_STEP * (torch.arange(self.spec.choices) - SHIFT).abs().float())
        h = self.spec.hidden
        self.value = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(
            input_lens=[self.spec.choices] * self.max_users)
        empty = torch.full((self.spec.choices,), EMPTY_SLOT_LOGIT)
        empty[SHIFT] = 0.0
        self.register_buffer("_empty_logits", empty, persistent=False)

    def _layer(self, name: str, values: torch.Tensor, relu: bool = True) -> torch.Tensor:
        out = self.actor[_key(name)](values)
        return torch.relu(out) if relu else out

    def _embed(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the members' embeddings [members, h], context [B, h], present [B, slots]).  Only the slots that hold a
        member go through the per-member layers (most slots are empty: a quarter or so are filled in training)."""
        spec = self.spec
        edge = obs[:, :spec.edge_features]
        users = obs[:, spec.edge_features:].reshape(obs.shape[0], -1, spec.user_features)
        present = users[..., 0] > 0.5
        members = self._layer("encoder.1", self._layer("encoder.0", users[present]))
        h = members.new_zeros(users.shape[0], users.shape[1], members.shape[-1]).index_put((present,), members)
        count = present.sum(dim=1, keepdim=True).to(h.dtype)
        mean = h.sum(dim=1) / count.clamp(min=1.0)
        peak = h.max(dim=1).values  # h >= 0 after ReLU, so empty slots (0) never win over a member
        context = self._layer("context.0", torch.cat([edge, mean, peak], dim=-1))
        return members, context, present

    def _logits(self, members: torch.Tensor, context: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        row = present.nonzero(as_tuple=True)[0]  # each member's observation
        joined = torch.cat([members, context[row]], dim=-1)
        logits = self._layer("policy.1", self._layer("policy.0", joined), relu=False)
        full = self._empty_logits.expand(*present.shape, -1).index_put((present,), logits)
        return full.reshape(full.shape[0], -1)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        h, context, present = self._embed(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self._logits(h, context, present)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        h, context, present = self._embed(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self._logits(h, context, present), Columns.EMBEDDINGS: context}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._embed(batch[Columns.OBS])[1]
        return self.value(embeddings).squeeze(-1)


def export_actor(module: SetPolicyModule) -> dict[str, np.ndarray]:
    """The actor's tensors by ``SetNetworkSpec.tensor_shapes`` name (what a checkpoint stores)."""
    tensors = {}
    for name in ACTOR_LAYERS:
        layer = module.actor[_key(name)]
        tensors[f"{name}.weight"] = layer.weight.detach().cpu().numpy().astype(np.float32)
        tensors[f"{name}.bias"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    return tensors
