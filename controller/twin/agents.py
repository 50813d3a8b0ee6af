"""The draft-length game over the digital twin: one agent per edge server, the core of the multi-agent environments.

Every slot the heuristic ``max-sinr-hysteresis:draft_lengths=tuned`` decides (``mappo.prior_policy``), and each
edge's agent moves the draft length of the users with a request on it (``controller/policies/draft_agent.py``,
the encoding the controller's ``mappo`` policy decides with).  Plain numpy, no RL library: unit-tested on its own
and shared by the RLlib ``MultiAgentEnv`` and the PettingZoo wrapper.

Reward of an agent, for the requests of the users the slot's decision puts on its edge:

    −(seconds those requests spent in the system during the slot) / slot length − energy weight × their joules
    + γ·Φ(after) − Φ(before),      Φ = −(tokens they still have to generate × their device's draft seconds per
                                          token) / slot length,

all divided by the agent's user slots.  The first term averages, by Little's law, to the mean number of requests
in the system (what time in system measures) and is paid in the slot the delay happens.  The second is
potential-based shaping (Ng et al., 1999): every token a request gains pays at once what it saves, a lower bound
on its remaining time, so a draft length's effect shows in its own slot rather than when the request ends,
hundreds of slots later.  Summed over the agents it telescopes to Φ's changes that no action causes (arrivals),
so it leaves the team's optimal policy as it is.
"""

from __future__ import annotations

import numpy as np

from controller.policies.draft_agent import AgentSpec, decode, encode, members_of
from controller.policies.mappo import prior_policy
from controller.twin.simulator import DigitalTwin


class GameError(ValueError):
    """A scenario or an action the game cannot take, with the reason."""


def agent_id(edge: int) -> str:
    return f"edge-{edge}"


def potential(tokens_left, draft_s_per_token: float, slot_s: float):
    """Φ of the requests an agent has: −(tokens they still have to generate × draft seconds per token) / slot."""
    return -tokens_left * draft_s_per_token / slot_s


def edge_reward(request_seconds, energy_j, potential_before, potential_after, slot_s: float, energy_weight,
                gamma: float, max_users: int):
    """An agent's reward for a slot (the module docstring's), from its requests' seconds in the system during the
    slot, their joules and Φ before and after it (scalars, or arrays over agents)."""
    shaping = gamma * potential_after - potential_before
    return (-request_seconds / slot_s - energy_weight * energy_j + shaping) / max_users


def check_slots(spec: AgentSpec, scenario) -> None:
    """GameError when the scenario's edges may hold more users than the agents have slots for."""
    try:
        spec.check_capacity_of(scenario)
    except ValueError as error:
        raise GameError(f"{error}: give the agents more user slots (max_users) or the edges less capacity") from None


class DraftLengthGame:
    def __init__(self, twin: DigitalTwin, spec: AgentSpec, energy_weight: float = 0.0, gamma: float = 0.99) -> None:
        check_slots(spec, twin.scenario)
        if not np.isfinite(energy_weight) or energy_weight < 0:
            raise GameError(f"energy_weight must be finite and non-negative, got {energy_weight}")
        if not 0 < gamma <= 1:
            raise GameError(f"gamma must lie in (0, 1], got {gamma}")
        self.twin, self.spec = twin, spec
        self.energy_weight, self.gamma = energy_weight, gamma
        self.edges = [edge.id for edge in twin.scenario.edges]
        self.agents = [agent_id(edge) for edge in self.edges]
        self._draft_s = twin.profile.device.draft_seconds_per_token
        self._prior = self._observation = self._decision = self._members = None

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.twin.reset(seed)
        self._prior = prior_policy(seed)
        return self._observe()

    def _observe(self) -> dict[str, np.ndarray]:
        self._observation = self.twin.observation()
        self._decision = self._prior.decide(self._observation)
        self._members = members_of(self._observation, self._decision, self.spec)
        features = encode(self._observation, self._decision, self._members, self.spec, self.energy_weight)
        return dict(zip(self.agents, features))

    def decision(self, actions: dict[str, np.ndarray]):
        """The prior with the agents' draft lengths (GameError for a missing or misshapen action)."""
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise GameError(f"no action for {', '.join(missing)}")
        try:
            choices = np.stack([np.asarray(actions[agent]).reshape(-1) for agent in self.agents])
            return decode(self._observation, self._decision, self._members, choices, self.spec)
        except ValueError as error:
            raise GameError(f"actions must be {self.spec.max_users} choices per agent: {error}") from None

    def _potential(self, requests) -> float:
        return potential(sum(request.remaining for request, _ in requests), self._draft_s, self.twin.slot_s)

    def step(self, actions: dict[str, np.ndarray]):
        """(observations, rewards, terminated, truncated, infos) in the multi-agent convention ("__all__")."""
        decision = self.decision(actions)
        edge_of = {a.user: a.edge for a in decision.allocations}
        begin, end = self.twin.now, self.twin.now + self.twin.slot_s
        # Every request in the system at the slot's start (running or queued), with its energy so far, by edge.
        present = {edge: [] for edge in self.edges}
        for user in self.twin.users:
            present[edge_of[user.index]] += [(request, request.energy_j) for request in user.queue]
        before = {edge: self._potential(requests) for edge, requests in present.items()}
        finished = self.twin.step(decision)
        rewards = {}
        for edge, requests in present.items():
            busy = energy = 0.0
            for request, energy_before in requests:
                left = request.finished if request.finished is not None else end
                busy += max(0.0, min(end, left) - max(begin, request.arrival))
                energy += request.energy_j - energy_before
            rewards[agent_id(edge)] = edge_reward(busy, energy, before[edge], self._potential(requests),
                                                  self.twin.slot_s, self.energy_weight, self.gamma,
                                                  self.spec.max_users)
        over = self.twin.finished
        # The last observation is a real one even when the episode is cut at its horizon: PPO bootstraps the
        # truncated return from its value, which a made-up (zero) observation would make arbitrary.
        observations = self._observe()
        infos = {agent: {"finished_requests": len(finished)} for agent in self.agents}
        terminated = {agent: False for agent in self.agents} | {"__all__": False}
        truncated = {agent: over for agent in self.agents} | {"__all__": over}
        return observations, rewards, terminated, truncated, infos
