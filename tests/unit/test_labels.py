"""Per-user metric labels are bounded (edge_server/labels.py): the first 256 users get their own label, the rest share
"other", so a client naming ever new user numbers cannot grow an edge's metrics without end."""

from __future__ import annotations

import asyncio

import pytest

from edge_server.compute_shares import ComputeShares
from edge_server.engines.base import ScoredBlock, ScoreRequest
from edge_server.metrics import EdgeMetrics
from edge_server.scheduler import Flow, ShareScheduler
from edge_server.labels import MAX_USER_LABELS, NO_USER, OTHER_USERS, UserLabels


def test_the_first_users_keep_their_label_and_the_rest_share_one():
    labels = UserLabels(limit=3)
    assert [labels(user) for user in (7, 8, 9)] == ["7", "8", "9"]
    assert labels(10) == OTHER_USERS and labels(2**32 - 1) == OTHER_USERS
    assert labels(8) == "8"  # a labelled user keeps its label
    assert labels(None) == NO_USER  # work no user paid for: not counted against the limit
    assert labels.totals({7: 0.25, 10: 0.25, 11: 0.125}) == {"7": 0.25, OTHER_USERS: 0.375}
    with pytest.raises(ValueError):
        UserLabels(limit=-1)


def _user_series(metrics: EdgeMetrics, name: str) -> dict[str, float]:
    return {sample.labels["user"]: sample.value for metric in metrics.registry.collect() if metric.name == name
            for sample in metric.samples if sample.name.endswith("_total") or sample.name == name}


class _Engine:
    async def score_blocks(self, requests):
        return [ScoredBlock([], None) for _ in requests]


def test_an_edge_serving_many_users_exports_a_bounded_number_of_series():
    """1000 users each verify a block: served tokens appear under at most 256 user labels plus "other", and no
    token is lost from the totals."""
    metrics = EdgeMetrics()
    users = 1000

    async def run() -> None:
        scheduler = ShareScheduler(_Engine(), ComputeShares(), metrics, step_tokens=64, window=0)
        runner = asyncio.create_task(scheduler.run_forever())
        await asyncio.gather(*(scheduler.score(Flow(user, f"session-{user}"),
                                               ScoreRequest(prefix=[1], block=[1, 2, 3], top_n=1))
                               for user in range(users)))
        runner.cancel()

    asyncio.run(run())
    served = _user_series(metrics, "tandem_edge_served_tokens")
    assert len(served) == MAX_USER_LABELS + 1 and OTHER_USERS in served
    assert sum(served.values()) == users * 4  # a block of 3 costs 4 tokens (its positions and the one after)
