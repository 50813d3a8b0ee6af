"""Concurrent sessions on one edge are independent: each decides its tokens as it does alone.

What Tandem guarantees (docs/design.md, "Reproducibility"): a session's tokens are a function of the prompt, the
seed and the numbers the engines compute.  Where the target engine's numbers do not depend on the batch shape or
the cache path (vLLM on AVX2 CPUs, llama.cpp for blocks: measured bit for bit), concurrent runs equal solo runs
token for token.  Where they do (vLLM's bf16 kernels on AMX CPUs switch with the number of tokens in an engine
step), a concurrent run may part from its solo run, but only at a decision taken from different numbers, by no
more than the engine's numerical noise.  The edge's verification log records every decision's inputs, so the test
checks exactly that (harness/decisions.py): both runs' verdicts replay from their records, the device drafted what its
q and the position-keyed uniform give, and at the first decision that differs the two runs' inputs differed
(identical inputs deciding differently would be a logic error) by at most ``NUMERICAL_NOISE_NATS``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from device_client.draft import LlamaCppDraftEngine
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from device_client.result import DecodeResult
from tandem.sampling import SamplingConfig
from tandem.verification_log import read_log
from harness.figures import REPORT
from harness.decisions import check_same_request
from harness.teacher_forcing import NEAR_TIE_EPSILON

PROMPTS = (
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about cats.",
    "Count from one to ten.",
)


SAMPLED = SamplingConfig(temperature=0.7, top_k=10, seed=11)


# edge-only decoding is vLLM's own decode step (no verification log), whose numbers are not batch-invariant on
# CPU (measured: greedy near-ties part ways between a solo and a concurrent run), so edge-only is checked greedy
# and a divergence must be a near-tie of the target (checked by teacher forcing).
@pytest.mark.parametrize("mode, sampling", [("psd", SAMPLED), ("sd", SamplingConfig()), ("edge-only", SamplingConfig())],
                         ids=["psd-sampled", "sd-greedy", "edge-only-greedy"])
def test_four_concurrent_sessions_match_solo(edge, prepared, mode, sampling):
    # One draft engine (llama.cpp context) per device, as on four phones.
    drafts = [LlamaCppDraftEngine(prepared.draft_gguf) for _ in PROMPTS]

    def run(index: int) -> DecodeResult:
        connection = EdgeConnection(edge.address)
        try:
            return generate(connection, drafts[index], GenerationRequest(PROMPTS[index], mode, 32, sampling))[0]
        finally:
            connection.close()

    solo = [run(i) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(run, range(len(PROMPTS))))
    if mode == "edge-only":
        _check_edge_only(edge, drafts, solo, together)
        return
    top = 2 if sampling.greedy else sampling.top_k  # the candidates a decision depends on (sampling sets a top-k)
    figures = []
    logged = read_log(edge.verification_log)
    for index, (alone, concurrent) in enumerate(zip(solo, together)):
        runs = [(alone.session_id, alone.token_ids), (concurrent.session_id, concurrent.token_ids)]
        if divergence := check_same_request(logged, runs, top, f"session {index}"):
            figures.append({"session": index, **divergence})
    REPORT[f"concurrency_{edge_name(edge)}_{mode}"] = {"sessions": len(PROMPTS), "divergent": len(figures),
                                                       "divergences": figures}


def edge_name(edge) -> str:
    return edge.args[edge.args.index("--engine") + 1]


def _check_edge_only(edge, drafts, solo: list[DecodeResult], together: list[DecodeResult]) -> None:
    connection = EdgeConnection(edge.address)
    for index, (alone, concurrent) in enumerate(zip(solo, together)):
        alone, concurrent = alone.token_ids, concurrent.token_ids
        if alone == concurrent:
            continue
        split = next(i for i, (a, b) in enumerate(zip(alone, concurrent)) if a != b)
        prompt_ids = drafts[index].encode_chat(PROMPTS[index])
        scored = connection.score(prompt_ids + alone[: split + 1], len(prompt_ids) + split, 8).positions[0]
        logprobs = dict(zip(scored.top_ids, scored.top_logprobs))
        assert alone[split] in logprobs and concurrent[split] in logprobs, "diverged outside the target's top 8"
        gap = abs(logprobs[alone[split]] - logprobs[concurrent[split]])
        assert gap <= NEAR_TIE_EPSILON, f"session {index} diverged at token {split} by a gap of {gap}"
    connection.close()
