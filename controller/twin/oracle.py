"""An oracle for the twin: two-phase matching with the draft-length lever on what only the twin knows — the
channel of the coming slots and the requests about to arrive — to measure the headroom of better information.

Each slot it shows ``tma-equal`` (tuned draft lengths) an observation in which every pair's spectral efficiency is
its mean over the next ``horizon_slots`` slots (an outage slot contributes no rate, so an edge about to fade looks
as poor as it will be; a pair in an outage now stays unusable) and every user whose request arrives within the
horizon is already busy with that request's answer length (so it is placed, and room is kept, before it
arrives).  Pending work is exact in the twin already.  A lookahead heuristic, not a proven optimum: it bounds
what knowing the future is worth to these policies, and is reported as such (docs/evaluation.md).  Only the twin
can run it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from controller.policies.base import Decision, Observation, Policy
from controller.policies.tma import TmaEqual
from controller.twin.simulator import DOWN, UP, DigitalTwin

DEFAULT_HORIZON_SLOTS = 20


class LookaheadOracle(Policy):
    name = "oracle-lookahead"
    from_caller: ClassVar[frozenset[str]] = frozenset({"twin", "parallel"})

    def __init__(self, seed: int = 0, *, twin: DigitalTwin, horizon_slots: int = DEFAULT_HORIZON_SLOTS,
                 parallel: bool = True) -> None:
        super().__init__(seed)
        if horizon_slots < 1:
            raise ValueError(f"horizon_slots must be at least 1, got {horizon_slots}")
        self.twin, self.horizon = twin, horizon_slots
        self.matching = TmaEqual(parallel=parallel, draft_lengths="tuned")

    def decide(self, observation: Observation) -> Decision:
        twin = self.twin
        edge_ids = [edge.edge for edge in observation.edges]
        user_ids = [user.user for user in observation.users]
        slots = [(twin.slot + twin.trace_offset + i) % twin.trace.metadata.num_slots for i in range(self.horizon)]
        window = twin.trace.se[:, slots][:, :, user_ids][:, :, :, edge_ids]  # [direction, slot, U, E]
        # The mean rate ahead, but a pair in an outage now stays unusable now (the decision holds for this slot).
        ahead = np.where(window[:, 0] > 0, window.mean(axis=1), 0.0)  # [direction, U, E]
        coming: dict[int, int] = {}
        for request in twin.upcoming(self.horizon):
            coming.setdefault(request.user, request.answer_tokens)
        users = tuple(replace(user, se_up=tuple(np.asarray(ahead[UP, row], dtype=float)),
                              se_down=tuple(np.asarray(ahead[DOWN, row], dtype=float)),
                              pending_tokens=user.pending_tokens or coming.get(user.user, 0))
                      for row, user in enumerate(observation.users))
        return self.matching.decide(Observation(observation.slot, observation.edges, users))
