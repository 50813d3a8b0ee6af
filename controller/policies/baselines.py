"""Baseline policies: what a cell does (strongest signal; with handover hysteresis), a load balancer, a random
association; all with equal shares."""

from __future__ import annotations

import numpy as np

from controller.policies.base import Allocation, Decision, Observation, Policy
from controller.policies.draft_length import check_draft_lengths, tune_draft_lengths


def equal_shares(observation: Observation, association: np.ndarray) -> Decision:
    """Each edge splits its bandwidth and compute equally among its users; ``association[i]`` is the position (in
    ``observation.edges``) of the edge of ``observation.users[i]``."""
    counts = np.bincount(association, minlength=len(observation.edges))
    return Decision(observation.slot, tuple(
        Allocation(user.user, observation.edges[e].edge, 1.0 / counts[e], 1.0 / counts[e], user.draft_length)
        for user, e in zip(observation.users, association.tolist())))


def _downlink_se(observation: Observation) -> np.ndarray:
    """[U, E] downlink spectral efficiency (bit/s/Hz) of every user to every edge, by position."""
    return np.array([u.se_down for u in observation.users], dtype=float).reshape(len(observation.users),
                                                                              len(observation.edges))


class MaxSinrEqual(Policy):
    """Each user with the edge of the best downlink spectral efficiency (the strongest SINR), equal shares."""

    name = "max-sinr-equal"

    def decide(self, observation: Observation) -> Decision:
        return equal_shares(observation, np.argmax(_downlink_se(observation), axis=1))  # ties: the first edge


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


def sinr_db(spectral_efficiency: np.ndarray) -> np.ndarray:
    """SINR in dB from spectral efficiencies (Shannon: SINR = 2^SE − 1; an outage is −inf)."""
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.exp2(np.minimum(spectral_efficiency, 60.0)) - 1.0)


def _downlink_sinr_db(observation: Observation) -> np.ndarray:
    """[U, E] downlink SINR in dB of every user to every edge."""
    return sinr_db(_downlink_se(observation))


class MaxSinrHysteresis(Policy):
    """Each user stays with its serving edge until another one's downlink SINR beats it by ``offset_db`` for
    ``time_to_trigger`` slots in a row (3GPP's A3 handover event), then moves there; equal shares.

    What a cell does: a bare max-SINR association hands over at every flicker of the channel and pays a re-prefill
    each time.  The policy remembers each user's serving edge and candidate between slots (deterministic for the
    sequence of observations it is given); a user whose serving edge left the topology or is in an outage moves to
    the strongest edge at once."""

    name = "max-sinr-hysteresis"

    def __init__(self, seed: int = 0, offset_db: float = 3.0, time_to_trigger: int = 3,
                 draft_lengths: str = "fixed") -> None:
        super().__init__(seed)
        self.draft_lengths = check_draft_lengths(draft_lengths)
        if not (np.isfinite(offset_db) and 0 <= offset_db <= 30):
            raise ValueError(f"offset_db must lie in [0, 30], got {offset_db}")
        if not (isinstance(time_to_trigger, int) and 1 <= time_to_trigger <= 1000):
            raise ValueError(f"time_to_trigger must be a whole number of slots in [1, 1000], got {time_to_trigger}")
        self.offset_db, self.time_to_trigger = float(offset_db), time_to_trigger
        self._serving: dict[int, int] = {}  # user -> edge id
        self._candidate: dict[int, tuple[int, int]] = {}  # user -> (edge id, slots it has been better)

    def decide(self, observation: Observation) -> Decision:
        sinr = _downlink_sinr_db(observation)
        position = {edge.edge: i for i, edge in enumerate(observation.edges)}
        association = np.empty(len(observation.users), dtype=int)
        for row, user in enumerate(observation.users):
            best = int(np.argmax(sinr[row]))  # ties: the first edge
            serving = position.get(self._serving.get(user.user, -1))
            if serving is None or not np.isfinite(sinr[row, serving]):
                serving, self._candidate[user.user] = best, (-1, 0)
            elif sinr[row, best] > sinr[row, serving] + self.offset_db:
                edge, slots = self._candidate.get(user.user, (-1, 0))
                slots = slots + 1 if edge == observation.edges[best].edge else 1
                if slots >= self.time_to_trigger:
                    serving, slots = best, 0
                self._candidate[user.user] = (observation.edges[best].edge, slots)
            else:
                self._candidate[user.user] = (-1, 0)
            association[row] = serving
            self._serving[user.user] = observation.edges[serving].edge
        decision = equal_shares(observation, association)
        # The draft-length lever alone on a cell's association (``draft_lengths="tuned"``): what k is worth.
        return decision if self.draft_lengths == "fixed" else tune_draft_lengths(observation, decision)


class LeastLoadedEqual(Policy):
    """Each user, longest pending request first, joins the reachable edge whose pending work per unit of compute is
    lowest so far (ties: the stronger downlink); equal shares.  A load balancer that knows nothing of the radio
    beyond coverage."""

    name = "least-loaded"

    def decide(self, observation: Observation) -> Decision:
        sinr = _downlink_sinr_db(observation)
        compute = np.array([edge.timing.compute_scale for edge in observation.edges], dtype=float)
        load = np.zeros(len(observation.edges))
        pending = np.array([user.pending_tokens for user in observation.users], dtype=float)
        association = np.empty(len(observation.users), dtype=int)
        for row in np.lexsort((np.arange(len(pending)), -pending)):
            reachable = np.isfinite(sinr[row])
            if not reachable.any():
                reachable[:] = True  # no coverage anywhere: any edge (it waits for a link either way)
            per_compute = np.where(reachable, (load + pending[row]) / compute, np.inf)
            choices = np.flatnonzero(per_compute == per_compute.min())
            association[row] = int(choices[np.argmax(sinr[row, choices])])
            load[association[row]] += pending[row]
        return equal_shares(observation, association)
