"""Target engine on vLLM: one resident ``AsyncLLM`` with prefix caching.

A block is verified by one request ``prefix + block`` with ``max_tokens=1``: its ``prompt_logprobs`` give the
target's top-N raw log-probabilities at every block position and the one output token's ``logprobs`` those at
the position after the block.  Both are the raw fp32 log-softmax whatever the sampling parameters, so
temperature/top-k/top-p are applied by ``tandem.sampling`` exactly when top_k <= N.

Prefix caching is what makes a warm verification cheap; each request carries its identity as ``cache_salt``, so
one identity's request never hits another's cached blocks (the hit would show in the verdict's timing).  It has a
trap: ``prompt_logprobs`` entries of
positions served from the cache are uninitialised memory.  Entry i is computed from position i-1, so the block's
entries are valid only when ``num_cached_tokens <= len(prefix) - 1``; otherwise (a block sent again) the request
is recomputed without reading the cache.  Requests handed over together are submitted in the same event-loop
tick so that vLLM's scheduler can put them in one engine step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import AsyncIterator, Sequence

from edge_server.engines.base import (CacheOwner, EngineInfo, ScoredBlock, ScoredPosition, ScoreRequest, StepObserver,
                                      TargetEngine)
from tandem.models import fingerprint_tokens, hf_tokens, load_hf_config
from tandem.sampling import Candidates, SamplingConfig

log = logging.getLogger(__name__)


class VllmTargetEngine(TargetEngine):
    def __init__(
        self,
        model_dir: Path,
        max_context: int,
        max_top_n: int,
        block_size: int,
        enforce_eager: bool,
        kv_cache_gib: int,
    ) -> None:
        self._model_dir = model_dir
        self._max_context = max_context
        self._max_top_n = max_top_n
        self._block_size = block_size
        self._enforce_eager = enforce_eager
        self._kv_cache_gib = kv_cache_gib
        self._llm = None
        self.cache_misses = 0  # verifications recomputed because the cache covered the block (see module doc)

    async def start(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self._kv_cache_gib))
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        config = load_hf_config(self._model_dir)
        args = AsyncEngineArgs(
            model=str(self._model_dir),
            dtype="bfloat16",
            max_model_len=self._max_context,
            block_size=self._block_size,
            enable_prefix_caching=True,
            enforce_eager=self._enforce_eager,
            max_logprobs=self._max_top_n,
            logprobs_mode="raw_logprobs",
            seed=0,
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self.info = EngineInfo(
            engine="vllm",
            model=str(self._model_dir),
            vocab_size=int(config["vocab_size"]),
            tokenizer_fingerprint=fingerprint_tokens(hf_tokens(self._model_dir)),
            max_context=self._max_context,
            max_top_n=self._max_top_n,
        )
        # The first request with prompt logprobs takes ~20 s of one-off set-up; pay it before serving.
        await self._run([1, 2, 3, 4], self._score_params(2, read_cache=True))

    async def stop(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    async def score_blocks(self, requests: Sequence[ScoreRequest]) -> list[ScoredBlock]:
        return list(await asyncio.gather(*(self._score(request) for request in requests)))

    async def _score(self, request: ScoreRequest) -> ScoredBlock:
        tokens = list(request.prefix) + list(request.block)
        owner = request.cache_owner
        output = await self._run(tokens, self._score_params(request.top_n, read_cache=True), owner)
        if output.num_cached_tokens is None or output.num_cached_tokens > len(request.prefix) - 1:
            self.cache_misses += 1
            output = await self._run(tokens, self._score_params(request.top_n, read_cache=False), owner)
        n = len(request.prefix)
        positions = [output.prompt_logprobs[i] for i in range(n, len(tokens))]
        positions.append(output.outputs[0].logprobs[0])
        return ScoredBlock([_candidates(position, request.top_n) for position in positions], output.num_cached_tokens)

    async def generate(
        self, prompt: Sequence[int], config: SamplingConfig, max_tokens: int, stop_ids: Sequence[int],
        cache_owner: CacheOwner = None, on_step: StepObserver | None = None,
    ) -> AsyncIterator[list[int]]:
        # vLLM decodes a started request on its own and preempts it itself: it cannot tell re-reads (on_step unused).
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=config.temperature,
            top_k=config.top_k if config.top_k else -1,
            top_p=config.top_p if 0 < config.top_p < 1 else 1.0,
            seed=config.seed,
            stop_token_ids=list(stop_ids),
            ignore_eos=True,  # stops are the device's stop_ids only, as in the speculative modes
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        async for output in self._llm.generate(_prompt(prompt, cache_owner), params, uuid.uuid4().hex):
            if output.outputs[0].token_ids:
                yield list(output.outputs[0].token_ids)

    async def teacher_force(self, tokens: Sequence[int], start: int, top_n: int,
                            cache_owner: CacheOwner = None) -> list[ScoredPosition]:
        output = await self._run(list(tokens), self._score_params(top_n, read_cache=False), cache_owner)
        scored = []
        for i in range(start, len(tokens)):
            position = output.prompt_logprobs[i]
            token = int(tokens[i])
            scored.append(ScoredPosition(token, float(position[token].logprob), _candidates(position, top_n)))
        return scored

    def _score_params(self, top_n: int, read_cache: bool):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=top_n,
            logprobs=top_n,
            detokenize=False,  # with detokenize=True a cached call fails (OverflowError) in vLLM-cpu 0.32
            skip_reading_prefix_cache=not read_cache,
        )

    async def _run(self, tokens: list[int], params, cache_owner: CacheOwner = None):
        final = None
        async for output in self._llm.generate(_prompt(tokens, cache_owner), params, uuid.uuid4().hex):
            final = output
        return final


def _prompt(tokens: Sequence[int], cache_owner: CacheOwner = None):
    """The request's tokens; salted with its identity, so that only the same identity's requests share cached
    blocks (plaintext: no identity, one shared cache)."""
    from vllm.inputs import TokensPrompt

    prompt = TokensPrompt(prompt_token_ids=list(tokens))
    if cache_owner is not None:
        prompt["cache_salt"] = cache_owner
    return prompt


def _candidates(position: dict, top_n: int) -> Candidates:
    """vLLM's logprobs of one position: the top-N (rank <= N) plus the actual token, which we leave out."""
    entries = [(token, lp.logprob) for token, lp in position.items() if lp.rank is not None and lp.rank <= top_n]
    return Candidates.from_unsorted([t for t, _ in entries], [lp for _, lp in entries])
