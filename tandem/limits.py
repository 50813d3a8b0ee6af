"""Per-identity limits every daemon applies to its callers: a call rate and a number of open streams.

An identity is the caller's certificate name (mutual TLS); callers in plaintext have none, and the services apply
no per-identity limit to them (development only).  Both limits forget identities that have gone quiet, so their
own memory stays bounded however many identities a CA issues.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

MAX_REMEMBERED = 4096  # identities a RateLimit keeps before it forgets the ones whose bucket is full again


class LimitExceeded(Exception):
    """The identity is over its limit; the message says which (services map it to RESOURCE_EXHAUSTED)."""


class RateLimit:
    """A token bucket per identity: ``burst`` calls at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        if not (rate > 0 and burst >= 1):
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst = rate, burst
        self._buckets: dict[str | None, tuple[float, float]] = {}  # identity -> (tokens, when)

    def take(self, identity: str | None) -> bool:
        """Whether the identity may make one more call now (it is counted if so)."""
        now = time.monotonic()
        tokens, when = self._buckets.get(identity, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens < 1:
            self._buckets[identity] = (tokens, now)
            return False
        self._buckets[identity] = (tokens - 1, now)
        if len(self._buckets) > MAX_REMEMBERED:
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate < self.burst}
        return True


class StreamLimit:
    """At most ``per_identity`` streams open at once per identity."""

    def __init__(self, per_identity: int) -> None:
        if per_identity < 1:
            raise ValueError(f"a stream limit must be at least 1, got {per_identity}")
        self.per_identity = per_identity
        self._open: Counter[str | None] = Counter()

    @contextmanager
    def hold(self, identity: str | None, what: str) -> Iterator[None]:
        """One stream of ``identity`` for the duration; LimitExceeded when it already holds its maximum."""
        if self._open[identity] >= self.per_identity:
            raise LimitExceeded(f"this identity already holds {self.per_identity} open {what}; close one first")
        self._open[identity] += 1
        try:
            yield
        finally:
            self._open[identity] -= 1
            if not self._open[identity]:
                del self._open[identity]
