"""The allocation game over the digital twin: one agent per edge server, the core of the multi-agent environments.

Every slot the users are associated by TMA (``TmaEqual.associate``: two-phase matching on the latency model), and
each edge's agent sets the bandwidth and compute shares of the users associated with it (MASAC learns these).
Observations and actions are ``controller/policies/edge_agent.py``'s encoding, the one the controller's
``tma-masac`` policy decides with.  This module holds the game in plain numpy, with no RL library, so that it is
unit-tested on its own and shared by the RLlib ``MultiAgentEnv`` and the PettingZoo wrapper.

Reward of an agent: −(seconds its users' requests spent in the system during the slot) / slot length
− energy_weight × (joules its users' devices spent in the slot).  By Little's law the first term's average is the
mean number of requests in the system, proportional to the mean end-to-end latency, and unlike latencies of
completed requests it is paid in the slot the delay happens.
"""

from __future__ import annotations

import numpy as np

from controller.policies.base import Decision
from controller.policies.edge_agent import AgentSpec, decode, encode
from controller.policies.tma import TmaEqual
from controller.twin.simulator import DigitalTwin


class GameError(ValueError):
    """A scenario or an action the game cannot take, with the reason."""


def agent_id(edge: int) -> str:
    return f"edge-{edge}"


class EdgeAllocationGame:
    def __init__(self, twin: DigitalTwin, spec: AgentSpec, energy_weight: float = 0.0) -> None:
        too_many = [e.id for e in twin.scenario.edges if e.capacity > spec.max_users]
        if too_many:
            raise GameError(f"edges {too_many} may serve more users (capacity) than the {spec.max_users} user slots "
                            f"of the agents")
        if not np.isfinite(energy_weight) or energy_weight < 0:
            raise GameError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        self.twin = twin
        self.spec = spec
        self.energy_weight = energy_weight
        self.edges = [edge.id for edge in twin.scenario.edges]
        self.agents = [agent_id(edge) for edge in self.edges]
        self._associate = TmaEqual(parallel=twin.parallel)
        self._observation = self._association = self._costs = None

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.twin.reset(seed)
        return self._observe()

    def _observe(self) -> dict[str, np.ndarray]:
        self._observation = self.twin.observation()
        self._association, self._costs = self._associate.associate(self._observation)
        return {agent: encode(self._observation, self._association, self._costs, position, self.spec,
                              self.energy_weight)
                for position, agent in enumerate(self.agents)}

    def decision(self, actions: dict[str, np.ndarray]) -> Decision:
        """TMA's association with the agents' shares (GameError for a missing or misshapen action)."""
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise GameError(f"no action for {', '.join(missing)}")
        try:
            return decode(self._observation, self._association, self._costs,
                          {position: actions[agent] for position, agent in enumerate(self.agents)}, self.spec)
        except ValueError as error:
            raise GameError(str(error)) from None

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
            agent: np.zeros(self.spec.observation_size, dtype=np.float32) for agent in self.agents}
        infos = {agent: {"finished_requests": len(finished)} for agent in self.agents}
        terminated = {agent: False for agent in self.agents} | {"__all__": False}
        truncated = {agent: over for agent in self.agents} | {"__all__": over}
        return observations, rewards, terminated, truncated, infos
