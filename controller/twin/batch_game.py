"""The draft-length game batched: ``DraftLengthGame`` (agents.py) over a ``BatchTwin``, every environment's edge
agents at once — what training samples (controller/twin/rllib_env.py).

The same game: each slot the heuristic ``max-sinr-hysteresis:draft_lengths=tuned`` decides (its A3 handover, equal
shares, each busy user's k from ``draft_length.best_lengths`` on the edge model), each edge's agent sees its members
as ``draft_agent.encode`` shows them and moves their k as ``draft_agent.decode`` does, and the reward is agents.py's
(time in system paid in its slot, energy, potential-based shaping).  Here the prior, the encoding, the decoding and
the reward are array code over environments × users; tests/unit/test_batch_twin.py checks them against the scalar
game's, observation for observation and reward for reward.
"""

from __future__ import annotations

import numpy as np

from controller.policies.baselines import sinr_db
from controller.policies.draft_agent import (EDGE_FEATURES, OBSERVATION_BOUND, USER_FEATURES, AgentSpec,
                                             edge_features, moved_lengths, user_features)
from controller.policies.draft_length import best_lengths
from controller.policies.mappo import prior_policy
from controller.twin.agents import check_slots, edge_reward, potential
from controller.twin.batch import BatchTwin
from tandem.edge_model import group_max, group_sums


class BatchPrior:
    """``max-sinr-hysteresis:draft_lengths=tuned`` for every user of every environment of a batch."""

    def __init__(self, twin: BatchTwin) -> None:
        self.twin = twin
        handover = prior_policy()  # its parameters: the one heuristic the agents correct
        self.offset_db, self.time_to_trigger = handover.offset_db, handover.time_to_trigger
        size = twin.envs * twin.users
        self.serving = np.full(size, -1)
        self.candidate = np.full(size, -1)
        self.candidate_slots = np.zeros(size, dtype=int)

    def association(self) -> np.ndarray:
        """[N·U] each user's edge position after this slot's handovers (3GPP A3 with the policy's defaults)."""
        sinr = sinr_db(self.twin.observe().se_down)
        rows = np.arange(len(sinr))
        best = np.argmax(sinr, axis=1)
        serving = self.serving
        lost = (serving < 0) | ~np.isfinite(sinr[rows, np.maximum(serving, 0)])
        better = ~lost & (sinr[rows, best] > sinr[rows, np.maximum(serving, 0)] + self.offset_db)
        slots = np.where(self.candidate == best, self.candidate_slots + 1, 1)
        trigger = better & (slots >= self.time_to_trigger)
        self.serving = np.where(lost | trigger, best, serving)
        self.candidate = np.where(better, best, -1)
        self.candidate_slots = np.where(better, np.where(trigger, 0, slots), 0)
        return self.serving.copy()

    def draft_lengths(self, association: np.ndarray) -> np.ndarray:
        """[N·U] each user's k: its best on its edge at equal shares for the busy reachable users, the scenario's
        default for the others (``tune_draft_lengths``)."""
        twin = self.twin
        default = twin.scenario.draft_length
        lengths = np.full(len(association), default, dtype=np.int64)
        rows = np.flatnonzero(twin.observe().busy & twin.reachable(association))
        if not len(rows):
            return lengths
        share = twin.equal_shares(association)
        current = np.full(len(association), default)
        comm, per_token_up = twin.link(rows, association, current, share)
        state = twin.rounds(rows, association, current, share, comm)
        groups, count = twin.groups(association)[rows], twin.envs * twin.edges
        k = current[rows].astype(float)
        # The longest block among the others on the edge (what a step's length also depends on).
        largest = group_max(groups, k, count)
        at_largest = group_sums(groups, (k == largest[groups]).astype(float), count)
        second = group_max(groups, np.where(k == largest[groups], 0.0, k), count)
        others = np.where((k == largest[groups]) & (at_largest[groups] == 1), second[groups], largest[groups])
        edge = association[rows]
        token = np.full(len(rows), twin.profile.device.draft_seconds_per_token)
        lengths[rows] = best_lengths(
            lambda candidate: twin.step_seconds(edge[:, None], state.blocks_per_step[:, None],
                                                np.maximum(candidate, others[:, None])),
            state, comm, per_token_up, k, token, np.full(len(rows), twin.profile.acceptance.per_token),
            np.full(len(rows), twin.scenario.longest_draft), twin.parallel)
        return lengths


