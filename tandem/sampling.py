"""Token distributions and lossless speculative verification.

One module holds every rule that decides which token is emitted, so the device (drafting), the edge (verifying)
and the tests all apply exactly the same arithmetic:

* ``truncate`` turns raw log-probabilities of candidate tokens into the sampling distribution after temperature,
  top-k and top-p, in that order (vLLM's order).  Because the raw log-softmax normaliser cancels in the
  temperature-scaled softmax over the kept set, the top-N candidates with N >= top_k are enough to compute the
  truncated distribution *exactly*; this is what makes verification against vLLM's ``prompt_logprobs`` exact.
* ``verify_block`` is speculative verification.  Greedy: accept the longest prefix where the draft equals the
  target's argmax; the next token is the target's argmax at the first mismatch (or after the block).  Sampling:
  modified rejection sampling (Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
  ICML 2023, Alg. 1; Chen et al., "Accelerating LLM Decoding with Speculative Sampling", 2023): accept draft
  token x_i ~ q with probability min(1, p(x_i)/q(x_i)); at the first rejection emit a sample of
  norm(max(0, p - q)); after a fully accepted block emit a bonus sample of p at the next position.  The emitted
  tokens are then distributed exactly as p, whatever q is.

Ties are broken by the lowest token id everywhere (argmax, ordering of candidates), as vLLM's greedy sampler does.

Randomness is keyed by position (``PositionRandom``): the uniform numbers that draft, accept or sample the token
at absolute position j depend only on (seed, stream, j).  Each position is decided once, by numbers that the
tokens before it never saw, so the sampler stays exact; and the output depends on the seed and the models'
numbers only, not on timing (how far a parallel drafter happened to run ahead, how sessions interleaved).
(llama.cpp's logits themselves shift slightly with the KV-cache history, so sd and psd may still part ways.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """What the user asked for.  temperature 0 means greedy; top_k 0 and top_p 0 or 1 mean "off"."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def candidates_needed(self, vocab_size: int) -> int:
        """How many of a position's best tokens decide the choice: 2 for greedy (argmax, and its tie-break
        neighbour), else top_k (the whole vocabulary when top_k is off)."""
        return 2 if self.greedy else self.top_k or vocab_size

    def validate(self, vocab_size: int, max_top_k: int) -> None:
        """Raise ValueError with a user-facing reason when the parameters cannot be honoured exactly."""
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.temperature > 100:
            raise ValueError(f"temperature must be at most 100, got {self.temperature}")
        if not np.isfinite(self.top_p) or not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must lie in [0, 1] (0 or 1 = off), got {self.top_p}")
        if self.top_k < 0 or self.top_k > vocab_size:
            raise ValueError(f"top_k must lie in [0, {vocab_size}] (0 = off), got {self.top_k}")
        if self.candidates_needed(vocab_size) > max_top_k:
            raise ValueError(
                f"sampling with top_k={self.top_k or 'off'} cannot be verified exactly by this edge: "
                f"it needs 1 <= top_k <= {max_top_k} (the target's distribution is known only over its "
                f"top {max_top_k} tokens)"
            )


@dataclass(frozen=True)
class Candidates:
    """Raw (untempered) log-probabilities of some tokens at one position, best first, ties by lowest id."""

    token_ids: np.ndarray  # int64
    logprobs: np.ndarray  # float64

    @staticmethod
    def from_unsorted(token_ids: Sequence[int] | np.ndarray, logprobs: Sequence[float] | np.ndarray) -> "Candidates":
        ids = np.asarray(token_ids, dtype=np.int64)
        lps = np.asarray(logprobs, dtype=np.float64)
        order = np.lexsort((ids, -lps))  # primary: logprob descending; secondary: id ascending
        return Candidates(ids[order], lps[order])

    @staticmethod
    def top_of_logits(logits: np.ndarray, n: int) -> "Candidates":
        """The n best tokens of a full logit vector, as raw log-probabilities."""
        logits = np.asarray(logits, dtype=np.float64)
        n = min(n, logits.shape[0])
        shifted = logits - logits.max()
        log_norm = np.log(np.exp(shifted).sum())
        if n == logits.shape[0]:
            ids = np.arange(n)
        else:
            # Widen the partition so that every token tied with the n-th is present before the id tie-break.
            kth = np.partition(shifted, -n)[-n]
            ids = np.flatnonzero(shifted >= kth)
        candidates = Candidates.from_unsorted(ids, shifted[ids] - log_norm)
        return Candidates(candidates.token_ids[:n], candidates.logprobs[:n])

    def argmax(self) -> int:
        return int(self.token_ids[0])


@dataclass(frozen=True)
class SparseDist:
    """A probability distribution over a few token ids (all others have probability zero)."""

    token_ids: np.ndarray  # int64, distinct
    probs: np.ndarray  # float64, sums to 1

    def prob_of(self, token_id: int) -> float:
        hits = np.flatnonzero(self.token_ids == token_id)
        return float(self.probs[hits[0]]) if hits.size else 0.0

    def as_dict(self) -> dict[int, float]:
        return {int(t): float(p) for t, p in zip(self.token_ids, self.probs)}


