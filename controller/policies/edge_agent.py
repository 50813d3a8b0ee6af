"""An edge's allocation agent: what it observes and how its action becomes shares.

One encoding, used both where the agent is trained (the twin's ``EdgeAllocationGame``) and where it decides
(the controller's ``tma-masac`` policy), so a trained network reads in the daemon exactly what it read in training.
Users are first associated by TMA; then each edge's agent sees its own members only.

Observation (``EDGE_FEATURES + max_users × USER_FEATURES`` float32, members sorted by rounds left, shortest
first, absent slots zero):
    edge:  members / max_users, compute scale / max_users, energy weight,
           members in an outage on this edge / max_users
    user:  present (1), uplink and downlink spectral efficiency / 10 bit/s/Hz, log1p(pending tokens) / 7,
           draft seconds per token × 10, acceptance, prior bandwidth share, prior compute share,
           log10(remote round time at the prior shares / drafting time), clipped to [-3, 3]
Action (``2 × max_users`` floats in [-1, 1]): bandwidth then compute corrections of the member slots.  A member's
share is its prior share × exp(``RESIDUAL_SCALE`` × correction), renormalised over the edge's members: positive,
summing to 1 on each edge whatever the action.  The prior is the closed forms of ``tma.sequential_shares``
(bandwidth ∝ √(rounds left × link time), scheduler weights ∝ √(rounds left × block tokens)), so a zero action is
a sound policy and the agent learns what that formula misses (drafting that hides the remote part under PSD, the
edge's queue, energy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.estimator import PairCosts, edge_round_seconds
from controller.policies.base import Allocation, Decision, Observation
from controller.policies.tma import sequential_shares
from tandem.shares import proportional_shares

EDGE_FEATURES = 4
USER_FEATURES = 9
RESIDUAL_SCALE = 2.0
ENCODING_VERSION = 1  # bump when the features or the action mapping change: old checkpoints are then refused


@dataclass(frozen=True)
class AgentSpec:
    """The shape of an agent: how many members it has slots for."""

    max_users: int

    def __post_init__(self) -> None:
        if not 1 <= self.max_users <= 1024:
            raise ValueError(f"max_users must lie in [1, 1024], got {self.max_users}")

    @property
    def observation_size(self) -> int:
        return EDGE_FEATURES + self.max_users * USER_FEATURES

    @property
    def action_size(self) -> int:
        return 2 * self.max_users

    def check_capacity(self, observation: Observation) -> None:
        """ValueError when an edge may serve more users than the agent has slots for."""
        self._check((edge.edge, edge.capacity) for edge in observation.edges)

    def check_capacity_of(self, scenario) -> None:
        """The same check on a twin scenario's edges."""
        self._check((edge.id, edge.capacity) for edge in scenario.edges)

    def _check(self, capacities) -> None:
        for edge, capacity in capacities:
            if capacity > self.max_users:
                raise ValueError(f"edge {edge} may serve {capacity} users; the policy was trained for at most "
                                 f"{self.max_users} per edge")


def members_of(observation: Observation, association: np.ndarray, costs: PairCosts, position: int,
               spec: AgentSpec) -> np.ndarray:
    """Positions (in the observation's users) of the edge's members, fewest rounds left first; ValueError when
    there are more than the agent has slots for."""
    members = np.flatnonzero(association == position)
    if len(members) > spec.max_users:
        raise ValueError(f"edge {observation.edges[position].edge} serves {len(members)} users; the policy was "
                         f"trained for at most {spec.max_users}")
    return members[np.lexsort((members, costs.weight[members]))]


def encode(observation: Observation, association: np.ndarray, costs: PairCosts, position: int, spec: AgentSpec,
           energy_weight: float) -> np.ndarray:
    """The observation of the agent of the edge at ``position``."""
    edge = observation.edges[position]
    members = members_of(observation, association, costs, position, spec)
    features = np.zeros(spec.observation_size, dtype=np.float32)
    outage = ~np.isfinite(costs.comm[members, position])
    features[:EDGE_FEATURES] = (len(members) / spec.max_users, edge.timing.compute_scale / spec.max_users,
                                energy_weight, outage.sum() / spec.max_users)
    if not len(members):
        return features
    b, c = sequential_shares(costs, members, position)
    remote = edge_round_seconds(costs, members, np.full(len(members), position), b, c)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(remote / np.maximum(costs.draft[members], 1e-9))
    users = [observation.users[index] for index in members]
    per_user = np.column_stack([
        np.ones(len(members)),
        np.minimum([u.se_up[position] for u in users], 100.0) / 10,
        np.minimum([u.se_down[position] for u in users], 100.0) / 10,
        np.log1p([u.pending_tokens for u in users]) / 7,
        np.minimum([u.draft_s_per_token for u in users], 10.0) * 10,
        [u.acceptance for u in users],
        b, c, np.clip(np.nan_to_num(ratio, nan=3.0, posinf=3.0), -3.0, 3.0)])
    features[EDGE_FEATURES:EDGE_FEATURES + per_user.size] = per_user.ravel()
    return features


def corrected(prior: np.ndarray, correction: np.ndarray) -> np.ndarray:
    """Prior shares scaled by exp(RESIDUAL_SCALE × correction) (clipped to [-1, 1], NaN as 0), summing to 1, none
    below the share rule's floor."""
    scaled = np.log(np.maximum(prior, 1e-12)) + RESIDUAL_SCALE * np.clip(np.nan_to_num(correction), -1.0, 1.0)
    return proportional_shares(np.exp(scaled - scaled.max()))


def decode(observation: Observation, association: np.ndarray, costs: PairCosts, actions: dict[int, np.ndarray],
           spec: AgentSpec) -> Decision:
    """TMA's association with shares from each edge's action (by edge position; an edge whose members have no
    action keeps its prior).  ValueError for a misshapen action."""
    bandwidth = np.ones(len(observation.users))
    compute = np.ones(len(observation.users))
    for position in range(len(observation.edges)):
        members = members_of(observation, association, costs, position, spec)
        if not len(members):
            continue
        prior_b, prior_c = sequential_shares(costs, members, position)
        action = actions.get(position)
        if action is None:
            bandwidth[members], compute[members] = prior_b, prior_c
            continue
        action = np.asarray(action, dtype=np.float64).ravel()
        if action.shape != (spec.action_size,):
            raise ValueError(f"edge {observation.edges[position].edge}: an action of {spec.action_size} numbers is "
                             f"needed, got {action.shape}")
        slots = np.arange(len(members))
        bandwidth[members] = corrected(prior_b, action[slots])
        compute[members] = corrected(prior_c, action[spec.max_users + slots])
    return Decision(observation.slot, tuple(
        Allocation(user.user, observation.edges[e].edge, float(b), float(c), user.draft_length)
        for user, e, b, c in zip(observation.users, association.tolist(), bandwidth, compute)))
