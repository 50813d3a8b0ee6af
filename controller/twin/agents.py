"""The allocation game over the digital twin: one agent per edge server, the core of the multi-agent environment.

Every slot the users are associated by TMA (``TmaEqual.associate``: two-phase matching on the latency model), and
each edge's agent sets the bandwidth and compute shares of the users associated with it (MASAC learns these).
This module holds the game in plain numpy, with no RL library, so that it is unit-tested on its own and shared by
the RLlib ``MultiAgentEnv`` and the PettingZoo wrapper.

Observation of an agent (``EDGE_FEATURES + max_users * USER_FEATURES`` floats, users in the order of their trace
index, absent slots zero):
    edge:  users associated / capacity, compute (single-block speed × batching gain) / max_users
    user:  present (1), uplink and downlink spectral efficiency / 10 bit/s/Hz, pending tokens / 1000,
           draft seconds per token × 10, acceptance
Action (``2 * max_users`` floats in [-1, 1]): bandwidth then compute preferences of the user slots; the shares of
the present users are softmax(``SHARE_TEMPERATURE`` × preference), so they are positive and sum to 1 on each edge
whatever the action.  Reward of an agent: −(seconds its users' requests spent in the system during the slot) /
slot length − energy_weight × (joules its users' devices spent in the slot): by Little's law the first term's
average is proportional to the mean end-to-end latency.
"""

from __future__ import annotations

import numpy as np

from controller.policies.base import Allocation, Decision, Observation
from controller.policies.tma import TmaEqual
from controller.twin.simulator import DigitalTwin

EDGE_FEATURES = 2
USER_FEATURES = 6
SHARE_TEMPERATURE = 3.0


class GameError(ValueError):
    """A scenario or an action the game cannot take, with the reason."""


def agent_id(edge: int) -> str:
    return f"edge-{edge}"


def shares_from_preferences(preferences: np.ndarray) -> np.ndarray:
    """Positive shares summing to 1 (a softmax), from preferences in [-1, 1] (clipped)."""
    scaled = SHARE_TEMPERATURE * np.clip(np.nan_to_num(preferences, nan=0.0), -1.0, 1.0)
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()


class EdgeAllocationGame:
    def __init__(self, twin: DigitalTwin, max_users: int = 16, energy_weight: float = 0.0) -> None:
        too_many = [e.id for e in twin.scenario.edges if e.capacity > max_users]
        if too_many:
            raise GameError(f"edges {too_many} may serve more users (capacity) than the {max_users} user slots of "
                            f"the agents")
        if not np.isfinite(energy_weight) or energy_weight < 0:
            raise GameError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        self.twin = twin
        self.max_users = max_users
        self.energy_weight = energy_weight
        self.edges = [edge.id for edge in twin.scenario.edges]
        self.agents = [agent_id(edge) for edge in self.edges]
        self.observation_size = EDGE_FEATURES + max_users * USER_FEATURES
        self.action_size = 2 * max_users
        self._associate = TmaEqual()
        self._observation: Observation | None = None
        self._association: np.ndarray | None = None

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.twin.reset(seed)
        return self._observe()

    def _observe(self) -> dict[str, np.ndarray]:
        self._observation = self.twin.observation()
        self._association = self._associate.associate(self._observation)[0]
        return {agent: self._agent_observation(position) for position, agent in enumerate(self.agents)}

    def members(self, position: int) -> np.ndarray:
        """Positions (in the observation's users) of the users associated with the edge at ``position``."""
        return np.flatnonzero(self._association == position)

    def _agent_observation(self, position: int) -> np.ndarray:
        observation = self._observation
        edge = observation.edges[position]
        members = self.members(position)
        features = np.zeros(self.observation_size, dtype=np.float32)
        features[0] = len(members) / edge.capacity
        features[1] = edge.compute / self.max_users
        for slot, index in enumerate(members):
            user = observation.users[index]
            start = EDGE_FEATURES + slot * USER_FEATURES
            features[start:start + USER_FEATURES] = (
                1.0, user.se_up[position] / 10, user.se_down[position] / 10, user.pending_tokens / 1000,
                user.draft_s_per_token * 10, user.acceptance)
        return features

    def decision(self, actions: dict[str, np.ndarray]) -> Decision:
        """TMA's association with the agents' shares (GameError for a missing or misshapen action)."""
        observation = self._observation
        bandwidth = np.ones(len(observation.users))
        compute = np.ones(len(observation.users))
        for position, agent in enumerate(self.agents):
            members = self.members(position)
            if not len(members):
                continue
            action = np.asarray(actions.get(agent, ()), dtype=np.float64).ravel()
            if action.shape != (self.action_size,):
                raise GameError(f"{agent}: an action of {self.action_size} numbers is needed, got {action.shape}")
            slots = np.arange(len(members))
            bandwidth[members] = shares_from_preferences(action[slots])
            compute[members] = shares_from_preferences(action[self.max_users + slots])
        return Decision(observation.slot, tuple(
            Allocation(user.user, observation.edges[e].edge, float(b), float(c), user.draft_length)
            for user, e, b, c in zip(observation.users, self._association.tolist(), bandwidth, compute)))

    def step(self, actions: dict[str, np.ndarray]):
        """(observations, rewards, terminated, truncated, infos) in the multi-agent convention ("__all__")."""
        decision = self.decision(actions)
        edge_of = {a.user: a.edge for a in decision.allocations}
        begin, end = self.twin.now, self.twin.now + self.twin.slot_s
        # Every request in the system at the slot's start (running or queued), and its energy so far.
        present = [(user.index, request, request.energy_j) for user in self.twin.users for request in user.queue]
        finished = self.twin.step(decision)
        busy = {edge: 0.0 for edge in self.edges}
        energy = {edge: 0.0 for edge in self.edges}
        for user, request, energy_before in present:
            edge = edge_of[user]
            left = request.finished if request.finished is not None else end
            busy[edge] += max(0.0, min(end, left) - max(begin, request.arrival))
            energy[edge] += request.energy_j - energy_before
        rewards = {agent_id(edge): -busy[edge] / self.twin.slot_s - self.energy_weight * energy[edge]
                   for edge in self.edges}
        over = self.twin.finished
        observations = self._observe() if not over else {
            agent: np.zeros(self.observation_size, dtype=np.float32) for agent in self.agents}
        infos = {agent: {"finished_requests": len(finished)} for agent in self.agents}
        terminated = {agent: False for agent in self.agents} | {"__all__": False}
        truncated = {agent: over for agent in self.agents} | {"__all__": over}
        return observations, rewards, terminated, truncated, infos
