"""The edge's verification scheduler: start-time fair queueing (SFQ) of engine work by compute share.

Goyal, Vin and Cheng, "Start-time fair queueing" (SIGCOMM 1996): every job gets a start tag
``S = max(V, F_flow)`` and moves its flow's finish tag to ``F_flow = S + cost / weight``; the server takes jobs in
order of start tag, and the virtual time ``V`` is the start tag of the job last taken.  A backlogged flow is then
served in proportion to its weight, whatever the others send, and a flow that was idle re-enters at ``V`` (it
cannot bank service while away).  Here a flow is a user (weight = its compute share, ``compute_shares.py``), or a
session opened without a user; the server is the target engine, one step at a time.

One step is either a batch of verification blocks, taken in tag order while their cost fits ``step_tokens``
(engines batch them in one call), or one exclusive job run alone (a teacher-forcing ``Score``, an edge-only
token).  Cost is in tokens of target work: a block costs its length + 1 (the positions it scores) — the first
block of a session also its prompt, whose prefill it brings —, a Score its sequence length, an edge-only token 1.
What an engine had to re-read beyond that (its cache no longer held the session's prefix: evicted by other
sessions, or a slot given to another identity) is learnt only once the step ran: it is then charged to the flow
whose block needed it (``_charge_rereads``), which pushes that flow's next jobs back by the work it caused.  Sessions
that take turns evicting each other near the context limit thus pay for the prefills they cause.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from edge_server.compute_shares import ComputeShares
from edge_server.engines.base import ScoredBlock, ScoreRequest, TargetEngine
from edge_server.metrics import EdgeMetrics
from edge_server.pacing import EdgePacing


@dataclass(frozen=True)
class ScoreResult:
    scored: ScoredBlock
    queue_seconds: float
    batch_size: int  # blocks handed to the engine together with this one (itself included)


@dataclass(frozen=True)
class Flow:
    """Who pays for a job: a user, or (without one) the session itself."""

    user: int | None
    session: str | None = None

    @property
    def key(self) -> Hashable:
        return ("user", self.user) if self.user is not None else ("session", self.session)


@dataclass(order=True)
class _Job:
    start_tag: float
    seq: int
    flow: Flow = field(compare=False)
    cost: float = field(compare=False)
    weight: float = field(compare=False)
    future: asyncio.Future = field(compare=False)
    queued_at: float = field(compare=False)
    block: ScoreRequest | None = field(default=None, compare=False)  # batchable verification
    work: Callable[[], Awaitable[Any]] | None = field(default=None, compare=False)  # exclusive


class ShareScheduler:
    def __init__(self, engine: TargetEngine, shares: ComputeShares, metrics: EdgeMetrics, step_tokens: int = 64,
                 window: float = 0.002, pacing: EdgePacing | None = None) -> None:
        self._engine = engine
        self._pacing = pacing  # hold each step for the emulated edge's time (hardware pacing)
        self.shares = shares
        self._metrics = metrics
        self._step_tokens = step_tokens
        self._window = window
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._virtual_time = 0.0
        self._finish_tags: dict[Hashable, float] = {}
        self._tag_weights: dict[Hashable, tuple[Flow, float]] = {}  # the flow and weight of each finish tag
        self._tags_version = shares.version  # the shares the finish tags were computed under
        self._waiting = asyncio.Event()
        self.served_tokens: Counter[int | None] = Counter()  # by user (None: sessions without a user)
        self.best_effort_jobs = 0

    def __len__(self) -> int:
        return len(self._heap)

    async def score(self, flow: Flow, request: ScoreRequest, prefill_tokens: int = 0) -> ScoreResult:
        """Verify one block in the flow's turn (possibly batched with other flows' blocks); ``prefill_tokens``:
        prompt tokens the engine must first process, charged to the flow too."""
        return await self._submit(flow, len(request.block) + 1 + prefill_tokens, block=request)

    async def exclusive(self, flow: Flow, cost: float, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work()`` alone on the engine in the flow's turn; returns its result."""
        return await self._submit(flow, cost, work=work)

    async def _submit(self, flow: Flow, cost: float, **job) -> Any:
        if self.shares.version != self._tags_version:
            self._rescale_tags()
        weight = self.shares.weight(flow.user)
        if weight.best_effort:
            self.best_effort_jobs += 1
            self._metrics.best_effort_jobs.inc()
        start = max(self._virtual_time, self._finish_tags.get(flow.key, 0.0))
        self._advance(flow, start + cost / weight.value, weight.value)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Job(start, next(self._seq), flow, cost, weight.value, future, time.perf_counter(),
                                        **job))
        self._metrics.queue_depth.set(len(self._heap))
        self._waiting.set()
        return await future

    def _advance(self, flow: Flow, finish: float, weight: float) -> None:
        self._finish_tags[flow.key] = finish
        self._tag_weights[flow.key] = (flow, weight)

    def _rescale_tags(self) -> None:
        """New shares (the controller pushes a version every slot): each flow's work still ahead of V — its finish
        tag's lead times the weight it was computed at — carries over at the flow's new weight.  So a debt stays
        (re-reads charged after a step), while a tag inflated by an old tiny weight (a best-effort user's blocks
        cost a thousand times their tokens) shrinks to what the work is worth now."""
        virtual, rescaled = self._virtual_time, {}
        for key, finish in self._finish_tags.items():
            flow, old_weight = self._tag_weights[key]
            if finish > virtual:
                rescaled[key] = virtual + (finish - virtual) * old_weight / self.shares.weight(flow.user).value
        self._finish_tags = rescaled
        self._tag_weights = {key: self._tag_weights[key] for key in rescaled}
        self._tags_version = self.shares.version

    def _next_step(self) -> list[_Job]:
        """The jobs of the next engine step, in start-tag order."""
        step: list[_Job] = []
        budget = self._step_tokens
        while self._heap:
            job = self._heap[0]
            if job.future.cancelled():  # its caller is gone: the flow is not charged for it
                heapq.heappop(self._heap)
                if job.flow.key in self._finish_tags:
                    self._finish_tags[job.flow.key] = max(self._virtual_time,
                                                          self._finish_tags[job.flow.key] - job.cost / job.weight)
                continue
            if step and (job.block is None or job.cost > budget):
                break
            heapq.heappop(self._heap)
            step.append(job)
            budget -= job.cost
            if job.block is None:
                break  # an exclusive job runs alone
        if step:
            self._virtual_time = max(self._virtual_time, step[-1].start_tag)
            # Flows whose finish tag the virtual time passed would restart from V anyway: forget them.
            if len(self._finish_tags) > 4 * len(self._heap) + 64:
                self._finish_tags = {k: f for k, f in self._finish_tags.items() if f > self._virtual_time}
                self._tag_weights = {k: self._tag_weights[k] for k in self._finish_tags}
        self._metrics.queue_depth.set(len(self._heap))
        return step

    async def run_forever(self) -> None:
        while True:
            await self._waiting.wait()
            if self._window > 0 and sum(job.cost for job in self._heap) < self._step_tokens:
                await asyncio.sleep(self._window)  # room left in the step: let other sessions' blocks arrive
            step = self._next_step()
            if not self._heap:
                self._waiting.clear()
            if step:
                await self._run(step)

    async def _run(self, step: list[_Job]) -> None:
        started = time.perf_counter()
        for job in step:
            self._count_served(job.flow.user, job.cost)
        try:
            if step[0].block is None:
                results = [await step[0].work()]
            else:
                self._metrics.batch_size.observe(len(step))
                scored = await self._engine.score_blocks([job.block for job in step])
                results = [ScoreResult(s, started - job.queued_at, len(step)) for s, job in zip(scored, step)]
                self._charge_rereads(step, scored)
            if self._pacing is not None:
                await self._pacing.hold(started, self._paced_seconds(step))
        except Exception as error:  # the engine failed this step: every job in it gets the error
            for job in step:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        for job, result in zip(step, results):
            if not job.future.done():
                job.future.set_result(result)

    def _charge_rereads(self, step: list[_Job], scored: list[ScoredBlock]) -> None:
        """Charge each flow the prefix tokens the engine re-read for its block beyond what its job paid for."""
        for job, block in zip(step, scored):
            if block.cached_tokens is None:  # the engine cannot tell: charged as submitted
                continue
            reread = len(job.block.prefix) - block.cached_tokens
            # The job paid len(block) + 1 (+ its prompt's prefill): its last prefix token plus the block's positions.
            self.charge(job.flow, reread + len(job.block.block) - job.cost)

    def charge(self, flow: Flow, extra: float) -> None:
        """Work the engine did for the flow beyond what its job was charged (a context re-read after eviction),
        learnt once the step ran: it pushes the flow's next jobs back by that much, at the flow's weight."""
        if extra <= 0:
            return
        weight = self.shares.weight(flow.user).value
        self._advance(flow, max(self._virtual_time, self._finish_tags.get(flow.key, 0.0)) + extra / weight, weight)
        self._count_served(flow.user, extra)
        self._metrics.reread_tokens.inc(extra)

    def _count_served(self, user: int | None, tokens: float) -> None:
        self.served_tokens[user] += int(tokens)
        self._metrics.served_tokens.labels(self._metrics.user_label(user)).inc(tokens)

    def _paced_seconds(self, step: list[_Job]) -> float:
        """The emulated edge's time for this step (hardware pacing)."""
        if step[0].block is None:
            return self._pacing.exclusive_seconds(step[0].cost)
        return self._pacing.block_step_seconds(
            [(job.flow.session, len(job.block.prefix), len(job.block.block)) for job in step])

