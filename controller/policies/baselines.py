"""Baseline policies: what a cell does by default (strongest signal, equal shares), and a random association."""

from __future__ import annotations

import numpy as np

from controller.policies.base import Allocation, Decision, Observation, Policy


def equal_shares(observation: Observation, association: np.ndarray) -> Decision:
    """Each edge splits its bandwidth and compute equally among its users; ``association[i]`` is the position (in
    ``observation.edges``) of the edge of ``observation.users[i]``."""
    counts = np.bincount(association, minlength=len(observation.edges))
    return Decision(observation.slot, tuple(
        Allocation(user.user, observation.edges[e].edge, 1.0 / counts[e], 1.0 / counts[e], user.draft_length)
        for user, e in zip(observation.users, association.tolist())))


class MaxSinrEqual(Policy):
    """Each user with the edge of the best downlink spectral efficiency (the strongest SINR), equal shares."""

    name = "max-sinr-equal"

    def decide(self, observation: Observation) -> Decision:
        se = np.array([u.se_down for u in observation.users], dtype=float).reshape(len(observation.users),
                                                                                len(observation.edges))
        return equal_shares(observation, np.argmax(se, axis=1))  # ties: the first edge


class RandomEqual(Policy):
    """A uniformly random edge per user, equal shares; the same seed and slot give the same association."""

    name = "random"

    def decide(self, observation: Observation) -> Decision:
        rng = np.random.default_rng([self.seed, observation.slot])
        return equal_shares(observation, rng.integers(0, len(observation.edges), len(observation.users)))


class Alternate(Policy):
    """Moves every user to the next edge each slot, equal shares: a diagnostic that exercises migration (user i
    is on edge (i + slot) mod E), not a policy to run."""

    name = "alternate"

    def decide(self, observation: Observation) -> Decision:
        users = np.arange(len(observation.users))
        return equal_shares(observation, (users + observation.slot) % len(observation.edges))
