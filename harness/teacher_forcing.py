"""Greedy losslessness by teacher forcing: is every emitted token the target's argmax at its position?

"Identical to plain greedy decoding" is not a sound check (a k-token batch and a one-token step compute slightly
different floating-point logits); scoring the emitted sequence through the target in one forward pass is. Where a
token is not the argmax, the top-2 gap must be below NEAR_TIE_EPSILON: a near-tie decided differently by the other
batch shape. Such positions are returned so that tests report them.
"""

from __future__ import annotations

# Largest top-2 log-probability gap seen to flip between batch shapes here: vLLM bf16 0.25 (decode step vs
# prefill), llama.cpp 0.17.  Anything wider is a real error.
NEAR_TIE_EPSILON = 0.3
# How far two computations of one position's raw log-probabilities may lie apart when only the batch shape or the
# cache path differ.  bf16 logits keep 8 significant bits: at SmolLM2's logit magnitudes (8..32) one rounding step
# is 0.0625..0.125 nats, and the largest shift measured between kernels (vLLM decode step vs prefill) was 0.25.
# A logic error (a wrong row, another session's numbers) moves log-probabilities by whole nats.
NUMERICAL_NOISE_NATS = 0.5


def near_tie_gaps(connection, prompt_ids: list[int], token_ids: list[int], label: str = "") -> list[float]:
    """Gaps of the positions where a token is not the target's argmax; AssertionError if one is not a near-tie."""
    scored = connection.score(prompt_ids + token_ids, len(prompt_ids), 2).positions
    assert [p.token_id for p in scored] == token_ids
    gaps = []
    for index, position in enumerate(scored):
        if position.token_id == position.top_ids[0]:
            continue
        gap = position.top_logprobs[0] - position.token_logprob
        assert gap <= NEAR_TIE_EPSILON, (
            f"{label}: token {index} is {position.token_id} but the target's argmax is {position.top_ids[0]} by a "
            f"log-probability gap of {gap:.4f} (> {NEAR_TIE_EPSILON})"
        )
        gaps.append(round(gap, 4))
    return gaps
