"""The rejection sampler against p on synthetic distributions: chi-square tests (seeded, so deterministic)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from tandem.sampling import (
    Candidates,
    PositionRandom,
    SamplingConfig,
    SparseDist,
    sample,
    truncate,
    verify_block,
    verify_greedy,
)

VOCAB = 12
TRIALS = 20000
P_VALUE_FLOOR = 1e-3  # seeded runs: a fixed outcome, far from this floor when the sampler is right


def random_logprobs(rng: np.random.Generator, sharpness: float = 1.0) -> Candidates:
    logits = rng.normal(size=VOCAB) * sharpness
    logprobs = logits - np.log(np.exp(logits).sum())
    return Candidates.from_unsorted(np.arange(VOCAB), logprobs)


def brute_force_truncation(c: Candidates, config: SamplingConfig) -> dict[int, float]:
    """The reference: softmax(l / T) over the top-k, then the smallest prefix with mass >= top_p."""
    order = sorted(range(len(c.token_ids)), key=lambda i: (-c.logprobs[i], c.token_ids[i]))
    if config.top_k:
        order = order[: config.top_k]
    weights = np.array([np.exp(c.logprobs[i] / config.temperature) for i in order])
    probs = weights / weights.sum()
    if 0 < config.top_p < 1:
        kept, mass = [], 0.0
        for i, p in zip(order, probs):
            kept.append((i, p))
            mass += p
            if mass >= config.top_p:
                break
        total = sum(p for _, p in kept)
        return {int(c.token_ids[i]): p / total for i, p in kept}
    return {int(c.token_ids[i]): p for i, p in zip(order, probs)}


CONFIGS = [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=5),
    SamplingConfig(temperature=1.3, top_p=0.8),
    SamplingConfig(temperature=0.8, top_k=8, top_p=0.95),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_truncation_matches_reference(config):
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = random_logprobs(rng)
        got = truncate(c, config).as_dict()
        want = brute_force_truncation(c, config)
        assert got.keys() == want.keys()
        for token, p in want.items():
            assert got[token] == pytest.approx(p, rel=1e-9)


def test_truncation_from_top_n_is_exact():
    """With N >= top_k candidates only, the truncated distribution equals the one from the full vocabulary."""
    rng = np.random.default_rng(2)
    config = SamplingConfig(temperature=0.8, top_k=4, top_p=0.95)
    for _ in range(20):
        full = random_logprobs(rng)
        top_n = Candidates(full.token_ids[:6], full.logprobs[:6])
        assert truncate(top_n, config).as_dict() == pytest.approx(truncate(full, config).as_dict())


def _chi_square(samples: list, expected: dict) -> float:
    counts = Counter(samples)
    assert set(counts) <= set(expected), f"sampled outside the support: {set(counts) - set(expected)}"
    keys = sorted(expected)
    assert len(keys) > 1, "a one-token distribution tests nothing"
    observed = np.array([counts.get(k, 0) for k in keys], dtype=float)
    wanted = np.array([expected[k] for k in keys]) * len(samples)
    return chisquare(observed, wanted / wanted.sum() * observed.sum()).pvalue


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_sample_follows_distribution(config):
    rng = np.random.default_rng(3)
    dist = truncate(random_logprobs(rng), config)
    assert _chi_square([sample(dist, rng.random()) for _ in range(TRIALS)], dist.as_dict()) > P_VALUE_FLOOR


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("block", [1, 3])
def test_rejection_sampling_emits_target_distribution(config, block):
    """Draft from q, verify against p: the first two emitted tokens are distributed as p (jointly).

    The synthetic target and draft do not depend on the context, so under the target every emitted token is an
    independent draw from its position's p.
    """
    rng = np.random.default_rng(4 + block)
    target = [random_logprobs(rng) for _ in range(block + 1)]
    draft = [random_logprobs(rng, sharpness=1.5) for _ in range(block)]
    p = [truncate(c, config) for c in target]
    q = [truncate(c, config) for c in draft]
    firsts, pairs = [], []
    for trial in range(TRIALS):
        # The position-keyed randomness of one session per trial, as the edge and device use it.
        trial_config = SamplingConfig(config.temperature, config.top_k, config.top_p, seed=trial)
        device = PositionRandom(trial, PositionRandom.DEVICE)
        drafted = [sample(q[i], device.uniform(i, PositionRandom.DRAFT)) for i in range(block)]
        verdict = verify_block(drafted, q, target, trial_config, 0)
        emitted = drafted[: verdict.accepted] + [verdict.next_token]
        firsts.append(emitted[0])
        if len(emitted) >= 2:
            pairs.append(emitted[1])
    assert _chi_square(firsts, p[0].as_dict()) > P_VALUE_FLOOR
    if block > 1:
        # Given that a second token was emitted in the same block, it is still distributed as p[1].
        assert _chi_square(pairs, p[1].as_dict()) > P_VALUE_FLOOR


def test_rejection_sampling_accepts_identical_draft_always():
    rng = np.random.default_rng(5)
    config = SamplingConfig(temperature=0.9, top_k=6)
    target = [random_logprobs(rng) for _ in range(4)]
    q = [truncate(c, config) for c in target[:3]]
    for _ in range(200):
        drafted = [sample(d, rng.random()) for d in q]
        assert verify_block(drafted, q, target, config, 0).accepted == 3


def test_greedy_verification_and_ties():
    tie = Candidates.from_unsorted([7, 3, 9], [-0.5, -0.5, -2.0])
    assert tie.argmax() == 3  # lowest id wins a tie
    target = [Candidates.from_unsorted([1, 2], [-0.1, -3.0]), tie, Candidates.from_unsorted([5], [0.0])]
    assert verify_greedy([1, 3], target).accepted == 2
    assert verify_greedy([1, 3], target).next_token == 5
    verdict = verify_greedy([1, 7], target)
    assert (verdict.accepted, verdict.next_token) == (1, 3)
    verdict = verify_greedy([2, 3], target)
    assert (verdict.accepted, verdict.next_token) == (0, 1)


def test_top_of_logits_keeps_ties_by_id():
    logits = np.array([0.0, 5.0, 5.0, 1.0, 5.0])
    c = Candidates.top_of_logits(logits, 2)
    assert c.token_ids.tolist() == [1, 2]


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1).validate(100, 10)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(temperature=1, top_p=1.5).validate(100, 10)
    with pytest.raises(ValueError, match="top_k"):
        SamplingConfig(temperature=1, top_k=50).validate(100, 10)
    with pytest.raises(ValueError, match="verified exactly"):
        SamplingConfig(temperature=1).validate(100, 10)  # whole vocabulary but only top-10 known
    SamplingConfig(temperature=0).validate(100, 10)  # greedy needs no bound
    SamplingConfig(temperature=1, top_k=10).validate(100, 10)


def test_position_random_is_keyed_and_uniform():
    a, b = PositionRandom(7, PositionRandom.EDGE), PositionRandom(7, PositionRandom.EDGE)
    assert a.uniform(5, PositionRandom.ACCEPT) == b.uniform(5, PositionRandom.ACCEPT)
    assert a.uniform(5, PositionRandom.ACCEPT) != a.uniform(5, PositionRandom.SAMPLE)
    assert a.uniform(5, PositionRandom.ACCEPT) != PositionRandom(7, PositionRandom.DEVICE).uniform(5, PositionRandom.ACCEPT)
    draws = [PositionRandom(seed, 0).uniform(3, 0) for seed in range(5000)]
    observed, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert chisquare(observed).pvalue > P_VALUE_FLOOR


def test_residual_normalises():
    from tandem.sampling import residual

    p = SparseDist(np.array([0, 1, 2]), np.array([0.5, 0.3, 0.2]))
    q = SparseDist(np.array([0, 3]), np.array([0.9, 0.1]))
    r = residual(p, q).as_dict()
    assert r == pytest.approx({1: 0.6, 2: 0.4})
