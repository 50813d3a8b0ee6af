"""The speculation of psd rounds (device_client/speculation.py) and the efficiency measure
(device_client/efficiency.py), on inputs with known answers."""

from __future__ import annotations

import pytest

from device_client.draft import DraftToken
from device_client.efficiency import RoundTiming, bound_seconds, breakdown, draft_token_seconds
from device_client.speculation import (Branch, PsdVariant, VariantError, adaptive_length, expected_tokens,
                                       full_accept, per_token_acceptance, ranked_branches, psd_seconds_per_token,
                                       speculation_kept, step_pays)


def token(token_id: int, confidence: float, runner_up: int | None = None, runner_up_prob: float = 0.0) -> DraftToken:
    return DraftToken(token_id, None, 0.0, confidence, runner_up, runner_up_prob)


@pytest.mark.parametrize("text,name", [("post", "post"), ("pre", "pre"), ("adaptive+pre", "pre+adaptive"),
                                       ("pre+branch+adaptive", "pre+branch+adaptive")])
def test_variants_parse_in_any_order_and_name_themselves_canonically(text, name):
    assert PsdVariant.parse(text).name == name


@pytest.mark.parametrize("text", ["", "fast", "pre+pre", "post+pre", "pre+"])
def test_unknown_or_repeated_variants_are_refused_with_the_known_ones(text):
    with pytest.raises(VariantError, match="pre, branch, adaptive"):
        PsdVariant.parse(text)


def test_a_confident_block_bets_on_the_full_accept():
    block = [token(1, 0.9, 7, 0.05), token(2, 0.9, 8, 0.05)]
    assert ranked_branches(block, 0.7, 1) == [full_accept(block, 0.7)] == [Branch(2)]
    assert full_accept(block, 0.5).chance == pytest.approx(0.125)


def test_an_unsure_token_makes_its_runner_up_the_bet():
    # P(x1 accepted, runner-up at x2) = 0.9 * 0.4 = 0.36 > P(full accept, bonus) = 0.9 * 0.45 * 0.7 = 0.28
    block = [token(1, 0.9, 7, 0.05), token(2, 0.45, 8, 0.4)]
    assert ranked_branches(block, 0.7, 1) == [Branch(1, 8)]


def test_bets_are_ranked_by_their_chance():
    # full 0.9 * 0.45 * 0.7 = 0.2835; (1, 8): 0.36; (0, 7): 0.05
    block = [token(1, 0.9, 7, 0.05), token(2, 0.45, 8, 0.4)]
    ranked = ranked_branches(block, 0.7, 3)
    assert ranked == [Branch(1, 8), Branch(2), Branch(0, 7)]
    assert [b.chance for b in ranked] == pytest.approx([0.36, 0.2835, 0.05])
    assert ranked_branches(block, 0.7, 2) == [Branch(1, 8), Branch(2)]
    assert ranked_branches([token(1, 1.0)], 0.7, 2) == [Branch(1)]  # no runner-up: only the full accept


def test_a_step_ahead_pays_when_it_ends_before_the_verdict_or_its_bet_is_worth_the_wait():
    assert step_pays(0.0, step_s=0.04, until_verdict_s=0.05)  # ends in time: free
    assert not step_pays(0.1, step_s=0.04, until_verdict_s=0.02)  # 0.02 s of waiting for a 10% chance of 0.04 s
    assert step_pays(0.6, step_s=0.04, until_verdict_s=0.02)  # a likely bet: worth the wait
    assert not step_pays(0.5, step_s=0.04, until_verdict_s=-0.01)  # the verdict is late already: still a cost
    # The bonus guess gains nothing by itself: with the step after it, 0.06 s of drafting for 0.05 s of flight
    assert not step_pays(0.6, step_s=0.04, until_verdict_s=0.05, steps=2)
    assert step_pays(0.6, step_s=0.04, until_verdict_s=0.06, steps=2)


