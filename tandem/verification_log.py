"""The verification log: every input of every verification decision, to replay and to compare runs.

An edge started with ``--verification-log FILE`` appends one JSON line per verified block (``BlockRecord``): the
drafted tokens and the draft distributions q as they arrived, the target's raw log-probabilities at each position
as the engine returned them, the sampling parameters, the verdict, and how the engine computed the block (batch
size, prefix tokens served from its cache).  Nothing else decides an emitted token, so

* ``replay`` recomputes a verdict from its record with the one verification function (``tandem.sampling``);
* ``first_divergence`` explains where two runs of the same request (same prompt, same seed) part ways: the first
  position whose decision differs, the inputs each run decided it from, the uniform numbers drawn (keyed by
  position, so the same in both runs), and how far apart the two runs' numbers were.  If the inputs were equal and
  the decisions differ, that is a logic error; if the inputs differ, the divergence is numerical and its size is
  measured, so a test can assert that it stays within the engine's numerical noise.

The log holds every prompt and answer token of every user, so ``open_for_append`` makes it readable by its owner
only (0600), whatever the umask.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, TextIO

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from tandem.sampling import (
    BlockVerdict,
    Candidates,
    PositionRandom,
    SamplingConfig,
    SparseDist,
    residual,
    sample,
    truncate,
    verify_block,
)


class _Record(BaseModel):
    # -inf log-probabilities are written as JSON's -Infinity (not null), which json.loads reads back.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class DistRecord(_Record):
    token_ids: list[int]
    probs: list[float]

    def dist(self) -> SparseDist:
        return SparseDist(np.asarray(self.token_ids, dtype=np.int64), np.asarray(self.probs, dtype=np.float64))


class CandidatesRecord(_Record):
    token_ids: list[int]
    logprobs: list[float]

    def candidates(self) -> Candidates:
        return Candidates(np.asarray(self.token_ids, dtype=np.int64), np.asarray(self.logprobs, dtype=np.float64))


class BlockRecord(_Record):
    """One verified block (first drafted token at absolute ``position``)."""

    session: str
    position: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    draft: list[int]
    draft_dists: list[DistRecord]  # empty when greedy
    target: list[CandidatesRecord]  # len(draft) + 1 positions: each drafted token's, then the one after the block
    accepted: int
    next_token: int
    batch_size: int  # blocks the batcher handed to the engine with this one (it may compute them in several steps)
    cached_tokens: int | None  # prefix tokens the engine served from its cache (None: unknown)

    @model_validator(mode="after")
    def _consistent(self) -> "BlockRecord":
        if len(self.target) != len(self.draft) + 1:
            raise ValueError(f"{len(self.target)} target positions for a block of {len(self.draft)}")
        if not 0 <= self.accepted <= len(self.draft):
            raise ValueError(f"accepted {self.accepted} of a block of {len(self.draft)}")
        if self.draft_dists and len(self.draft_dists) != len(self.draft):
            raise ValueError("one draft distribution per drafted token, or none (greedy)")
        return self

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.seed)

    @staticmethod
    def of(session: str, position: int, sampling: SamplingConfig, draft: Sequence[int],
           draft_dists: Sequence[SparseDist], target: Sequence[Candidates], verdict: BlockVerdict,
           batch_size: int, cached_tokens: int | None) -> "BlockRecord":
        return BlockRecord(
            session=session, position=position, temperature=sampling.temperature, top_k=sampling.top_k,
            top_p=sampling.top_p, seed=sampling.seed, draft=[int(t) for t in draft],
            draft_dists=[DistRecord(token_ids=d.token_ids.tolist(), probs=d.probs.tolist()) for d in draft_dists],
            target=[CandidatesRecord(token_ids=c.token_ids.tolist(), logprobs=c.logprobs.tolist()) for c in target],
            accepted=verdict.accepted, next_token=verdict.next_token, batch_size=batch_size,
            cached_tokens=cached_tokens,
        )


def open_for_append(path: Path) -> TextIO:
    """``path`` opened to append lines (line-buffered), created with mode 0600 and its folder if missing.  An
    existing regular file is narrowed to 0600 too: a log first written under a loose umask stops being readable
    by others from now on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):  # not a pipe or /dev/stdout someone pointed it at
            os.fchmod(descriptor, 0o600)
        return os.fdopen(descriptor, "a", buffering=1, encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise


def read_log(path: Path) -> dict[str, list[BlockRecord]]:
    """A log's records by session, in the order they were verified (a last line still being written is left out)."""
    sessions: dict[str, list[BlockRecord]] = {}
    text = path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():
        if line.strip():
            record = BlockRecord.model_validate(json.loads(line))
            sessions.setdefault(record.session, []).append(record)
    return sessions


def replay(record: BlockRecord) -> BlockVerdict:
    """The verdict that the record's inputs give (it must be the recorded one)."""
    return verify_block(record.draft, [d.dist() for d in record.draft_dists],
                        [c.candidates() for c in record.target], record.sampling, record.position)


@dataclass(frozen=True)
class Decision:
    """How the token at one position was decided: a drafted token accepted or corrected, or a bonus token."""

    position: int
    kind: Literal["accepted", "corrected", "bonus"]
    token: int  # the emitted token
    drafted: int | None  # the drafted token (None for a bonus)
    q: SparseDist | None  # the draft distribution it was drawn from (sampling only)
    target: Candidates  # the target's raw candidates at this position
    batch_size: int
    cached_tokens: int | None


def decisions(records: Sequence[BlockRecord]) -> list[Decision]:
    """One session's decisions, position by position."""
    out = []
    for record in records:
        for i in range(record.accepted + 1):
            bonus = i == len(record.draft)
            out.append(Decision(
                position=record.position + i,
                kind="bonus" if bonus else "accepted" if i < record.accepted else "corrected",
                token=record.next_token if i == record.accepted else record.draft[i],
                drafted=None if bonus else record.draft[i],
                q=record.draft_dists[i].dist() if record.draft_dists and not bonus else None,
                target=record.target[i].candidates(),
                batch_size=record.batch_size,
                cached_tokens=record.cached_tokens,
            ))
    return out


def logprob_difference(a: Candidates, b: Candidates, top: int) -> float:
    """Largest raw log-probability difference between two computations of one position, over the ``top`` best
    candidates of either.  A token that only one list holds lies, in the other, at most at that list's last
    log-probability, so it counts by how far it stands above that."""
    lp_a = dict(zip(a.token_ids.tolist(), a.logprobs.tolist()))
    lp_b = dict(zip(b.token_ids.tolist(), b.logprobs.tolist()))
    worst = 0.0
    for mine, theirs, ids in ((lp_a, lp_b, a.token_ids[:top].tolist()), (lp_b, lp_a, b.token_ids[:top].tolist())):
        floor = min(theirs.values(), default=float("-inf"))
        for token in ids:
            worst = max(worst, abs(mine[token] - theirs[token]) if token in theirs else mine[token] - floor)
    return worst


def q_difference(a: SparseDist | None, b: SparseDist | None) -> float:
    """Largest probability difference between two draft distributions (0 when both are absent)."""
    if a is None or b is None:
        return 0.0 if a is b else float("inf")
    pa, pb = a.as_dict(), b.as_dict()
    return max(abs(pa.get(t, 0.0) - pb.get(t, 0.0)) for t in set(pa) | set(pb))


@dataclass(frozen=True)
class Divergence:
    """Where two runs of one request first decided differently, and what each run decided it from."""

    position: int
    a: Decision
    b: Decision
    uniforms: dict[str, float]  # the position-keyed numbers both runs drew at this position
    target_difference: float  # largest raw log-prob difference of the target's candidates at this position
    q_difference: float  # largest probability difference of the draft distributions at this position
    noise_before: float  # largest target log-prob difference over the earlier positions both runs decided alike
    margin_a: float  # how far run a's decision was from going the other way (see ``decision_margin``)
    margin_b: float

    @property
    def same_inputs(self) -> bool:
        """Both runs decided from exactly the same numbers (the earlier decisions being equal, both decide a
        drafted token or both a bonus): then a different decision is a logic error, not numerics."""
        return self.a.drafted == self.b.drafted and self.target_difference == 0.0 and self.q_difference == 0.0

    def summary(self) -> dict:
        return {
            "position": self.position,
            "a": {"kind": self.a.kind, "token": self.a.token, "drafted": self.a.drafted,
                  "batch_size": self.a.batch_size, "cached_tokens": self.a.cached_tokens},
            "b": {"kind": self.b.kind, "token": self.b.token, "drafted": self.b.drafted,
                  "batch_size": self.b.batch_size, "cached_tokens": self.b.cached_tokens},
            "uniforms": self.uniforms,
            "target_logprob_difference": self.target_difference,
            "draft_prob_difference": self.q_difference,
            "noise_before": self.noise_before,
            "margin_a": self.margin_a,
            "margin_b": self.margin_b,
        }


def decision_margin(decision: Decision, config: SamplingConfig, uniforms: dict[str, float]) -> float:
    """About how far the target's raw log-probabilities would have to move (in nats, every candidate by at most
    this much) for the decision to go the other way.

    A raw shift of δ moves a truncated, renormalised log-probability by at most 2δ/T, so:  greedy, half the gap
    between the best and second-best candidate;  an acceptance test, T/2 · |log(u·q(x)) − log p(x)|;  a sampled
    token (a correction from norm(max(0, p − q)), or a bonus from p), T/2 · the distance of log u from the log of
    the nearest edge of the token's slice of the CDF.  Approximate: reorderings of near-equal candidates and the
    top-k/top-p cut are not counted."""
    target = decision.target
    if config.greedy:
        return float(target.logprobs[0] - target.logprobs[1]) / 2 if len(target.logprobs) > 1 else float("inf")
    half_t = config.temperature / 2
    p = truncate(target, config)
    if decision.kind == "bonus":
        return half_t * _slice_margin(p, decision.token, uniforms["sample"])
    p_x = p.prob_of(decision.drafted)
    q_x = decision.q.prob_of(decision.drafted) if decision.q is not None else 1.0
    accept = float(abs(np.log(uniforms["accept"] * q_x) - np.log(p_x))) if p_x > 0.0 else float("inf")
    if decision.kind == "accepted":
        return half_t * accept
    return half_t * min(accept, _slice_margin(residual(p, decision.q), decision.token, uniforms["sample"]))


def _slice_margin(dist: SparseDist, token: int, uniform: float) -> float:
    """|log u − log edge| for the nearer edge of ``token``'s slice of ``dist``'s CDF (0 when u lies outside it)."""
    hits = np.flatnonzero(dist.token_ids == token)
    if not hits.size:
        return 0.0
    cumulative = np.cumsum(dist.probs) / dist.probs.sum()
    index = int(hits[0])
    low = cumulative[index - 1] if index else 0.0
    if not low <= uniform <= cumulative[index]:
        return 0.0
    distances = [np.log(cumulative[index]) - np.log(uniform)] if index + 1 < len(cumulative) else []
    if low > 0:
        distances.append(np.log(uniform) - np.log(low))
    return float(min(distances, default=float("inf")))


def first_divergence(a: Sequence[BlockRecord], b: Sequence[BlockRecord], top: int = 2) -> Divergence | None:
    """The first position where two runs of one request decided differently, or None when they never did.

    ``top``: how many of the target's best candidates to compare (2 for greedy, top_k for sampling)."""
    if a and b and (a[0].sampling != b[0].sampling or a[0].position != b[0].position):
        raise ValueError("the two runs are not of one request (sampling, seed or prompt length differ)")
    config = a[0].sampling if a else SamplingConfig()
    device = PositionRandom(config.seed, PositionRandom.DEVICE)
    edge = PositionRandom(config.seed, PositionRandom.EDGE)
    noise = 0.0
    for da, db in zip(decisions(a), decisions(b)):
        difference = logprob_difference(da.target, db.target, top)
        if (da.kind, da.token, da.drafted) == (db.kind, db.token, db.drafted):
            noise = max(noise, difference)
            continue
        j = da.position
        uniforms = {"draft": device.uniform(j, PositionRandom.DRAFT), "accept": edge.uniform(j, PositionRandom.ACCEPT),
                    "sample": edge.uniform(j, PositionRandom.SAMPLE)}
        return Divergence(
            position=j, a=da, b=db, uniforms=uniforms, target_difference=difference,
            q_difference=q_difference(da.q, db.q), noise_before=noise,
            margin_a=decision_margin(da, config, uniforms), margin_b=decision_margin(db, config, uniforms),
        )
    return None


def drafted_from(decision: Decision, uniform: float) -> bool:
    """Whether the drafted token is the one the device's position-keyed uniform picks from q."""
    return decision.q is None or sample(decision.q, uniform) == decision.drafted
