"""The edge's gRPC statuses as the decoding loop sees them: one kind each, the status kept for people."""

from __future__ import annotations

import grpc
import pytest

from device_client.edge_handle import EdgeFailure
from device_client.grpc_edge import edge_error

S = grpc.StatusCode


@pytest.mark.parametrize("code, kind", [
    (S.UNAVAILABLE, EdgeFailure.LINK_DOWN),  # a broken connection, a draining edge: attach again or move
    (S.RESOURCE_EXHAUSTED, EdgeFailure.BUSY),
    (S.NOT_FOUND, EdgeFailure.REFUSED),  # outside an attach these refuse a bad request
    (S.FAILED_PRECONDITION, EdgeFailure.REFUSED),
    (S.INVALID_ARGUMENT, EdgeFailure.REFUSED),
    (S.PERMISSION_DENIED, EdgeFailure.REFUSED),
    (S.DEADLINE_EXCEEDED, EdgeFailure.REFUSED),  # the edge ended a stalled session: not resumed
    (S.ABORTED, EdgeFailure.REFUSED),
    (S.INTERNAL, EdgeFailure.REFUSED),
])
def test_each_status_has_one_kind(code, kind):
    assert edge_error(code, "why").kind is kind


@pytest.mark.parametrize("code", [S.NOT_FOUND, S.FAILED_PRECONDITION])
def test_an_attach_refused_as_unknown_or_closed_means_the_session_is_gone(code):
    assert edge_error(code, "no session", attaching=True).kind is EdgeFailure.SESSION_GONE


def test_the_attach_context_changes_nothing_else():
    for code in S:
        if code not in (S.OK, S.NOT_FOUND, S.FAILED_PRECONDITION):
            assert edge_error(code, "why", attaching=True).kind is edge_error(code, "why").kind, code


def test_the_message_people_see_names_the_edge_status():
    error = edge_error(S.RESOURCE_EXHAUSTED, "the edge holds its maximum of 8 sessions; retry later")
    assert str(error) == "RESOURCE_EXHAUSTED: the edge holds its maximum of 8 sessions; retry later"
    assert error.status == "RESOURCE_EXHAUSTED" and error.details.startswith("the edge holds")
