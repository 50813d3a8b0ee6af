"""A draft engine paced like the emulated phone (hardware pacing with time dilation, tandem/pacing.py).

Wraps any ``DraftEngine``: the real model computes the real logits, then the call is held until the profile's
time for that step x D has passed.  A step is one decode (``draft_seconds_per_token``) plus the prefill of the
context tokens the previous call did not cover (a new prompt, the tokens a verdict committed).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from device_client.draft import DraftEngine
from tandem.pacing import Pacer
from tandem.profiles import DeviceProfile


class PacedDraftEngine(DraftEngine):
    def __init__(self, inner: DraftEngine, profile: DeviceProfile, pacer: Pacer) -> None:
        self.inner, self.profile, self.pacer = inner, profile, pacer
        self.vocab_size = inner.vocab_size
        self.tokenizer_fingerprint = inner.tokenizer_fingerprint
        self.stop_ids = inner.stop_ids
        self._previous: Sequence[int] = ()

    def encode_chat(self, user_message: str) -> list[int]:
        return self.inner.encode_chat(user_message)

    def encode_text(self, text: str) -> list[int]:
        return self.inner.encode_text(text)

    def decode(self, token_ids: Sequence[int]) -> bytes:
        return self.inner.decode(token_ids)

    def step_seconds(self, context: Sequence[int]) -> float:
        """Profile time to produce the logits after ``context``, given what the previous call processed."""
        shared = _common_prefix(self._previous, context)
        self._previous = list(context)
        new_tokens = max(1, len(context) - shared)  # the last token is always decoded
        return self.profile.draft_seconds_per_token + self.profile.prefill_seconds_per_token * (new_tokens - 1)

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        started = time.perf_counter()
        logits = self.inner.next_logits(context)
        self.pacer.hold(started, self.step_seconds(context))
        return logits


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