def truncate(candidates: Candidates, config: SamplingConfig) -> SparseDist:
    """The sampling distribution after temperature, top-k and top-p (needs top_k candidates, or all)."""
    if config.greedy:
        return SparseDist(np.array([candidates.argmax()], dtype=np.int64), np.array([1.0]))
    ids, logprobs = candidates.token_ids, candidates.logprobs
    if config.top_k:
        ids, logprobs = ids[: config.top_k], logprobs[: config.top_k]
    scaled = logprobs / config.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if 0 < config.top_p < 1:
        # Keep the smallest best-first prefix whose mass reaches top_p (the token that crosses it included).
        cumulative = np.cumsum(probs)
        keep = int(np.searchsorted(cumulative, config.top_p, side="left")) + 1
        ids, probs = ids[:keep], probs[:keep] / cumulative[min(keep, len(cumulative)) - 1]
    return SparseDist(ids, probs)


class PositionRandom:
    """Uniform numbers in [0, 1) keyed by (seed, stream, position, purpose); see the module docstring."""

    DRAFT, ACCEPT, SAMPLE = 0, 1, 2  # purposes
    DEVICE, EDGE = 0, 1  # streams

    def __init__(self, seed: int, stream: int) -> None:
        self.seed = seed
        self.stream = stream

    def uniform(self, position: int, purpose: int) -> float:
        return float(np.random.default_rng([self.seed, self.stream, position, purpose]).random())


def sample(dist: SparseDist, uniform: float) -> int:
    """Draw one token from ``dist`` by inverting its CDF at ``uniform``."""
    cumulative = np.cumsum(dist.probs)
    index = int(np.searchsorted(cumulative, uniform * cumulative[-1], side="right"))
    return int(dist.token_ids[min(index, len(dist.token_ids) - 1)])


def residual(p: SparseDist, q: SparseDist) -> SparseDist:
    """norm(max(0, p - q)): the distribution to sample after a rejection."""
    q_probs = q.as_dict()
    mass = np.array([max(0.0, float(pp) - q_probs.get(int(t), 0.0)) for t, pp in zip(p.token_ids, p.probs)])
    total = mass.sum()
    if total <= 0.0:
        # Only reachable through floating-point round-off when p == q; then p itself is the right answer.
        return p
    keep = mass > 0
    return SparseDist(p.token_ids[keep], mass[keep] / total)


@dataclass(frozen=True)
class BlockVerdict:
    accepted: int  # number of leading draft tokens accepted
    next_token: int  # correction at the first rejection, or the bonus token after a full accept


def verify_greedy(draft_ids: Sequence[int], target: Sequence[Candidates]) -> BlockVerdict:
    """Greedy verification: ``target[i]`` are the target's candidates for the position of ``draft_ids[i]``;
    ``target[len(draft_ids)]`` is the position after the block."""
    _check_lengths(draft_ids, target)
    for i, token in enumerate(draft_ids):
        best = target[i].argmax()
        if best != token:
            return BlockVerdict(i, best)
    return BlockVerdict(len(draft_ids), target[len(draft_ids)].argmax())


def verify_sampled(
    draft_ids: Sequence[int],
    draft_dists: Sequence[SparseDist],
    target_dists: Sequence[SparseDist],
    random: PositionRandom,
    position: int,
) -> BlockVerdict:
    """Modified rejection sampling over one block whose first token sits at absolute ``position``."""
    _check_lengths(draft_ids, target_dists)
    if len(draft_dists) != len(draft_ids):
        raise ValueError("one draft distribution is needed per drafted token")
    for i, token in enumerate(draft_ids):
        p_x = target_dists[i].prob_of(token)
        q_x = draft_dists[i].prob_of(token)
        if q_x <= 0.0:
            raise ValueError(f"drafted token {token} has probability 0 under its own draft distribution")
        if random.uniform(position + i, PositionRandom.ACCEPT) * q_x < p_x:  # u < p/q without dividing
            continue
        correction = residual(target_dists[i], draft_dists[i])
        return BlockVerdict(i, sample(correction, random.uniform(position + i, PositionRandom.SAMPLE)))
    bonus_position = position + len(draft_ids)
    bonus = sample(target_dists[len(draft_ids)], random.uniform(bonus_position, PositionRandom.SAMPLE))
    return BlockVerdict(len(draft_ids), bonus)


def verify_block(
    draft_ids: Sequence[int],
    draft_dists: Sequence[SparseDist],
    target: Sequence[Candidates],
    config: SamplingConfig,
    position: int,
) -> BlockVerdict:
    """Verify one drafted block (first token at absolute ``position``), greedy or sampled per ``config``."""
    if config.greedy:
        return verify_greedy(draft_ids, target)
    random = PositionRandom(config.seed, PositionRandom.EDGE)
    return verify_sampled(draft_ids, draft_dists, [truncate(c, config) for c in target], random, position)


def _check_lengths(draft_ids: Sequence[int], target: Sequence[object]) -> None:
    if len(target) != len(draft_ids) + 1:
        raise ValueError(f"need {len(draft_ids) + 1} target positions for a block of {len(draft_ids)}")
