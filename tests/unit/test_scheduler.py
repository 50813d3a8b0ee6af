"""Unit tests of the edge's share scheduler (start-time fair queueing) and compute-share table, on a stand-in
engine that only records what it was handed (the layer under test is the scheduler, not the engine)."""

from __future__ import annotations

import asyncio

import pytest

from edge_server.compute_shares import BEST_EFFORT_WEIGHT, ComputeShares, StaleVersion
from edge_server.engines.base import ScoredBlock, ScoreRequest
from edge_server.metrics import EdgeMetrics
from edge_server.scheduler import Flow, ShareScheduler


class RecordingEngine:
    """Scores nothing; remembers the steps it was given."""

    def __init__(self) -> None:
        self.steps: list[list[ScoreRequest]] = []

    async def score_blocks(self, requests):
        self.steps.append(list(requests))
        await asyncio.sleep(0)
        return [ScoredBlock([], None) for _ in requests]


def block(tokens: int = 4, tag: int = 0) -> ScoreRequest:
    return ScoreRequest(prefix=[tag], block=[1] * tokens, top_n=1)


async def backlogged(shares: ComputeShares, users: dict[int | None, int], steps: int, step_tokens: int = 5):
    """Each user keeps ``users[u]`` sessions sending blocks back to back; served tokens by user after ``steps``."""
    engine = RecordingEngine()
    scheduler = ShareScheduler(engine, shares, EdgeMetrics(), step_tokens=step_tokens, window=0)
    runner = asyncio.create_task(scheduler.run_forever())

    async def session(user, index):
        while True:
            await scheduler.score(Flow(user, f"{user}-{index}"), block(tag=index))

    sessions = [asyncio.create_task(session(u, i)) for u, n in users.items() for i in range(n)]
    while len(engine.steps) < steps:
        await asyncio.sleep(0)
    for task in (*sessions, runner):
        task.cancel()
    await asyncio.gather(*sessions, runner, return_exceptions=True)
    return scheduler


def fractions(scheduler: ShareScheduler) -> dict:
    total = sum(scheduler.served_tokens.values())
    return {user: served / total for user, served in scheduler.served_tokens.items()}


def test_backlogged_users_are_served_in_proportion_to_their_shares():
    shares = ComputeShares()
    shares.set(1, {0: 0.7, 1: 0.3})
    scheduler = asyncio.run(backlogged(shares, {0: 4, 1: 4}, steps=400))
    assert fractions(scheduler)[0] == pytest.approx(0.7, abs=0.02)


def test_a_user_with_more_sessions_gets_no_more_than_its_share():
    shares = ComputeShares()
    shares.set(1, {0: 0.5, 1: 0.5})
    scheduler = asyncio.run(backlogged(shares, {0: 8, 1: 1}, steps=400))
    assert fractions(scheduler)[0] == pytest.approx(0.5, abs=0.02)


def test_without_shares_every_flow_weighs_the_same():
    scheduler = asyncio.run(backlogged(ComputeShares(), {0: 2, 1: 2}, steps=200))
    assert fractions(scheduler)[0] == pytest.approx(0.5, abs=0.03)


def test_a_user_without_a_share_is_served_best_effort_and_counted():
    shares = ComputeShares()
    shares.set(1, {0: 1.0})
    scheduler = asyncio.run(backlogged(shares, {0: 2, 7: 1}, steps=300))
    served = fractions(scheduler)
    assert 0 < served[7] < 0.02  # never starved, far below any share
    assert scheduler.best_effort_jobs > 0


def test_steps_batch_blocks_within_the_token_budget_and_exclusive_work_runs_alone():
    async def scenario():
        engine = RecordingEngine()
        scheduler = ShareScheduler(engine, ComputeShares(), EdgeMetrics(), step_tokens=12, window=0)
        ran: list[str] = []

        async def exclusive_work():
            ran.append(f"exclusive during step {len(engine.steps)}")
            return "done"

        jobs = [scheduler.score(Flow(None, f"s{i}"), block()) for i in range(4)]
        jobs.insert(2, scheduler.exclusive(Flow(None, "score"), 30, exclusive_work))
        pending = [asyncio.ensure_future(job) for job in jobs]
        await asyncio.sleep(0)
        runner = asyncio.create_task(scheduler.run_forever())
        results = await asyncio.gather(*pending)
        runner.cancel()
        return engine.steps, ran, results

    steps, ran, results = asyncio.run(scenario())
    assert [len(step) for step in steps] == [2, 2]  # 5 + 5 tokens fit in 12, a third block would not
    assert ran == ["exclusive during step 1"]  # between the two block steps, alone
    assert results[2] == "done"


def test_a_cancelled_job_is_skipped():
    async def scenario():
        engine = RecordingEngine()
        scheduler = ShareScheduler(engine, ComputeShares(), EdgeMetrics(), step_tokens=100, window=0)
        gone = asyncio.ensure_future(scheduler.score(Flow(None, "gone"), block(tag=1)))
        kept = asyncio.ensure_future(scheduler.score(Flow(None, "kept"), block(tag=2)))
        await asyncio.sleep(0)
        gone.cancel()
        runner = asyncio.create_task(scheduler.run_forever())
        await kept
        runner.cancel()
        return engine.steps

    steps = asyncio.run(scenario())
    assert [[r.prefix for r in step] for step in steps] == [[[2]]]


def test_compute_shares_are_checked_as_a_whole():
    shares = ComputeShares(edge=3)
    shares.set(2, {0: 0.5, 1: 0.5})
    for version, bad in ((3, {0: 0.7, 1: 0.7}), (3, {0: float("nan")}), (3, {0: 0.0}), (3, {0: -0.1}), (0, {})):
        with pytest.raises(ValueError):
            shares.set(version, bad)
    with pytest.raises(StaleVersion):
        shares.set(1, {0: 1.0})
    assert shares.version == 2 and shares.snapshot() == {0: 0.5, 1: 0.5}
    assert shares.set(2, {0: 1.0}) is False  # the version in force again: nothing changes
    assert shares.weight(0).value == 0.5 and shares.weight(9).value == BEST_EFFORT_WEIGHT
    assert shares.weight(None).best_effort


def test_new_shares_take_effect_at_once_for_a_user_that_ran_best_effort():
    async def scenario():
        engine = RecordingEngine()
        shares = ComputeShares()
        shares.set(1, {0: 1.0})
        scheduler = ShareScheduler(engine, shares, EdgeMetrics(), step_tokens=5, window=0)
        runner = asyncio.create_task(scheduler.run_forever())
        for _ in range(20):  # user 7 alone, best-effort: its finish tag runs far ahead
            await scheduler.score(Flow(7, "a"), block())
        shares.set(2, {0: 0.5, 7: 0.5})
        scheduler.served_tokens.clear()

        async def session(user, index):
            while True:
                await scheduler.score(Flow(user, f"{user}-{index}"), block(tag=index))

        sessions = [asyncio.create_task(session(u, i)) for u in (0, 7) for i in range(3)]
        while sum(scheduler.served_tokens.values()) < 40 * 5:
            await asyncio.sleep(0)
        for task in (*sessions, runner):
            task.cancel()
        await asyncio.gather(*sessions, runner, return_exceptions=True)
        return scheduler

    assert fractions(asyncio.run(scenario()))[7] == pytest.approx(0.5, abs=0.05)
