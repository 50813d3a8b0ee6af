"""Target engine on llama.cpp: full logits, starts in a second, no batching across sessions.

Each session gets a context from a small pool (contexts share the process's one copy of the weights,
``tandem.llamacpp.load_weights``, so a context costs only its KV cache); the pool slot whose cached tokens share the
longest prefix with a request is reused, so a session that keeps its slot re-evaluates only its new tokens.  Slots
belong to the identity that used them last: another identity's request never reuses their cache (it gets an empty
slot, or the least recently used one wiped), so the time a verification takes says nothing about other clients'
prompts.  All llama.cpp calls run on one worker thread: on a small CPU one computation at a time is as fast as it
gets, and the event loop stays free for the network.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Sequence

import numpy as np

from edge_server.engines.base import (CacheOwner, EngineInfo, ScoredBlock, ScoredPosition, ScoreRequest, StepObserver,
                                      TargetEngine)
from tandem.llamacpp import LlamaContext, load_weights
from tandem.sampling import Candidates, PositionRandom, SamplingConfig, sample, truncate


class LlamaCppTargetEngine(TargetEngine):
    def __init__(self, gguf: Path, max_context: int, n_threads: int, slots: int) -> None:
        self._gguf = gguf
        self._max_context = max_context
        self._n_threads = n_threads
        self._slots: list[LlamaContext] = []
        self._max_slots = slots
        self._use_counter = 0
        self._last_use: dict[int, int] = {}
        self._owners: dict[int, CacheOwner] = {}  # slot -> the identity whose tokens it caches
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")

    async def start(self) -> None:
        first = await self._run(self._new_slot)
        self.info = EngineInfo(
            engine="llamacpp",
            model=str(self._gguf),
            vocab_size=first.n_vocab,
            tokenizer_fingerprint=await self._run(lambda: first.weights.tokens_fingerprint),
            max_context=self._max_context,
            max_top_n=first.n_vocab,
        )

    async def stop(self) -> None:
        self._executor.shutdown(wait=True)
        self._slots.clear()

    async def score_blocks(self, requests: Sequence[ScoreRequest]) -> list[ScoredBlock]:
        return [await self._run(self._score_one, request) for request in requests]

    async def generate(
        self, prompt: Sequence[int], config: SamplingConfig, max_tokens: int, stop_ids: Sequence[int],
        cache_owner: CacheOwner = None, on_step: StepObserver | None = None,
    ) -> AsyncIterator[list[int]]:
        random = PositionRandom(config.seed, PositionRandom.EDGE)
        tokens = list(prompt)
        stops = set(stop_ids)
        for _ in range(max_tokens):
            logits, evaluated = await self._run(self._evaluated_logits, tokens, cache_owner)
            if on_step is not None:
                on_step(evaluated)
            candidates = Candidates.top_of_logits(logits[0], config.candidates_needed(self.info.vocab_size))
            if config.greedy:
                token = candidates.argmax()
            else:
                token = sample(truncate(candidates, config), random.uniform(len(tokens), PositionRandom.SAMPLE))
            tokens.append(token)
            yield [token]
            if token in stops or len(tokens) >= self._max_context:
                return

    async def teacher_force(self, tokens: Sequence[int], start: int, top_n: int,
                            cache_owner: CacheOwner = None) -> list[ScoredPosition]:
        rows = await self._run(self._logits, tokens, start - 1, cache_owner)
        scored = []
        for offset, row in enumerate(rows[: len(tokens) - start]):
            token = int(tokens[start + offset])
            log_norm = np.log(np.exp(row - row.max()).sum()) + row.max()
            scored.append(ScoredPosition(token, float(row[token] - log_norm), Candidates.top_of_logits(row, top_n)))
        return scored

    def _score_one(self, request: ScoreRequest) -> ScoredBlock:
        tokens = list(request.prefix) + list(request.block)
        slot = self._slot_for(tokens, len(request.prefix) - 1, request.cache_owner)
        rows = slot.logits(tokens, len(request.prefix) - 1)
        return ScoredBlock([Candidates.top_of_logits(row, request.top_n) for row in rows], slot.last_reused)

    def _logits(self, tokens: Sequence[int], first: int, owner: CacheOwner) -> np.ndarray:
        return self._slot_for(tokens, first, owner).logits(tokens, first)

    def _evaluated_logits(self, tokens: Sequence[int], owner: CacheOwner) -> tuple[np.ndarray, int]:
        """The last row of logits and how many tokens the context had to evaluate for it."""
        slot = self._slot_for(tokens, len(tokens) - 1, owner)
        return slot.logits(tokens, len(tokens) - 1), len(tokens) - slot.last_reused

    def _slot_for(self, tokens: Sequence[int], first: int, owner: CacheOwner) -> LlamaContext:
        """The owner's slot already holding ``tokens[:first]`` (this session's), else an empty or new one, else
        the least recently used (wiped first if another identity's); a slot that lacks tokens before ``first``
        belongs to another session."""
        mine = [i for i in range(len(self._slots)) if self._owners[i] == owner]
        shared = {i: self._slots[i].shared_prefix(tokens) for i in mine}
        best = max(mine, key=lambda i: (shared[i], self._last_use[i]), default=None)
        if best is None or shared[best] < first:
            empty = [i for i, slot in enumerate(self._slots) if len(slot.cached_tokens) == 0]
            if empty:
                best = empty[0]
            elif len(self._slots) < self._max_slots:
                self._new_slot()
                best = len(self._slots) - 1
            else:  # evict the owner's own least recently used context first: its re-reads are then its own
                best = min(mine or range(len(self._slots)), key=lambda i: self._last_use[i])
            if self._owners[best] != owner:
                self._slots[best].forget()
                self._owners[best] = owner
        self._use_counter += 1
        self._last_use[best] = self._use_counter
        return self._slots[best]

    def _new_slot(self) -> LlamaContext:
        context = LlamaContext(load_weights(self._gguf), self._max_context, self._n_threads, all_logits=True)
        self._slots.append(context)
        self._last_use[len(self._slots) - 1] = 0
        self._owners[len(self._slots) - 1] = None
        return context

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
