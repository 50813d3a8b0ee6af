"""Devices emulated in one process share one copy of the draft model (``tandem.llamacpp.load_weights``), each a
llama.cpp context of its own on it: they draft exactly what devices with a model each draft, bit for bit, and an
extra device costs its context, not a model."""

from __future__ import annotations

import numpy as np

from device_client.draft import LlamaCppDraftEngine

PROMPTS = ["Give three tips for learning a new language.", "Why is the sky blue?"]


def _process_memory_mb() -> float:
    """Resident memory of this process, each page counted once (Pss from smaps_rollup)."""
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Pss in /proc/self/smaps_rollup")


def _draft_run(engine: LlamaCppDraftEngine, prompt: str, steps: int = 24) -> tuple[list[int], list[np.ndarray]]:
    """Greedy drafting with a rejection every fifth token (the cache rolls back two tokens, as after a verdict)."""
    tokens = engine.encode_chat(prompt)
    drafted, rows = [], []
    for step in range(steps):
        if step % 5 == 4:
            tokens = tokens[:-2]
        row = engine.next_logits(tokens)
        rows.append(row.copy())
        tokens.append(int(np.argmax(row)))
        drafted.append(tokens[-1])
    return drafted, rows


def test_devices_sharing_the_model_draft_exactly_as_devices_with_their_own(prepared):
    shared = [LlamaCppDraftEngine(prepared.draft_gguf, n_ctx=1024) for _ in PROMPTS]
    own = [LlamaCppDraftEngine(prepared.draft_gguf, n_ctx=1024, shared_weights=False) for _ in PROMPTS]
    assert shared[0]._weights is shared[1]._weights and own[0]._weights is not own[1]._weights
    assert own[0]._weights is not shared[0]._weights
    # Interleaved, as a fleet's devices run: one device's context never disturbs another's.
    for index in (0, 1, 0):
        for engines in (shared, own):
            engines[index]._context.forget()
        shared_tokens, shared_rows = _draft_run(shared[index], PROMPTS[index])
        own_tokens, own_rows = _draft_run(own[index], PROMPTS[index])
        assert shared_tokens == own_tokens
        assert all(np.array_equal(a, b) for a, b in zip(shared_rows, own_rows)), "logits differ bit for bit"
    assert shared[0].tokenizer_fingerprint == own[0].tokenizer_fingerprint == prepared.tokenizer_fingerprint


def test_a_device_on_shared_weights_costs_its_context_not_a_model(prepared):
    first = LlamaCppDraftEngine(prepared.draft_gguf, n_ctx=1024)  # the process's copy exists from here on
    _draft_run(first, PROMPTS[0], steps=2)
    before = _process_memory_mb()
    extra = [LlamaCppDraftEngine(prepared.draft_gguf, n_ctx=1024) for _ in range(4)]
    for engine in extra:
        _draft_run(engine, PROMPTS[0], steps=2)
    per_device = (_process_memory_mb() - before) / len(extra)
    model_mb = prepared.draft_gguf.stat().st_size / 2**20
    # A context at 1,024 tokens: 22.5 MB of KV cache plus the compute buffer's touched pages.
    assert per_device < model_mb / 2, f"{per_device:.0f} MB per device on shared weights (model {model_mb:.0f} MB)"
