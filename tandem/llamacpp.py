"""llama.cpp weights loaded once per process, and contexts whose KV cache follows a token sequence; shared by the
device's draft engine (one context per emulated device) and the edge's llama.cpp target engine (one per slot).

llama.cpp separates the model (weights, vocabulary) from a context (KV cache, compute buffers, logits).  The
high-level ``llama_cpp.Llama`` loads the model again for every instance: about 100 MB of repacked weights plus its
own mapping of the file, per device.  Here ``load_weights`` keeps one ``LlamaWeights`` per GGUF per process and every
``LlamaContext`` runs on it, so a context costs its KV cache and buffers only.  Contexts are built with the
parameters ``Llama`` uses (its defaults: flash attention off, ``n_ubatch`` = min(``n_batch``, 512), its YaRN
factors, no GPU layers, mmap), and
evaluate tokens in the same ``n_batch`` chunks, so a shared model computes bit for bit what a model of its own does.

Asking for logits of a sequence evaluates only what differs from what the cache already holds: the cache is rolled
back to the longest shared prefix (KV entries past it are removed), so a rejected draft costs nothing to undo.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from tandem.models import fingerprint_tokens

UBATCH_MAX = 512  # llama-cpp-python's default physical batch (``Llama(n_ubatch=512)``)


@dataclass(eq=False)
class LlamaWeights:
    """A GGUF loaded once: its weights, vocabulary and metadata.  Thread-safe to share: llama.cpp only reads it."""

    path: Path
    model: object  # llama_cpp._internals.LlamaModel
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab()

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        return self.model.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, token_ids: Sequence[int]) -> bytes:
        return self.model.detokenize(list(token_ids))

    def token_text(self, token_id: int) -> str:
        return self.model.token_get_text(token_id)

    def token_bos(self) -> int:
        return self.model.token_bos()

    def token_eos(self) -> int:
        return self.model.token_eos()

    @cached_property
    def tokens_fingerprint(self) -> str:
        """The fingerprint of the vocabulary's token strings, by id (those of the GGUF's tokenizer.ggml.tokens);
        computed once per copy of the weights, not once per device built on them (~40 ms each)."""
        return fingerprint_tokens(self.token_text(i) for i in range(self.n_vocab))


_loaded: dict[Path, LlamaWeights] = {}
_loading = threading.Lock()


def load_weights(gguf: Path, shared: bool = True) -> LlamaWeights:
    """The process's copy of ``gguf``, loaded on first use; ``shared=False`` loads a private copy (what every
    ``Llama`` instance does), kept for comparison only."""
    key = Path(gguf).resolve()
    with _loading:
        if shared and key in _loaded:
            return _loaded[key]
        import llama_cpp
        from llama_cpp import _internals

        # llama-cpp-python routes llama.cpp's log through this logger; ``Llama(verbose=False)`` sets it to errors.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        params.split_mode = llama_cpp.LLAMA_SPLIT_MODE_LAYER
        params.main_gpu = 0
        params.vocab_only = False
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        model = _internals.LlamaModel(path_model=str(key), params=params, verbose=False)
        weights = LlamaWeights(key, model, model.metadata())
        if shared:
            _loaded[key] = weights
        return weights


class LlamaContext:
    def __init__(self, weights: LlamaWeights, n_ctx: int, n_threads: int, all_logits: bool,
                 n_batch: int = 256) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.weights = weights
        self.all_logits = all_logits
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, n_ctx)
        self.n_vocab = weights.n_vocab
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, UBATCH_MAX)
        params.n_threads = params.n_threads_batch = n_threads
        params.rope_scaling_type = llama_cpp.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        params.attention_type = llama_cpp.LLAMA_ATTENTION_TYPE_UNSPECIFIED
        params.rope_freq_base = params.rope_freq_scale = 0
        params.yarn_ext_factor, params.yarn_attn_factor, params.yarn_beta_fast, params.yarn_beta_slow = -1, 1, 32, 1
        params.yarn_orig_ctx = 0
        params.embeddings = False
        params.offload_kqv = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = False
        # The native context directly, not ``_internals.LlamaContext``: that one registers itself with the model's
        # exit stack, so a shared model would keep every context it ever had alive.
        self._ctx = llama_cpp.llama_init_from_model(weights.model.model, params)
        if self._ctx is None:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens for {weights.path}")
        weakref.finalize(self, llama_cpp.llama_free, self._ctx)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        self._tokens = np.zeros(n_ctx, dtype=np.intc)  # what the KV cache holds, position by position
        self._n_cached = 0
        self._last_logits: np.ndarray | None = None  # logits after the last cached token (all_logits=False)
        self.last_reused = 0  # tokens the last ``logits`` call kept from the cache instead of evaluating them

    @property
    def cached_tokens(self) -> np.ndarray:
        return self._tokens[: self._n_cached]

    def forget(self) -> None:
        """Drop the cached tokens: the next call evaluates everything."""
        self._n_cached = 0
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
        if not self.all_logits and self._last_logits is not None and shared == len(tokens) == self._n_cached:
            self.last_reused = len(tokens)
            return self._last_logits[None, :]
        keep = self.last_reused = min(shared, first)
        rows = self._evaluate(tokens[keep:], keep)
        if self.all_logits:
            return rows[first - keep:]
        self._last_logits = rows[-1]
        return rows[-1:]

    def _evaluate(self, new_tokens: Sequence[int], keep: int) -> np.ndarray:
        """Roll the cache back to ``keep`` tokens and evaluate ``new_tokens`` after them, ``n_batch`` at a time;
        the logit rows of every new token (all_logits) or of the last one only."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._memory, -1, keep, -1)
        self._n_cached = keep
        self._last_logits = None
        rows = []
        for start in range(0, len(new_tokens), self.n_batch):
            chunk = list(new_tokens[start: start + self.n_batch])
            self._batch.set_batch(batch=chunk, n_past=self._n_cached, logits_all=self.all_logits)
            if (status := llama_cpp.llama_decode(self._ctx, self._batch.batch)) != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            self._tokens[self._n_cached: self._n_cached + len(chunk)] = chunk
            self._n_cached += len(chunk)
            if self.all_logits:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(len(chunk), self.n_vocab))
            else:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, -1), shape=(1, self.n_vocab))
            rows.append(logits.copy())
        return np.concatenate(rows) if self.all_logits else rows[-1]
