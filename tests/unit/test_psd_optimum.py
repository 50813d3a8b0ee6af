"""The optimal one-chain psd schedule (harness/psd_optimum.py) against answers worked out by hand, and against the
schedules it must not lose to."""

import pytest

from device_client.speculation import expected_tokens, psd_seconds_per_token
from harness.paths import REPO
from harness.psd_optimum import acceptance_for_gain, fit_runs, optimal_chain, sd_seconds_per_token
from tandem.profiles import load_profile

PROFILE = load_profile(REPO / "profiles" / "phone-1b-gpu-8b.yaml")
DRAFT_S = PROFILE.device.draft_seconds_per_token


def round_trip_on_testbed(n: int) -> float:
    """The bench's setting: 20 ms of link and the profile's H100 at a 5% share."""
    return 0.020 + float(PROFILE.edge.block_seconds(n)) / 0.05


def test_no_acceptance_sends_one_token_and_drafts_nothing_ahead():
    optimum = optimal_chain(0.0, DRAFT_S, round_trip_on_testbed)
    assert optimum.seconds_per_token == pytest.approx(DRAFT_S + round_trip_on_testbed(1))
    assert optimum.policy[0] == (1, 0)


@pytest.mark.parametrize("alpha, seconds, policy", [
    # One-token blocks, 1 s per draft step, 1.5 s per round trip.  Sending at once costs 2.5 s for 1 + alpha tokens.
    # Two steps ahead (the bonus guess, then the next block's token) cost 3 s from nothing, then 2 s per round while
    # the bet holds (alpha^2): at 0.9, (3 + 0.81 * 2 / 0.19) s for (1.9 + 0.81 * 1.9 / 0.19) tokens.
    (0.5, 2.5 / 1.5, (1, 0)),
    (0.9, (3 + 0.81 * 2 / 0.19) / (1.9 + 0.81 * 1.9 / 0.19), (1, 2)),
])
def test_one_token_blocks_worked_by_hand(alpha, seconds, policy):
    optimum = optimal_chain(alpha, 1.0, lambda n: 1.5, longest=1)
    assert optimum.seconds_per_token == pytest.approx(seconds)
    assert optimum.policy[0] == policy


@pytest.mark.parametrize("alpha", [0.5, 0.7, 0.9])
def test_never_slower_than_sd_or_post_verify(alpha):
    optimum = optimal_chain(alpha, DRAFT_S, round_trip_on_testbed).seconds_per_token
    for k in range(1, 11):
        assert optimum <= (k * DRAFT_S + round_trip_on_testbed(k)) / expected_tokens(alpha, k) + 1e-12
    for k in range(1, 4):  # the closed form drafts k + 1 ahead, which fits in the round trip up to k = 3 here
        assert optimum <= psd_seconds_per_token(alpha, k, DRAFT_S, round_trip_on_testbed(k)) + 1e-12


def test_a_free_link_after_a_hold_only_helps_and_more_acceptance_only_helps():
    plain = [optimal_chain(a, DRAFT_S, round_trip_on_testbed).seconds_per_token for a in (0.6, 0.7, 0.8)]
    relaxed = [optimal_chain(a, DRAFT_S, round_trip_on_testbed,
                             round_trip_after_hold=lambda n: round_trip_on_testbed(n) - 0.020).seconds_per_token
               for a in (0.6, 0.7, 0.8)]
    assert all(r <= p for r, p in zip(relaxed, plain))
    assert plain == sorted(plain, reverse=True)


def test_the_profile_leaves_no_room_for_1_3_over_sd():
    """docs/benchmarks.md's claim: at the profile's acceptance of 0.7 no one-chain schedule reaches x1.3 over sd."""
    sd = min((k * DRAFT_S + round_trip_on_testbed(k)) / expected_tokens(0.7, k) for k in range(1, 11))
    ratio = sd / optimal_chain(0.7, DRAFT_S, round_trip_on_testbed).seconds_per_token
    assert 1.1 < ratio < 1.3


@pytest.mark.parametrize("alpha, draft_s", [(1.0, 0.04), (-0.1, 0.04), (0.7, 0.0)])
def test_refuses_a_model_without_an_answer(alpha, draft_s):
    with pytest.raises(ValueError):
        optimal_chain(alpha, draft_s, round_trip_on_testbed)


def test_the_acceptance_a_gain_needs_is_where_the_optimum_first_reaches_it():
    needed = acceptance_for_gain(1.3, DRAFT_S, round_trip_on_testbed, 8)
    assert needed is not None and 0.7 < needed < 0.9
    for alpha, reaches in ((needed - 0.002, False), (needed, True)):
        sd = sd_seconds_per_token(alpha, DRAFT_S, round_trip_on_testbed, 8)
        assert (sd / optimal_chain(alpha, DRAFT_S, round_trip_on_testbed, 8).seconds_per_token >= 1.3) == reaches
    assert acceptance_for_gain(1.3, DRAFT_S, lambda n: 0.001, 8) is None  # an edge faster than a draft step


def test_acceptance_in_runs_is_fitted_from_blocks_verified_from_scratch():
    # Blocks of 4 accepting 0, 4 and 2: first tokens 2 of 3; after an accepted token, 3 of 3 and 1 of 2.
    assert fit_runs([0, 4, 2], [4, 4, 4]) == (pytest.approx(2 / 3), pytest.approx(0.8))
    assert fit_runs([], []) is None


def test_runs_with_a_first_token_like_the_rest_are_independent_acceptance():
    plain = optimal_chain(0.7, DRAFT_S, round_trip_on_testbed)
    same = optimal_chain(0.7, DRAFT_S, round_trip_on_testbed, first_alpha=0.7)
    assert same.seconds_per_token == pytest.approx(plain.seconds_per_token)
    # sd at k = 1 with a first token accepted half the time: 1.5 tokens per round of t_draft + round trip.
    assert sd_seconds_per_token(0.9, 1.0, lambda n: 1.5, 1, first_alpha=0.5) == pytest.approx(2.5 / 1.5)