class BatchDraftGame:
    """Every environment's edge agents: observations [N, E, observation size], choices and rewards [N, E]."""

    def __init__(self, twin: BatchTwin, spec: AgentSpec, energy_weights: np.ndarray, gamma: float = 0.99) -> None:
        check_slots(spec, twin.scenario)
        self.twin, self.spec, self.gamma = twin, spec, gamma
        self.energy_weights = np.broadcast_to(np.asarray(energy_weights, dtype=float), (twin.envs,))
        self._draft_s = twin.profile.device.draft_seconds_per_token

    def reset(self, seeds: list[int], requests=None) -> np.ndarray:
        self.twin.reset(seeds, requests)
        self.prior = BatchPrior(self.twin)
        return self._observe()

    def _observe(self) -> np.ndarray:
        twin = self.twin
        self._association = self.prior.association()
        self._prior_k = self.prior.draft_lengths(self._association)
        observed = twin.observe()
        groups, count = twin.groups(self._association), twin.envs * twin.edges
        # Members: busy users in user order, the first max_users of each edge.
        busy = observed.busy
        order = np.flatnonzero(busy)[np.argsort(groups[busy], kind="stable")]
        member_groups = groups[order]
        starts = np.searchsorted(member_groups, member_groups, side="left")
        rank = np.arange(len(order)) - starts
        keep = rank < self.spec.max_users
        self._members, self._member_groups, self._rank = order[keep], member_groups[keep], rank[keep]
        return self._encode(count)

    def _encode(self, count: int) -> np.ndarray:
        twin, spec, rows = self.twin, self.spec, self._members
        observed = twin.observe()
        features = np.zeros((count, spec.observation_size), dtype=np.float32)
        edge_of_group = np.tile(np.arange(twin.edges), twin.envs)
        env_of_group = np.repeat(np.arange(twin.envs), twin.edges)
        features[:, :EDGE_FEATURES] = edge_features(
            np.bincount(self._member_groups, minlength=count), twin.compute_scale[edge_of_group],
            twin.bandwidth[env_of_group, edge_of_group], self.energy_weights[env_of_group], spec)
        edge = self._association[rows]
        per_user = user_features(
            observed.se_up[rows, edge], observed.se_down[rows, edge], observed.pending[rows], observed.context[rows],
            self._draft_s, twin.profile.acceptance.per_token, self._prior_k[rows],
            observed.context_edge[rows] != edge)
        columns = EDGE_FEATURES + self._rank[:, None] * USER_FEATURES + np.arange(USER_FEATURES)[None, :]
        features[self._member_groups[:, None], columns] = per_user
        return np.clip(features, -OBSERVATION_BOUND, OBSERVATION_BOUND).reshape(twin.envs, twin.edges, -1)

    def draft_lengths(self, choices: np.ndarray) -> np.ndarray:
        """[N·U] the prior's k with each member's moved by its choice (``choices``: [N, E, max_users])."""
        twin = self.twin
        choices = np.asarray(choices).reshape(twin.envs * twin.edges, self.spec.max_users)
        lengths = self._prior_k.copy()
        rows = self._members
        lengths[rows] = moved_lengths(lengths[rows], choices[self._member_groups, self._rank],
                                      twin.scenario.longest_draft)
        return lengths

    def _present(self) -> np.ndarray:
        """Requests in the system at the slot's start (running or queued)."""
        r = self.twin.requests
        return np.flatnonzero((r.arrival_slot <= self.twin.slot) & np.isnan(r.finished))

    def step(self, choices: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(observations [N, E, size], rewards [N, E], whether the episodes are over)."""
        twin, r = self.twin, self.twin.requests
        lengths = self.draft_lengths(choices)
        count = twin.envs * twin.edges
        present = self._present()
        groups = twin.groups(self._association)[r.env[present] * twin.users + r.user[present]]
        before_energy = r.energy_j[present].copy()
        before = potential(group_sums(groups, r.remaining[present], count), self._draft_s, twin.slot_s)
        begin, end = twin.now, twin.now + twin.slot_s
        twin.step(self._association, lengths)
        left = np.where(np.isnan(r.finished[present]), end, r.finished[present])
        busy = np.maximum(0.0, np.minimum(end, left) - np.maximum(begin, r.arrival[present]))
        energy = group_sums(groups, r.energy_j[present] - before_energy, count)
        after = potential(group_sums(groups, r.remaining[present], count), self._draft_s, twin.slot_s)
        rewards = edge_reward(group_sums(groups, busy, count), energy, before, after, twin.slot_s,
                              np.repeat(self.energy_weights, twin.edges), self.gamma, self.spec.max_users)
        observations = self._observe()
        return observations, rewards.reshape(twin.envs, twin.edges), twin.finished