def test_the_drafts_ahead_survive_only_the_verdict_they_bet_on():
    ahead = [token(5, 0.9), token(6, 0.9)]
    assert speculation_kept(Branch(2), 2, 5, ahead) == 1  # full accept, bonus guessed: drop the guess only
    assert speculation_kept(Branch(2), 2, 9, ahead) is None  # another bonus token
    assert speculation_kept(Branch(2), 1, 5, ahead) is None  # a rejection
    assert speculation_kept(Branch(1, 8), 1, 8, ahead) == 0  # the correction guessed: every draft ahead stays
    assert speculation_kept(Branch(1, 8), 1, 3, ahead) is None
    assert speculation_kept(Branch(2), 2, 5, []) is None  # nothing drafted ahead


def test_acceptance_per_token_counts_rejections_not_blocks():
    # 3 + 0 + 4 accepted; rejections in the first two blocks only (the third was fully accepted)
    assert per_token_acceptance([3, 0, 4], [4, 4, 4]) == pytest.approx(7 / 9)
    assert per_token_acceptance([], []) is None


def test_expected_tokens_per_round():
    assert expected_tokens(0.7, 4) == pytest.approx((1 - 0.7 ** 5) / 0.3)
    assert expected_tokens(0.0, 4) == 1.0 and expected_tokens(1.0, 4) == 5.0


def test_the_closed_form_of_a_psd_round():
    # alpha = 0.5, k = 1: kept with 0.25 -> max(0.04, 0.1) = 0.1, else 0.14; tokens 1.5
    assert psd_seconds_per_token(0.5, 1, 0.04, 0.1) == pytest.approx((0.25 * 0.1 + 0.75 * 0.14) / 1.5)


def test_the_adaptive_length_is_the_closed_forms_best_within_the_longest():
    for alpha, draft_s, round_trip in [(0.7, 0.04, 0.15), (0.9, 0.01, 0.2), (0.3, 0.04, 0.02)]:
        best = adaptive_length(alpha, draft_s, round_trip, 8)
        costs = [psd_seconds_per_token(alpha, k, draft_s, round_trip) for k in range(1, 9)]
        assert costs[best - 1] == min(costs)
    assert adaptive_length(0.95, 0.001, 1.0, 3) == 3  # cheap drafts, a long round trip: as long as allowed
    assert adaptive_length(0.2, 0.05, 0.01, 8) == 1  # poor acceptance, drafting dominates: one token


def test_the_bound_overlaps_each_round_trip_with_the_next_blocks_drafting():
    first = RoundTiming(4, 4, 0.16, 0.10, 0.08, 0.03, 0.0)  # round trip: 0.02 link + 0.05 verify
    second = RoundTiming(1, 0, 0.0, 0.20, 0.15, 0.0, 0.01)  # round trip: 0.05 link + 0.15 verify
    third = RoundTiming(4, 2, 0.0, 0.10, 0.08, 0.0, 0.0)  # round trip: 0.02 link + 0.08 verify
    assert first.link_s == pytest.approx(0.02) and first.verify_s == pytest.approx(0.05)
    # 4 drafts; then max(0.07, 1 draft), max(0.20, 4 drafts), max(0.10, nothing left to draft)
    assert bound_seconds([first, second, third], 0.04) == pytest.approx(0.16 + 0.07 + 0.20 + 0.10)
    assert bound_seconds([], 0.04) == 0.0


def test_the_breakdown_sums_to_the_time_measured():
    rounds = [RoundTiming(4, 2, 0.16, 0.10, 0.08, 0.03, 0.01), RoundTiming(2, 2, 0.0, 0.12, 0.09, 0.0, 0.02)]
    parts = breakdown(rounds, 0.6)
    assert parts == pytest.approx({"draft": 0.16, "link": 0.05, "queue": 0.03, "verify": 0.14, "late": 0.03,
                                   "other": 0.19})
    assert sum(parts.values()) == pytest.approx(0.6)


def test_the_draft_time_per_token_is_the_median_step_not_the_prefill():
    assert draft_token_seconds([0.5, 0.04, 0.04, 0.05]) == pytest.approx(0.045)
    assert draft_token_seconds([]) is None
