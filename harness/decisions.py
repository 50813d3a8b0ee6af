"""Two runs of one request through an edge: did they decide alike, and if not, was it numerics?

Reads the edge's verification log (``--verification-log``, tandem.verification_log).  See test_concurrency.py's
docstring and docs/design.md ("Reproducibility") for the guarantee this checks.
"""

from __future__ import annotations

from typing import Sequence

from tandem.sampling import PositionRandom
from tandem.verification_log import BlockRecord, decisions, drafted_from, first_divergence, replay
from harness.teacher_forcing import NUMERICAL_NOISE_NATS


def check_records(records: list[BlockRecord], tokens: Sequence[int], label: str) -> None:
    """The edge decided from what it recorded, the device drafted what its q and uniform give, and the tokens the
    device emitted are the ones the edge decided."""
    assert records, f"{label}: no verification records"
    for record in records:
        verdict = replay(record)
        assert (verdict.accepted, verdict.next_token) == (record.accepted, record.next_token), (
            f"{label}: block at {record.position} does not replay from its recorded inputs")
    device = PositionRandom(records[0].seed, PositionRandom.DEVICE)
    emitted = []
    for decision in decisions(records):
        emitted.append(decision.token)
        if decision.drafted is not None:
            assert drafted_from(decision, device.uniform(decision.position, PositionRandom.DRAFT)), (
                f"{label}: token {decision.drafted} at {decision.position} is not what q and its uniform draw")
    assert emitted[: len(tokens)] == list(tokens), f"{label}: the device emitted other tokens than the edge decided"


def check_same_request(logged: dict[str, list[BlockRecord]], runs: Sequence[tuple[str, Sequence[int]]], top: int,
                       label: str) -> dict | None:
    """``logged``: an edge's verification log (``read_log``); ``runs``: (session id, emitted tokens) of two runs of
    one request.  Equal tokens, or a first divergent decision taken from different numbers within
    NUMERICAL_NOISE_NATS (returned as a summary for the report)."""
    (id_a, tokens_a), (id_b, tokens_b) = runs
    records = logged.get(id_a, []), logged.get(id_b, [])
    check_records(records[0], tokens_a, f"{label} (first run)")
    check_records(records[1], tokens_b, f"{label} (second run)")
    divergence = first_divergence(*records, top=top)
    if divergence is None:
        shorter = min(len(tokens_a), len(tokens_b))
        assert list(tokens_a[:shorter]) == list(tokens_b[:shorter])
        return None
    where = f"{label} at position {divergence.position}: {divergence.summary()}"
    assert not divergence.same_inputs, f"logic error, same inputs decided differently: {where}"
    # The device's draft context computes one output row at a time whatever its history (docs/design.md), so the
    # two runs' q must agree exactly: a difference there is a device bug, not the engine's numerics.
    assert divergence.q_difference == 0.0, f"the device drafted from other numbers: {where}"
    assert divergence.noise_before <= NUMERICAL_NOISE_NATS, f"target numbers apart before the split: {where}"
    assert divergence.target_difference <= NUMERICAL_NOISE_NATS, f"divergence beyond numerical noise: {where}"
    return divergence.summary()
