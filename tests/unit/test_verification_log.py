"""The verification log's replay and divergence analysis, on synthetic records with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_server.audit import VerificationLogWriter
from tandem.sampling import BlockVerdict, Candidates, PositionRandom, SamplingConfig, SparseDist, verify_block
from tandem.verification_log import (
    BlockRecord,
    decisions,
    drafted_from,
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
    assert abs(split.target_difference - 0.03) < 1e-9 and abs(split.margin_a - 0.01) < 1e-9  # half the gap
    assert first_divergence([a], [a]) is None


def test_logprob_difference_counts_a_token_only_one_list_holds():
    a = candidates({1: -0.5, 2: -1.0, 3: -2.0})
    b = candidates({1: -0.5, 2: -1.2, 4: -2.5})
    # token 3 is not among b's candidates, so under b it lies at most at -2.5: at least 0.5 apart
    assert logprob_difference(a, b, top=3) == 0.5
    assert abs(logprob_difference(a, b, top=2) - 0.2) < 1e-12  # only tokens 1 and 2 compared


def test_decisions_across_blocks_and_the_device_draw():
    """Two blocks: the first fully accepted (its bonus decides position +2), the second corrected at once."""
    greedy = SamplingConfig()
    after = candidates({1: -0.1, 2: -3.0})
    first = record([candidates({4: -0.1, 5: -3.0}), candidates({6: -0.1, 7: -3.0}), after], [4, 6], [], greedy)
    second = BlockRecord.of("s", POSITION + 3, greedy, [9], [], [candidates({3: -0.1, 9: -3.0}), after],
                            verify_block([9], [], [candidates({3: -0.1, 9: -3.0}), after], greedy, POSITION + 3), 1, 0)
    got = [(d.position, d.kind, d.token, d.drafted) for d in decisions([first, second])]
    assert got == [(40, "accepted", 4, 4), (41, "accepted", 6, 6), (42, "bonus", 1, None), (43, "corrected", 3, 9)]
    q = SparseDist(np.array([7, 8]), np.array([0.25, 0.75]))
    u = PositionRandom(5, PositionRandom.DEVICE).uniform(POSITION, PositionRandom.DRAFT)
    drawn = [d for d in decisions([record([target_with_p7(0.5), after], [7 if u < 0.25 else 8], [q])])][0]
    assert drafted_from(drawn, u) and not drafted_from(replace(drawn, drafted=8 if u < 0.25 else 7), u)


def test_runs_of_different_requests_are_refused_and_partial_lines_skipped(tmp_path):
    q = [SparseDist(np.array([7, 8]), np.array([0.5, 0.5]))]
    target = [target_with_p7(0.9), candidates({1: -0.1, 2: -np.inf, 3: -4.0})]
    a = record(target, [7], q)
    with pytest.raises(ValueError, match="not of one request"):
        first_divergence([a], [record(target, [7], q, config=SamplingConfig(temperature=1.0, top_k=3, seed=6))])
    path = tmp_path / "verification.jsonl"
    path.write_text(a.model_dump_json() + "\n" + a.model_dump_json()[:40])  # the edge is writing the second line
    assert read_log(path) == {"s": [a]}  # -inf survives the round trip


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
    first_kind = "accepted" if verdict.accepted else "corrected"
    assert len(kinds) == verdict.accepted + 1 and kinds[0] == (POSITION, first_kind)
