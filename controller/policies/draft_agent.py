"""An edge's draft-length agent: what it observes and how its action changes its users' draft lengths.

One encoding, used where the agent is trained (the twin's ``DraftLengthGame``) and where it decides (the
controller's ``mappo`` policy), so a trained network reads in the daemon exactly what it read in training.

The agent acts on the one lever the twin measured headroom for (docs/evaluation.md): each user's draft length.
It is a residual over the best heuristic, ``max-sinr-hysteresis:draft_lengths=tuned`` (the cell's handover, equal
shares, each user's k from the closed form on the edge model): a zero action is that heuristic.  Association and
shares stay the heuristic's (the sweep found no headroom in them).

Members of an edge: the users the prior associates with it that have a request (idle users' k changes nothing),
in the observation's order, at most ``max_users`` of them: the heuristic's handover ignores an edge's capacity, so
more may crowd one edge, and those beyond the agent's slots keep the heuristic's k.  The network is
permutation-equivariant, so the order means nothing else.

Observation (``EDGE_FEATURES + max_users × USER_FEATURES`` float32, absent slots zero):
    edge:  members / max_users, compute scale × 5, bandwidth / 100 MHz, energy weight
    user:  present (1), uplink and downlink spectral efficiency to the edge / 10 bit/s/Hz, log1p(pending tokens)
           / 7, log1p(context tokens) / 9, draft seconds per token × 10, acceptance, the prior's k / 8, and 1 when
           the request's context is not on this edge yet (its next round pays a prefill there)
Action (``max_users`` choices in 0..CHOICES−1): member i's k = prior k + choice − SHIFT, clipped to [1, the
longest block the device drafts]; the slots beyond the members are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.policies.base import Allocation, Decision, Observation

EDGE_FEATURES = 4
USER_FEATURES = 9
CHOICES = 5  # a change of k by −2..+2
SHIFT = CHOICES // 2  # the choice that keeps the prior's k
ENCODING = "draft-residual"
ENCODING_VERSION = 1  # bump when the features or the action mapping change: old checkpoints are then refused
OBSERVATION_BOUND = 10.0  # every feature is clipped to ±this (the spaces' bounds), in training and in the daemon


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


@dataclass(frozen=True)
class Members:
    """Each edge's members (positions in the observation's users), by edge position."""

    of_edge: tuple[np.ndarray, ...]


def members_of(observation: Observation, prior: Decision, spec: AgentSpec) -> Members:
    """The busy users the prior puts on each edge, the first ``max_users`` of them."""
    position = {edge.edge: i for i, edge in enumerate(observation.edges)}
    by_user = {a.user: a for a in prior.allocations}
    edge_of = np.array([position[by_user[user.user].edge] for user in observation.users], dtype=int)
    busy = np.array([user.busy for user in observation.users], dtype=bool)
    members = []
    for index in range(len(observation.edges)):
        members.append(np.flatnonzero((edge_of == index) & busy)[:spec.max_users])
    return Members(tuple(members))


def edge_features(members: np.ndarray, compute_scale: np.ndarray, bandwidth_hz: np.ndarray,
                  energy_weight: np.ndarray, spec: AgentSpec) -> np.ndarray:
    """[edges, EDGE_FEATURES] (arrays over edges): the one definition of an agent's edge features."""
    return np.column_stack([np.asarray(members) / spec.max_users, np.asarray(compute_scale) * 5,
                            np.asarray(bandwidth_hz) / 1e8, np.broadcast_to(energy_weight, np.shape(members))])


def user_features(se_up: np.ndarray, se_down: np.ndarray, pending: np.ndarray, context: np.ndarray,
                  draft_s_per_token: np.ndarray, acceptance: np.ndarray, prior_k: np.ndarray,
                  elsewhere: np.ndarray) -> np.ndarray:
    """[members, USER_FEATURES] (arrays over members): the one definition of a member's features."""
    count = len(se_up)
    return np.column_stack([
        np.ones(count), np.minimum(se_up, 100.0) / 10, np.minimum(se_down, 100.0) / 10, np.log1p(pending) / 7,
        np.log1p(context) / 9, np.broadcast_to(np.minimum(draft_s_per_token, 10.0) * 10, count),
        np.broadcast_to(acceptance, count), np.asarray(prior_k) / 8, np.asarray(elsewhere, dtype=float)])


def moved_lengths(prior_k: np.ndarray, choices: np.ndarray, longest: np.ndarray) -> np.ndarray:
    """Members' k: the prior's moved by their choices (clipped to 0..CHOICES−1), within [1, the longest block the
    device drafts] (or the prior's k, when a policy set it longer)."""
    change = np.clip(np.nan_to_num(choices), 0, CHOICES - 1).astype(int) - SHIFT
    return np.minimum(np.maximum(prior_k + change, 1), np.maximum(longest, prior_k)).astype(int)


def encode(observation: Observation, prior: Decision, members: Members, spec: AgentSpec,
           energy_weight: float) -> np.ndarray:
    """[edges, observation_size] float32: every edge agent's observation, each feature within ±OBSERVATION_BOUND."""
    by_user = {a.user: a for a in prior.allocations}
    features = np.zeros((len(observation.edges), spec.observation_size), dtype=np.float32)
    features[:, :EDGE_FEATURES] = edge_features(
        np.array([len(rows) for rows in members.of_edge]), [edge.timing.compute_scale for edge in observation.edges],
        [edge.bandwidth_hz for edge in observation.edges], energy_weight, spec)
    for position, rows in enumerate(members.of_edge):
        if not len(rows):
            continue
        users = [observation.users[row] for row in rows]
        per_user = user_features(
            np.array([u.se_up[position] for u in users]), np.array([u.se_down[position] for u in users]),
            np.array([u.pending_tokens for u in users]), np.array([u.context_tokens for u in users]),
            np.array([u.draft_s_per_token for u in users]), np.array([u.acceptance for u in users]),
            np.array([by_user[u.user].draft_length for u in users]), np.array([u.edge != position for u in users]))
        features[position, EDGE_FEATURES:EDGE_FEATURES + per_user.size] = per_user.ravel()
    return np.clip(features, -OBSERVATION_BOUND, OBSERVATION_BOUND)


def decode(observation: Observation, prior: Decision, members: Members, choices: np.ndarray,
           spec: AgentSpec) -> Decision:
    """The prior with each member's k moved by its choice (``choices``: [edges, max_users] integers; a value
    outside 0..CHOICES−1 is clipped).  ValueError for a misshapen array."""
    choices = np.asarray(choices)
    if choices.shape != (len(observation.edges), spec.max_users):
        raise ValueError(f"choices of shape ({len(observation.edges)}, {spec.max_users}) are needed, got "
                         f"{choices.shape}")
    by_user = {a.user: a for a in prior.allocations}
    lengths = np.array([by_user[user.user].draft_length for user in observation.users])
    for position, rows in enumerate(members.of_edge):
        longest = np.array([observation.users[row].max_draft_length or observation.users[row].draft_length
                            for row in rows], dtype=int)
        lengths[rows] = moved_lengths(lengths[rows], choices[position, :len(rows)], longest)
    allocations = []
    for user, length in zip(observation.users, lengths.tolist()):
        allocation = by_user[user.user]
        allocations.append(Allocation(allocation.user, allocation.edge, allocation.bandwidth_share,
                                      allocation.compute_share, int(length)))
    return Decision(prior.slot, tuple(allocations))
