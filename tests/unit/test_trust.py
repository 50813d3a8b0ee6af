"""What the controller believes of a report, and the share floor under every user (pure logic, known answers)."""

from __future__ import annotations

import pytest

from controller.config import Assumptions
from controller.policies.base import Allocation, Decision
from controller.share_floor import with_share_floor
from controller.trust import MIN_OBSERVED_DRAFTS, DeviceReport, ObservedUser, believe
from tandem.shares import floored

ASSUME = Assumptions(draft_seconds_per_token=0.04, acceptance=0.7, pending_tokens=32,
                     min_draft_seconds_per_token=0.01, min_acceptance=0.2)
LIE = DeviceReport(draft_seconds_per_token=0.0, acceptance=0.0, pending_tokens=2**32 - 1)


def test_a_report_without_edge_observations_is_held_to_the_assumed_bounds():
    believed = believe(LIE, [], ASSUME)
    assert believed.pending_tokens == 32  # no open session anywhere: at most what a request is assumed to need
    assert believed.acceptance == 0.2  # the lowest acceptance believed before the edges have seen drafts
    assert believed.draft_seconds_per_token == 0.04  # 0 means "not measured": the assumption
    fast = believe(DeviceReport(1e-6, 0.7, 10), [], ASSUME)
    assert fast.draft_seconds_per_token == 0.01 and fast.pending_tokens == 10


def test_the_edges_observations_replace_or_bound_the_report():
    observed = [ObservedUser(remaining_tokens=12, sessions=1, drafted_tokens=40, accepted_tokens=30),
                ObservedUser(remaining_tokens=5, sessions=1, drafted_tokens=0, accepted_tokens=0)]
    believed = believe(LIE, observed, ASSUME)
    assert believed.pending_tokens == 17  # what its open sessions may still commit, summed over edges
    assert believed.acceptance == pytest.approx(0.75)  # counted by the edges, not reported
    few = [ObservedUser(100, 1, MIN_OBSERVED_DRAFTS - 1, 0)]
    assert believe(DeviceReport(0.04, 0.9, 50), few, ASSUME).acceptance == 0.9  # too few drafts seen: the report
    honest = believe(DeviceReport(0.04, 0.6, 8), observed, ASSUME)
    assert honest.pending_tokens == 8  # an honest report below the bound is taken as it is


def test_every_member_keeps_its_minimum_and_the_shares_still_fit():
    assert floored([0.997, 0.001, 0.001, 0.001], [0.125] * 4) == pytest.approx([0.625, 0.125, 0.125, 0.125])
    assert floored([0.25] * 4, [0.125] * 4) == [0.25] * 4  # nothing below the floor: unchanged
    assert floored([0.1, 0.2], [0.25] * 2) == pytest.approx([0.25, 0.25])  # a policy that left capacity unused
    raised = floored([0.9, 0.05, 0.05], [1 / 3] * 3)  # floor 1: an equal split
    assert raised == pytest.approx([1 / 3] * 3) and sum(raised) <= 1 + 1e-12


def test_the_floor_protects_busy_members_per_edge_and_per_resource():
    decision = Decision(3, (Allocation(0, 0, 0.9799, 0.5, 4), Allocation(1, 0, 0.02, 0.4999, 4),
                            Allocation(4, 0, 1e-4, 1e-4, 4), Allocation(2, 1, 1.0, 1.0, 4)))
    by_user = {a.user: a for a in with_share_floor(decision, 0.5, busy={0, 1, 2}).allocations}
    assert by_user[1].bandwidth_share == pytest.approx(0.25) and by_user[0].bandwidth_share == pytest.approx(0.7499)
    assert by_user[0].compute_share == 0.5 and by_user[1].compute_share == 0.4999  # already above the floor
    assert by_user[4].bandwidth_share == 1e-4  # idle (no open session): not raised, bandwidth left to the busy
    assert by_user[2].bandwidth_share == 1.0
    untouched = with_share_floor(decision, 0.5, busy=set())
    assert untouched.allocations == decision.allocations  # nobody busy: what the policy decided
    assert with_share_floor(decision, 0.0, busy={0, 1}).allocations == decision.allocations  # no floor


def test_observed_acceptance_rates_become_the_models_per_token_acceptance():
    from controller.estimator import acceptance_from_rate

    # A 4-token block accepts a + a^2 + a^3 + a^4 tokens on average: 0.75 per token gives 0.5127 of the drafts.
    assert acceptance_from_rate(0.75 * (1 - 0.75 ** 4) / (4 * 0.25), 4) == pytest.approx(0.75, abs=1e-9)
    assert acceptance_from_rate(0.6, 1) == 0.6 and acceptance_from_rate(1.0, 8) == 1.0
    assert acceptance_from_rate(0.0, 8) == 0.0
    observed = [ObservedUser(remaining_tokens=12, sessions=1, drafted_tokens=400, accepted_tokens=205)]
    assert believe(None, observed, ASSUME, draft_length=4).acceptance == pytest.approx(0.75, abs=0.01)
    assert believe(None, [], ASSUME, draft_length=4).acceptance == ASSUME.acceptance  # the assumption is α already


def test_the_edges_counts_give_the_same_acceptance_whatever_the_blocks_lengths():
    """While the draft-length lever changes a user's k, the edge's recent blocks mix lengths: accepted / (accepted +
    blocks cut short) is the per-token α for any mix (each accepted token a success, each rejection one failure),
    where accepted / drafted read at one length swung the lever between too short and too long blocks."""
    import numpy as np

    from edge_server.observations import DraftObservations

    edge = DraftObservations(recent_blocks=20_000)
    for drafted, accepted in ((4, 4), (4, 1), (2, 2), (2, 0), (1, 1)) * 4:
        edge.record(7, drafted, accepted)
    counts = edge.counts(7)
    assert (counts.drafted, counts.accepted, counts.rejected_blocks) == (52, 32, 8)
    observed = [ObservedUser(10, 1, counts.drafted, counts.accepted, counts.rejected_blocks)]
    assert believe(None, observed, ASSUME, draft_length=2).acceptance == pytest.approx(0.8)  # 32 of 40 trials
    # Geometric acceptance at alpha = 0.75 over blocks of 1..8 tokens: recovered at any draft length read.
    rng, alpha, mixed = np.random.default_rng(0), 0.75, DraftObservations(recent_blocks=20_000)
    for k in rng.integers(1, 9, size=20_000):
        accepted = 0
        while accepted < k and rng.random() < alpha:
            accepted += 1
        mixed.record(1, int(k), accepted)
    c = mixed.counts(1)
    for read_at in (1, 2, 4, 8):
        believed = believe(None, [ObservedUser(10, 1, c.drafted, c.accepted, c.rejected_blocks)], ASSUME, read_at)
        assert believed.acceptance == pytest.approx(alpha, abs=0.01)
