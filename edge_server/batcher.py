"""Hands the engine the blocks of all sessions that are waiting, in one call.

One consumer task takes whatever is queued when the engine becomes free (and waits ``window`` seconds more for
stragglers), so blocks of concurrent sessions are scored together and the engine can batch them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from edge_server.engines.base import ScoredBlock, ScoreRequest, TargetEngine
from edge_server.metrics import EdgeMetrics


@dataclass
class _Pending:
    request: ScoreRequest
    future: asyncio.Future
    queued_at: float


@dataclass(frozen=True)
class ScoreResult:
    scored: ScoredBlock
    queue_seconds: float
    batch_size: int  # blocks handed to the engine together with this one (itself included)


class VerifyBatcher:
    def __init__(self, engine: TargetEngine, metrics: EdgeMetrics, window: float = 0.002) -> None:
        self._engine = engine
        self._metrics = metrics
        self._window = window
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def score(self, request: ScoreRequest) -> ScoreResult:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(request, future, time.perf_counter()))
        self._metrics.queue_depth.set(self._queue.qsize())
        return await future

    async def run_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._window > 0:
                await asyncio.sleep(self._window)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [item for item in batch if not item.future.cancelled()]
            self._metrics.queue_depth.set(self._queue.qsize())
            if not batch:
                continue
            started = time.perf_counter()
            self._metrics.batch_size.observe(len(batch))
            try:
                results = await self._engine.score_blocks([item.request for item in batch])
            except Exception as error:  # the engine failed this batch: every waiting session gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, scored in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(ScoreResult(scored, started - item.queued_at, len(batch)))
