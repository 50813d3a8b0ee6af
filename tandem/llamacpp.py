"""A llama.cpp context whose KV cache follows a token sequence, shared by the device's draft engine and the
edge's llama.cpp target engine.

Asking for logits of a sequence evaluates only what differs from what the cache already holds: the cache is
rolled back to the longest shared prefix (llama-cpp-python's ``eval`` removes KV entries past ``n_tokens``), so a
rejected draft costs nothing to undo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tandem.models import fingerprint_tokens


class LlamaContext:
    def __init__(self, gguf: Path, n_ctx: int, n_threads: int, all_logits: bool, n_batch: int = 256) -> None:
        from llama_cpp import Llama

        self.all_logits = all_logits
        self.llama = Llama(
            model_path=str(gguf),
            n_ctx=n_ctx,
            n_batch=min(n_batch, n_ctx),
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=all_logits,
            verbose=False,
        )
        self.n_ctx = n_ctx
        self.n_vocab = self.llama.n_vocab()
        self._last_logits: np.ndarray | None = None  # logits after the last cached token (all_logits=False)
        self.last_reused = 0  # tokens the last ``logits`` call kept from the cache instead of evaluating them

    @property
    def cached_tokens(self) -> np.ndarray:
        return self.llama.input_ids[: self.llama.n_tokens]

    def forget(self) -> None:
        """Drop the cached tokens: the next call evaluates everything."""
        self.llama.n_tokens = 0
        self._last_logits = None

    def shared_prefix(self, tokens: Sequence[int]) -> int:
        cached = self.cached_tokens
        n = min(len(cached), len(tokens))
        if n == 0:
            return 0
        mismatch = np.flatnonzero(cached[:n] != np.asarray(tokens[:n]))
        return int(mismatch[0]) if mismatch.size else n

    def logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        """Logit rows for positions ``first .. len(tokens)-1``; row j predicts token j+1.

        Rows are always freshly computed from ``first`` on (never reused from an earlier, differently batched
        evaluation), except the single last row of an unchanged sequence.  Without ``all_logits`` only the last
        row (``first == len(tokens) - 1``) is available.
        """
        if not 0 <= first < len(tokens):
            raise ValueError(f"first={first} outside a sequence of {len(tokens)} tokens")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens exceed the context of {self.n_ctx}")
        if not self.all_logits and first != len(tokens) - 1:
            raise ValueError("this context keeps only the last row of logits")
        shared = self.shared_prefix(tokens)
        if (
            not self.all_logits
            and self._last_logits is not None
            and shared == len(tokens) == self.llama.n_tokens
        ):
            self.last_reused = len(tokens)
            return self._last_logits[None, :]
        keep = self.last_reused = min(shared, first)
        self.llama.n_tokens = keep
        self.llama.eval(list(tokens[keep:]))
        if self.all_logits:
            return np.array(self.llama.scores[first : len(tokens)], dtype=np.float32)
        row = np.ctypeslib.as_array(self.llama._ctx.get_logits_ith(-1), shape=(self.n_vocab,)).copy()
        self._last_logits = row
        return row[None, :]

    def tokens_fingerprint(self) -> str:
        return fingerprint_tokens(vocab_tokens(self.llama))


def vocab_tokens(llama) -> list[str]:
    """The token strings of a loaded model's vocabulary, by id (same strings as the GGUF's tokenizer.ggml.tokens)."""
    return [llama._model.token_get_text(i) for i in range(llama.n_vocab())]

