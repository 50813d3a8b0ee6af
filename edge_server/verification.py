"""Verifying a session's drafted blocks and committing verdicts; decoding on the edge alone.

Both go through the share scheduler, so every kind of engine work is served in proportion to the users' compute
shares.  A verdict is committed only after everything that can fail has run: a session never holds half a block.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from edge_server.audit import VerificationLogWriter
from edge_server.checks import Block, ScoreJob
from edge_server.engines.base import ScoredPosition, ScoreRequest, TargetEngine
from edge_server.metrics import EdgeMetrics
from edge_server.observations import DraftObservations
from edge_server.scheduler import Flow, ShareScheduler
from edge_server.sessions import Session, SessionRequest
from tandem.sampling import verify_block
from tandem.verification_log import BlockRecord

RECENT_VERIFICATIONS = 64  # the window of EdgeLoad.verify_seconds_mean


@dataclass(frozen=True)
class CommittedVerdict:
    position: int
    accepted: int
    next_token: int
    verify_seconds: float  # block arrival to verdict
    queue_seconds: float  # of which waiting for the engine


def flow_of(session: Session) -> Flow:
    return Flow(session.user, session.id)


class Verifier:
    def __init__(self, engine: TargetEngine, scheduler: ShareScheduler, metrics: EdgeMetrics,
                 audit: VerificationLogWriter | None = None) -> None:
        self._engine = engine
        self._scheduler = scheduler
        self._metrics = metrics
        self._audit = audit
        self._recent: deque[float] = deque(maxlen=RECENT_VERIFICATIONS)
        self.observations = DraftObservations()  # each user's acceptance as verified here (EdgeLoad)

    @property
    def engine_info(self):
        return self._engine.info

    @property
    def recent_verify_seconds(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    async def verify(self, session: Session, block: Block) -> CommittedVerdict:
        arrived = time.perf_counter()
        top_n = session.sampling.candidates_needed(self._engine.info.vocab_size)
        prefill = session.prompt_length if session.verified_blocks == 0 else 0
        request = ScoreRequest(session.tokens, block.tokens, top_n, cache_owner=session.owner)
        result = await self._scheduler.score(flow_of(session), request, prefill)
        candidates = result.scored.candidates
        verdict = verify_block(block.tokens, block.dists, candidates, session.sampling, len(session.tokens))
        if self._audit is not None:
            self._audit.write(BlockRecord.of(session.id, len(session.tokens), session.sampling, block.tokens,
                                             block.dists, candidates, verdict, result.batch_size,
                                             result.scored.cached_tokens))
        session.tokens.extend(block.tokens[: verdict.accepted])
        session.tokens.append(verdict.next_token)
        session.verified_blocks += 1
        session.touch()  # progress: what keeps a session from being reaped
        self.observations.record(session.user, len(block.tokens), verdict.accepted)
        elapsed = time.perf_counter() - arrived
        self._recent.append(elapsed)
        self._metrics.verify_seconds.observe(elapsed)
        self._metrics.queue_seconds.observe(result.queue_seconds)
        self._metrics.accepted_length.observe(verdict.accepted)
        self._metrics.drafted_tokens.inc(len(block.tokens))
        self._metrics.accepted_tokens.inc(verdict.accepted)
        self._metrics.emitted_tokens.labels("speculative").inc(verdict.accepted + 1)
        return CommittedVerdict(block.position, verdict.accepted, verdict.next_token, elapsed, result.queue_seconds)

    async def decode_on_edge(self, session: Session, request: SessionRequest) -> AsyncIterator[list[int]]:
        """The target decodes alone; each token is one exclusive step in the session's turn (the first one charged
        the prompt's prefill)."""
        evaluated: list[int] = []  # per step, what the engine evaluated (more than 1 token: its context was evicted)
        tokens = self._engine.generate(session.tokens, session.sampling, request.max_new_tokens, request.stop_ids,
                                       cache_owner=session.owner, on_step=evaluated.append)
        iterator = tokens.__aiter__()
        # The scheduler may be advancing the generator when the stream is cancelled: closing it then would fail
        # ("already running"), so advancing and closing take turns.
        turn = asyncio.Lock()

        async def next_tokens() -> list[int] | None:
            async with turn:
                try:
                    return await iterator.__anext__()
                except StopAsyncIteration:
                    return None

        cost = len(session.tokens)  # the first step prefills the prompt; each later one decodes a token
        try:
            while (new := await self._scheduler.exclusive(flow_of(session), cost, next_tokens)) is not None:
                if evaluated:
                    self._scheduler.charge(flow_of(session), evaluated.pop() - cost)
                cost = 1
                session.tokens.extend(new)
                session.touch()
                self._metrics.emitted_tokens.labels("edge-only").inc(len(new))
                yield new
        finally:
            async with turn:
                await iterator.aclose()

    async def score(self, job: ScoreJob, owner: str | None) -> list[ScoredPosition]:
        """Teacher forcing of a whole sequence, as one exclusive step paid by the job's user (``owner``: the
        identity asking, whose cache alone it may reuse)."""
        return await self._scheduler.exclusive(
            Flow(job.user, "score"), len(job.tokens),
            lambda: self._engine.teacher_force(job.tokens, job.start, job.top_n, cache_owner=owner))
