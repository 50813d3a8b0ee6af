"""How a psd round speculates: the improvements of parallel speculative decoding a device uses (``--psd-variant``),
the length of each round's block, and which outcome of the block in flight the device drafts ahead from.

``post`` is PEARL's post-verify as SpecEdge's proactive drafting does it: while a block is verified, draft on as if
it were fully accepted.  Its drafting ahead survives only when the whole block is accepted and the guessed bonus
token is the edge's (probability about alpha^(k+1): 17% at alpha = 0.7, k = 4); every other round starts its next
block from scratch after the verdict, which is why psd gained little over sd.  The improvements, combined with ``+``:

- ``pre`` (PEARL's pre-verify): a block whose drafts ahead did not survive is a single token, sent at once, so a
  rejection at the first position costs one round trip, not a block of drafting plus one; the rest of the round's
  tokens are drafted during its verification, and a round whose drafts ahead survived sends all of them.
- ``branch`` (branch-aware drafting, SpecEdge's "top continuations"): draft ahead from the outcome the draft's
  own probabilities make most likely to be followed (a full accept then the bonus token, or the first j tokens
  accepted and the edge's correction guessed as the draft's runner-up there); once that bet has its block, and
  if a draft step still fits before the verdict is expected, bet on the next likeliest outcome too (the device
  would otherwise idle).
- ``adaptive``: each round's draft length from the closed form below, with the acceptance, draft time and round
  trip observed so far, within the controller's length for the user; and a step of drafting ahead only when it
  pays (``step_pays``): a verdict that comes during a draft step waits for it (a forward pass is not stopped), so
  a step that would end after the verdict is expected must be worth that wait.

Every variant changes only what is drafted and when it is sent: each emitted token is the edge's verdict, so all
are lossless (the verification code is the same for all).  When sampling, the sample a seed gives depends on where
blocks begin and end, so there block lengths follow the verdicts alone (``pre``: one token after a round not fully
accepted, else the longest; ``adaptive`` keeps the controller's length): the same seed gives the same answer on
every run, as with ``post``.  Greedy answers do not depend on blocks, and there timing may choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from device_client.draft import DraftToken

IMPROVEMENTS = ("pre", "branch", "adaptive")
DEFAULT_PSD_VARIANT = "pre+adaptive"  # the best measured (docs/benchmarks.md, "PSD variants")


class VariantError(ValueError):
    """A --psd-variant that names no known improvement; the message lists the known ones."""


@dataclass(frozen=True)
class PsdVariant:
    pre_verify: bool = False
    branch_aware: bool = False
    adaptive_length: bool = False

    @staticmethod
    def parse(text: str) -> "PsdVariant":
        """``post`` (none), or improvements joined by ``+`` in any order, e.g. ``pre+adaptive``."""
        names = [name.strip() for name in text.split("+")] if text.strip() != "post" else []
        unknown = [name for name in names if name not in IMPROVEMENTS]
        if unknown or len(set(names)) != len(names):
            raise VariantError(f"unknown or repeated psd variant part(s) in {text!r}: say 'post' or join any of "
                               f"{', '.join(IMPROVEMENTS)} with '+'")
        return PsdVariant("pre" in names, "branch" in names, "adaptive" in names)

    @property
    def name(self) -> str:
        parts = [name for name, on in zip(IMPROVEMENTS, (self.pre_verify, self.branch_aware, self.adaptive_length))
                 if on]
        return "+".join(parts) or "post"


DEFAULT_VARIANT = PsdVariant.parse(DEFAULT_PSD_VARIANT)

BETS = 2  # branch-aware: outcomes drafted ahead per round at most (the second only in time that would be idle)


@dataclass(frozen=True)
class Branch:
    """The outcome of the block in flight that the drafts ahead assume: ``accepted`` of its tokens accepted, then
    the edge's token there.  After a full accept (``correction`` None) the drafts ahead begin with their own guess
    of the bonus token; after a rejection, ``correction`` is the guess of the edge's token and the drafts ahead
    follow it."""

    accepted: int
    correction: int | None = None
    chance: float = field(default=0.0, compare=False)  # estimated probability that the verdict is this outcome


def full_accept(block: Sequence[DraftToken], alpha: float) -> Branch:
    """The bet of ``post``: the whole block accepted, then the bonus token guessed (alpha^(k+1))."""
    return Branch(len(block), chance=alpha ** (len(block) + 1))


def ranked_branches(block: Sequence[DraftToken], bonus_chance: float, count: int) -> list[Branch]:
    """The ``count`` outcomes most likely to come true with their guess, likeliest first, taking the draft's
    probabilities as the target's: P(first j accepted, then the runner-up at j) = q(x_1) ... q(x_j) *
    q_j(runner-up), and P(all accepted, then the bonus guessed) = q(x_1) ... q(x_k) * ``bonus_chance``."""
    chances, prefix = [], 1.0
    for j, token in enumerate(block):
        if token.runner_up is not None:
            chance = prefix * token.runner_up_prob
            chances.append((chance, -j, Branch(j, token.runner_up, chance)))
        prefix *= token.confidence
    chance = prefix * bonus_chance
    chances.append((chance, 1, Branch(len(block), None, chance)))  # ties go to the full accept
    return [branch for *_, branch in sorted(chances, key=lambda c: c[:2], reverse=True)[:count]]


def step_pays(chance: float, step_s: float, until_verdict_s: float, steps: int = 1) -> bool:
    """Whether to start drafting ahead ``until_verdict_s`` before the verdict is expected, for a gain of one step
    that takes ``steps`` steps (2 for the first of a full-accept bet: it drafts the guess of the bonus token, which
    the verdict brings anyway; the step after it drafts the next block's first token).  Steps that end in time cost
    nothing; otherwise every outcome waits for their end and only the outcome bet on gains a step: worth it when
    chance * step >= steps * step - until."""
    return until_verdict_s >= step_s * (steps - chance)


@dataclass
class Bet:
    """Drafts made ahead of the block in flight, for one outcome of it."""

    branch: Branch
    drafts: list[DraftToken] = field(default_factory=list)


def speculation_kept(branch: Branch, accepted: int, next_token: int, ahead: Sequence[DraftToken]) -> int | None:
    """How many leading drafts ahead to drop when the verdict is the branch they assumed (the guess of the bonus
    token, which the verdict replaces), or None when the verdict went another way."""
    if accepted != branch.accepted:
        return None
    if branch.correction is not None:
        return 0 if next_token == branch.correction else None
    return 1 if ahead and ahead[0].token_id == next_token else None


def acceptance_estimate(accepted: int, rejections: int) -> float | None:
    """The maximum-likelihood acceptance per drafted token: accepted tokens over accepted tokens plus rejections
    (a fully accepted block has no rejection; the plain mean of accepted / drafted is biased low)."""
    return accepted / (accepted + rejections) if accepted + rejections else None


def per_token_acceptance(accepted_lengths: Sequence[int], block_lengths: Sequence[int]) -> float | None:
    """``acceptance_estimate`` of recorded rounds (their accepted and block lengths)."""
    return acceptance_estimate(sum(accepted_lengths), sum(a < k for a, k in zip(accepted_lengths, block_lengths)))


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens a round of k drafts commits: accepted ones plus the edge's own, (1 - alpha^(k+1)) / (1 - alpha)."""
    return k + 1.0 if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)


def psd_seconds_per_token(alpha: float, k: int, draft_s: float, round_trip_s: float) -> float:
    """The closed form of a psd round (ARCHITECTURE §4 with the speculation's failures): the drafts ahead survive
    with probability alpha^(k+1), and then the round costs max(k t_draft, round trip); otherwise the next block is
    drafted after the verdict, k t_draft + round trip."""
    kept = alpha ** (k + 1)
    seconds = kept * max(k * draft_s, round_trip_s) + (1 - kept) * (k * draft_s + round_trip_s)
    return seconds / expected_tokens(alpha, k)


def adaptive_length(alpha: float, draft_s: float, round_trip_s: float, longest: int) -> int:
    """The draft length in 1..longest with the least expected time per token."""
    if not (math.isfinite(draft_s) and math.isfinite(round_trip_s)):
        return longest
    return min(range(1, longest + 1), key=lambda k: (psd_seconds_per_token(alpha, k, draft_s, round_trip_s), -k))
