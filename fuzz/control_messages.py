"""Fuzz the control plane's share rule where decisions arrive: ``check_shares``, the link emulator's assignment
table and the edge's compute shares.

Raw modes parse the payload as the request the handler gets (linkemu AssignRequest, EdgeControl
SetSharesRequest) and apply it as the servicer does; structured modes hand the validators users, edges, versions
and shares made field by field, with NaN, infinite, denormal and just-over-1 floats.  A bad decision must be
refused with ``ValueError`` (``StaleVersion`` is one) and leave the state as it was; an accepted one must obey the
rule: every share in [MIN_SHARE, 1], on a known edge, at most 1 (plus slack) per edge.

    python fuzz/control_messages.py [libFuzzer args]     python fuzz/control_messages.py --write-seeds DIR
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import atheris
from google.protobuf.message import DecodeError

from common import dispatch, edgy_float, edgy_uint, main, rejected

with atheris.instrument_imports(include=["tandem.shares", "linkemu.assignments", "edge_server.compute_shares"]):
    from edge_server.compute_shares import ComputeShares
    from linkemu.assignments import Assignment, AssignmentTable
    from tandem.shares import MIN_SHARE, SHARE_SLACK, check_shares
    from tandem.wire.v1 import control_pb2, linkemu_pb2

EDGES = (0, 1, 2)
USERS = (0, 1, 2, 3, 7)
INITIAL = {0: Assignment(0, 0.5), 1: Assignment(0, 0.5), 2: Assignment(1, 1.0), 3: Assignment(2, 0.25),
           7: Assignment(2, 0.25)}


def obeys_rule(held: Iterable[tuple[int, int, float]], edges: Iterable[int]) -> None:
    """What every accepted decision must satisfy, recomputed independently of ``check_shares``."""
    totals: dict[int, float] = defaultdict(float)
    known = set(edges)
    for _user, edge, share in sorted(held):  # the order check_shares sums in, so totals round alike
        assert edge in known and math.isfinite(share) and MIN_SHARE <= share <= 1, (edge, share)
        totals[edge] += share
    assert all(total <= 1 + SHARE_SLACK for total in totals.values()), totals


def assign(changes: dict[int, Assignment]) -> None:
    """Apply ``changes`` to a fresh table; refused means unchanged, accepted means the whole table obeys the rule."""
    table = AssignmentTable(EDGES, INITIAL)
    with rejected(ValueError):
        after = table.assign(changes)
        assert set(after) == set(INITIAL) and all(after[user] == change for user, change in changes.items())
        obeys_rule(((user, a.edge, a.share) for user, a in after.items()), EDGES)
        return
    assert table.snapshot() == dict(sorted(INITIAL.items())), "a refused assignment changed the table"


def set_shares(version: int, shares: dict[int, float], edge: int = 1) -> None:
    """Set ``shares`` on compute shares already at version 5; refused means unchanged."""
    compute = ComputeShares(edge)
    compute.set(5, {0: 0.5, 1: 0.25})
    before = compute.snapshot()
    with rejected(ValueError):
        changed = compute.set(version, shares)
        assert changed == (version > 5) and compute.version == max(version, 5)
        if changed:
            assert compute.snapshot() == shares
            obeys_rule(((user, edge, share) for user, share in shares.items()), [edge])
        return
    assert compute.version == 5 and compute.snapshot() == before, "refused shares changed the edge's shares"


def assign_request(payload: bytes) -> None:
    """As LinkControl.Assign: a user listed twice is refused by the servicer, the rest by the table."""
    request = linkemu_pb2.AssignRequest()
    with rejected(DecodeError):
        request.ParseFromString(payload)
        changes = {item.user: Assignment(item.edge, item.share) for item in request.assignments}
        if request.assignments and len(changes) == len(request.assignments):
            assign(changes)


def set_shares_request(payload: bytes) -> None:
    """As EdgeControl.SetShares: a user listed twice is refused by the servicer, the rest by ComputeShares."""
    request = control_pb2.SetSharesRequest()
    with rejected(DecodeError):
        request.ParseFromString(payload)
        shares = {item.user: item.share for item in request.shares}
        if len(shares) == len(request.shares):
            set_shares(request.version, shares)


def triples(data: atheris.FuzzedDataProvider) -> list[tuple[int, int, float]]:
    """(user, edge, share): known users and edges mostly, any int sometimes; shares at the boundaries often."""
    def some(known: tuple[int, ...]) -> int:
        return data.PickValueInList(list(known)) if data.ConsumeProbability() < 0.8 else data.ConsumeInt(8)

    return [(some(USERS), some(EDGES), edgy_float(data)) for _ in range(data.ConsumeIntInRange(0, 12))]


def built_check(data: atheris.FuzzedDataProvider) -> None:
    held = triples(data)
    edges = {data.ConsumeInt(4) for _ in range(data.ConsumeIntInRange(0, 4))} if data.ConsumeBool() else set(EDGES)
    with rejected(ValueError):
        check_shares(held, edges, "fuzzed")
        obeys_rule(held, edges)


def built_assign(data: atheris.FuzzedDataProvider) -> None:
    assign({user: Assignment(edge, share) for user, edge, share in triples(data)})


def built_set(data: atheris.FuzzedDataProvider) -> None:
    version = edgy_uint(data, 64) if data.ConsumeBool() else data.ConsumeInt(8)
    set_shares(version, {user: share for user, _edge, share in triples(data)}, edge=data.PickValueInList(list(EDGES)))


RAW_MODES = (assign_request, set_shares_request)
BUILT_MODES = (built_check, built_assign, built_set)


def test_one_input(data: bytes) -> None:
    dispatch(data, RAW_MODES, BUILT_MODES)


def seeds() -> dict[str, bytes]:
    """A valid request of each kind (two users moved, filling edges 0 and 2 exactly; a new version of shares)."""
    assign = linkemu_pb2.AssignRequest(assignments=[linkemu_pb2.UserAssignment(user=0, edge=2, share=0.5),
                                                    linkemu_pb2.UserAssignment(user=2, edge=0, share=0.5)])
    shares = control_pb2.SetSharesRequest(version=6, shares=[control_pb2.ComputeShare(user=0, share=0.75),
                                                             control_pb2.ComputeShare(user=3, share=0.25)])
    found = {"raw-assign": bytes([0]) + assign.SerializeToString(),
             "raw-set-shares": bytes([1]) + shares.SerializeToString()}
    found.update({f"built-{mode}": bytes([len(RAW_MODES) + mode]) + bytes(range(3, 120, 5)) for mode in range(3)})
    return found


if __name__ == "__main__":
    main(test_one_input, seeds)
