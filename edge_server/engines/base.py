"""The seam between the edge's session logic and whatever computes the target model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Sequence

from tandem.sampling import Candidates, SamplingConfig


# Whose cached prefixes a computation may reuse: the identity that asked for it (None in plaintext: everyone's).
# Engines never serve one identity's request from another's cache: a hit is visible in the time a verdict takes
# (``Verdict.verify_seconds``, or simply the round trip), which would tell one client about another's prompt.
CacheOwner = str | None
# Told, after each step of an autoregressive generation, how many tokens the engine evaluated for it (the new token,
# or more when its context had been evicted): what the scheduler charges beyond the step's price.
StepObserver = Callable[[int], None]


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    model: str
    vocab_size: int
    tokenizer_fingerprint: str
    max_context: int
    max_top_n: int  # candidates per position the engine can return; bounds exact sampling (top_k <= max_top_n)


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``block`` as a continuation of ``prefix``."""

    prefix: Sequence[int]
    block: Sequence[int]
    top_n: int
    cache_owner: CacheOwner = None


@dataclass(frozen=True)
class ScoredBlock:
    """The target's candidates at every block position and after it, and how they were computed."""

    candidates: list[Candidates]  # len(block) + 1
    cached_tokens: int | None  # prefix tokens served from the engine's cache (None: the engine cannot tell)


@dataclass(frozen=True)
class ScoredPosition:
    token_id: int  # the token actually at this position
    token_logprob: float  # its raw log-probability
    candidates: Candidates  # top candidates, best first


class TargetEngine(ABC):
    """A target model that scores drafted blocks and decodes autoregressively.

    ``score_blocks`` returns, for each request, ``len(block) + 1`` candidate lists: the target's raw
    log-probabilities at the position of every block token, then at the position after the block.  Requests
    handed over together may be computed in one batch (whose shape may change the numbers in their last bits:
    docs/design.md, "Reproducibility").
    """

    info: EngineInfo

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def score_blocks(self, requests: Sequence[ScoreRequest]) -> list[ScoredBlock]: ...

    @abstractmethod
    def generate(
        self, prompt: Sequence[int], config: SamplingConfig, max_tokens: int, stop_ids: Sequence[int],
        cache_owner: CacheOwner = None, on_step: StepObserver | None = None,
    ) -> AsyncIterator[list[int]]:
        """Autoregressive decoding; yields new tokens as they come (stop token included, then ends).  Engines that
        can tell call ``on_step`` with the tokens each step evaluated."""

    @abstractmethod
    async def teacher_force(self, tokens: Sequence[int], start: int, top_n: int,
                            cache_owner: CacheOwner = None) -> list[ScoredPosition]:
        """Scores of positions ``start .. len(tokens)-1`` of a whole sequence in one forward pass."""
