"""Concurrent sessions on one edge are independent: each produces the tokens it produces alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from device_client.draft import LlamaCppDraftEngine
from device_client.generate import GenerationRequest, generate
from device_client.link import EdgeConnection
from tandem.sampling import SamplingConfig

PROMPTS = (
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about cats.",
    "Count from one to ten.",
)


@pytest.mark.parametrize("mode", ["psd", "edge-only"])
def test_four_concurrent_sessions_match_solo(edge, prepared, mode):
    # One draft engine (llama.cpp context) per device, as on four phones.
    drafts = [LlamaCppDraftEngine(prepared.draft_gguf) for _ in PROMPTS]
    sampling = SamplingConfig(temperature=0.7, top_k=10, seed=11)

    def run(index: int) -> list[int]:
        connection = EdgeConnection(edge.address)
        try:
            request = GenerationRequest(PROMPTS[index], mode, 32, sampling, ignore_eos=True)
            return generate(connection, drafts[index], request)[0].token_ids
        finally:
            connection.close()

    solo = [run(i) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(run, range(len(PROMPTS))))
    assert together == solo

