"""The verification log's replay and divergence analysis, on synthetic records with known answers."""

from __future__ import annotations

import numpy as np

from edge_server.audit import VerificationLogWriter
from tandem.sampling import BlockVerdict, Candidates, PositionRandom, SamplingConfig, SparseDist, verify_block
from tandem.verification_log import (
    BlockRecord,
    decisions,
    first_divergence,
    logprob_difference,
    read_log,
    replay,
)

SAMPLED = SamplingConfig(temperature=1.0, top_k=3, seed=5)
POSITION = 40  # absolute position of the block's first token


def candidates(logprobs: dict[int, float]) -> Candidates:
    return Candidates.from_unsorted(list(logprobs), list(logprobs.values()))


def record(target: list[Candidates], draft: list[int], q: list[SparseDist], config: SamplingConfig = SAMPLED,
           session: str = "s", verdict: BlockVerdict | None = None) -> BlockRecord:
    verdict = verdict or verify_block(draft, q, target, config, POSITION)
    return BlockRecord.of(session, POSITION, config, draft, q, target, verdict, batch_size=1, cached_tokens=0)


def target_with_p7(p7: float) -> Candidates:
    """Raw log-probabilities whose top-3 truncation at T=1 gives token 7 probability ``p7``, token 8 the rest."""
    return candidates({7: np.log(p7), 8: np.log(1 - p7) - 1e-9, 9: -40.0})


def test_a_flip_from_different_numbers_is_explained_as_numerical():
    u = PositionRandom(SAMPLED.seed, PositionRandom.EDGE).uniform(POSITION, PositionRandom.ACCEPT)
    q = [SparseDist(np.array([7, 8]), np.array([0.9, 0.1]))]
    threshold = u * 0.9  # token 7 is accepted iff p(7) > u * q(7)
    after = candidates({1: -0.1, 2: -2.5, 3: -4.0})
    a = record([target_with_p7(threshold * 1.05), after], [7], q)
    b = record([target_with_p7(threshold * 0.95), after], [7], q)
    assert (a.accepted, b.accepted) == (1, 0)
    split = first_divergence([a], [b], top=3)
    assert split is not None and split.position == POSITION
    assert (split.a.kind, split.b.kind) == ("accepted", "corrected")
    assert not split.same_inputs
    assert 0.09 < split.target_difference < 0.11  # log(1.05 / 0.95)
    assert split.margin_a < split.target_difference and split.margin_b < split.target_difference
    assert split.uniforms["accept"] == u


def test_identical_inputs_that_decide_differently_are_a_logic_error():
    q = [SparseDist(np.array([7, 8]), np.array([0.5, 0.5]))]
    target = [target_with_p7(0.9), candidates({1: -0.1, 2: -2.5, 3: -4.0})]
    honest = record(target, [7], q)
    doctored = record(target, [7], q, verdict=BlockVerdict(0, 8))
    split = first_divergence([honest], [doctored], top=3)
    assert split is not None and split.same_inputs
    assert replay(doctored) != BlockVerdict(doctored.accepted, doctored.next_token)
    assert replay(honest) == BlockVerdict(honest.accepted, honest.next_token)


def test_greedy_near_tie_flip_and_no_divergence():
    greedy = SamplingConfig()
    a = record([candidates({4: -0.70, 5: -0.72}), candidates({1: -0.1, 2: -3.0})], [4], [], greedy)
    b = record([candidates({4: -0.73, 5: -0.71}), candidates({1: -0.1, 2: -3.0})], [4], [], greedy)
    assert (a.accepted, a.next_token, b.accepted, b.next_token) == (1, 1, 0, 5)
    split = first_divergence([a], [b])
    assert split.position == POSITION and not split.same_inputs
    assert abs(split.target_difference - 0.03) < 1e-9 and abs(split.margin_a - 0.02) < 1e-9
    assert first_divergence([a], [a]) is None


def test_logprob_difference_counts_a_token_only_one_list_holds():
    a = candidates({1: -0.5, 2: -1.0, 3: -2.0})
    b = candidates({1: -0.5, 2: -1.2, 4: -2.5})
    # token 3 is not among b's candidates, so under b it lies at most at -2.5: at least 0.5 apart
    assert logprob_difference(a, b, top=3) == 0.5
    assert abs(logprob_difference(a, b, top=2) - 0.2) < 1e-12  # only tokens 1 and 2 compared


def test_log_round_trip_and_decisions(tmp_path):
    q = [SparseDist(np.array([7, 8]), np.array([0.5, 0.5])), SparseDist(np.array([8]), np.array([1.0]))]
    target = [target_with_p7(0.99), candidates({8: -0.01, 9: -5.0, 1: -6.0}), candidates({1: -0.1, 2: -3.0, 3: -9.0})]
    written = [record(target, [7, 8], q, session="x"), record(target, [7, 8], q, session="y")]
    writer = VerificationLogWriter(tmp_path / "log" / "verification.jsonl")
    for item in written:
        writer.write(item)
    writer.close()
    sessions = read_log(tmp_path / "log" / "verification.jsonl")
    assert sessions == {"x": [written[0]], "y": [written[1]]}
    kinds = [(d.position, d.kind) for d in decisions(sessions["x"])]
    verdict = replay(written[0])
    assert len(kinds) == verdict.accepted + 1 and kinds[0] == (POSITION, "accepted" if verdict.accepted else "corrected")
