"""The device's draft model: a ``DraftEngine`` interface and its llama.cpp implementation.

The draft engine also owns the device's tokenizer (chat template, encode, decode): the device never sends text,
only token ids, so the tokenizer must be the target's (checked through the tokenizer fingerprint).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tandem.llamacpp import LlamaContext, load_weights
from tandem.sampling import Candidates, PositionRandom, SamplingConfig, SparseDist, sample, truncate


class DraftEngine(ABC):
    vocab_size: int
    tokenizer_fingerprint: str
    stop_ids: list[int]

    @abstractmethod
    def encode_chat(self, user_message: str) -> list[int]:
        """Token ids of a one-turn chat, with the model's chat template, ready for the assistant's answer."""

    @abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (special tokens written out, e.g. <|im_end|>, are parsed)."""

    @abstractmethod
    def decode(self, token_ids: Sequence[int]) -> bytes: ...

    @abstractmethod
    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        """Logits of the token after ``context`` (rolling the cache back to what ``context`` shares with it)."""


@dataclass(frozen=True)
class DraftToken:
    token_id: int
    dist: SparseDist | None  # q after truncation, as the edge will see it (None when greedy)
    seconds: float  # compute time spent drafting it
    # The draft's own odds, for guessing the verdict (device_client/speculation.py): its probability of this token
    # and its most likely other token with that one's probability (the guess of the edge's correction here).
    confidence: float = 1.0
    runner_up: int | None = None
    runner_up_prob: float = 0.0


def draft_token(
    engine: DraftEngine, context: Sequence[int], config: SamplingConfig, random: PositionRandom
) -> DraftToken:
    """Draft the token after ``context``: greedy argmax, or a sample of q (truncated like the target's p)."""
    started = time.perf_counter()
    candidates = Candidates.top_of_logits(engine.next_logits(context), config.candidates_needed(engine.vocab_size))
    if config.greedy:
        token, odds = candidates.argmax(), SparseDist(candidates.token_ids, np.exp(candidates.logprobs))
        return DraftToken(token, None, time.perf_counter() - started, *_odds(odds, token))
    q = truncate(candidates, config)
    # q crosses the link as float32: sample from exactly the renormalised float32 values the edge will use.
    probs = q.probs.astype(np.float32).astype(np.float64)
    q = SparseDist(q.token_ids, probs / probs.sum())
    token = sample(q, random.uniform(len(context), PositionRandom.DRAFT))
    return DraftToken(token, q, time.perf_counter() - started, *_odds(q, token))


def _odds(dist: SparseDist, token: int) -> tuple[float, int | None, float]:
    """The token's probability, and the likeliest other token with its probability (best first in ``dist``)."""
    others = np.flatnonzero(dist.token_ids != token)
    if others.size == 0:
        return dist.prob_of(token), None, 0.0
    best = others[np.argmax(dist.probs[others])]
    return dist.prob_of(token), int(dist.token_ids[best]), float(dist.probs[best])


class LlamaCppDraftEngine(DraftEngine):
    """A context of its own on the process's copy of the draft model (``tandem.llamacpp.load_weights``): devices
    emulated in one process share the weights and each holds only its KV cache.  ``shared_weights=False`` loads a
    private copy, as a device with a model of its own would."""

    def __init__(self, gguf: Path, n_ctx: int = 4096, n_threads: int = 1, shared_weights: bool = True) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        weights = self._weights = load_weights(gguf, shared=shared_weights)
        self._context = LlamaContext(weights, n_ctx, n_threads, all_logits=False)
        self.vocab_size = weights.n_vocab
        self.tokenizer_fingerprint = weights.tokens_fingerprint
        eos, bos = weights.token_eos(), weights.token_bos()
        self.stop_ids = [eos] if eos >= 0 else []
        self._add_bos = weights.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        template = weights.metadata.get("tokenizer.chat_template")
        self._formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=weights.token_text(eos) if eos >= 0 else "",
                bos_token=weights.token_text(bos) if bos >= 0 else "",
            )
            if template
            else None
        )

    def encode_chat(self, user_message: str) -> list[int]:
        if self._formatter is None:
            return self.encode_text(user_message)
        return self.encode_text(self._formatter(messages=[{"role": "user", "content": user_message}]).prompt)

    def encode_text(self, text: str) -> list[int]:
        return self._weights.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True)

    def decode(self, token_ids: Sequence[int]) -> bytes:
        return self._weights.detokenize(token_ids)

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        return self._context.logits(context, len(context) - 1)[0]
