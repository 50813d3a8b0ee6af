"""A request's placement: the edge it runs on and its session there, kept through broken links and moves between
edges; and the patience (attempts, retries, silences) that governs them."""

from __future__ import annotations

import time
from dataclasses import replace

from device_client.edge_handle import EdgeError, EdgeFailure, EdgeHandle, EdgeSession, SessionSpec, Verdict
from device_client.result import DecodeResult
from device_client.routing import Route

# With a route that may change, each attempt on one edge is this short, so that a reassignment (failover) is seen.
ATTEMPT_S = 1.0
CLOSE_TIMEOUT_S = 5.0
# A block in flight is given up on an edge that stays silent this long after the route moved on (a hung edge).
SILENT_EDGE_S = 10.0
# Failures on which opening a session on the route's edge is tried again: the link is down, or (when the request is
# being moved there) the edge is full for the moment; the route may also name another edge meanwhile.
RETRY_OPEN = (EdgeFailure.LINK_DOWN,)
RETRY_MOVE = (EdgeFailure.LINK_DOWN, EdgeFailure.BUSY)


class Placement:
    """Where the request runs: the edge in use and the session on it, and how they change.

    The edge's committed tokens are authoritative: after a broken link the session is attached again and the
    verdicts lost on the way are read back; when the route names another edge (a new association, or a failover
    after the old edge died) the request moves there as a new session whose prompt is the original prompt plus
    every committed token; when the edge no longer knows the session (it restarted) the same happens on the same
    edge.  Positions never change, so neither does the sampler's randomness: a moved request emits exactly what an
    unmoved one would."""

    def __init__(self, route: Route, spec: SessionSpec, result: DecodeResult) -> None:
        self.route, self.spec, self.result = route, spec, result
        # Patience in real seconds: under time dilation (route.time_stretch = D) the link and the edges are D times
        # slower, and so must be the device's timeouts, or an outage the emulated system rides out would fail here.
        self.resume_within = route.resume_within_s * route.time_stretch
        self.attempt = (ATTEMPT_S if route.may_change else route.resume_within_s) * route.time_stretch
        self.edge: EdgeHandle = route.current()
        self.session = self.reopen(spec, moving=False)
        self.base = len(spec.prompt)  # committed length when the current session was opened

    def reopen(self, spec: SessionSpec, moving: bool = True) -> EdgeSession:
        """A new session opened with ``spec`` on the route's current edge, following the route while attempts fail
        with a broken link; a request being moved also waits out an edge that is full for the moment (a move
        must not lose the request; a new request is refused at once, as without a controller)."""
        deadline = time.monotonic() + self.resume_within
        retry = RETRY_MOVE if moving else RETRY_OPEN
        while True:
            self.edge = self.route.current()
            try:
                session = self.edge.open(spec, within_s=_left(self.attempt, deadline))
            except EdgeError as error:
                if error.kind not in retry or time.monotonic() >= deadline:
                    raise
                if error.kind is EdgeFailure.BUSY:
                    time.sleep(ATTEMPT_S * self.route.time_stretch / 4)
                continue
            if not self.result.edges or self.result.edges[-1] != self.edge.name:
                self.result.edges.append(self.edge.name)
            return session

    def moved(self) -> bool:
        return self.route.current() is not self.edge

    def wait_verdict(self) -> Verdict:
        """The verdict of the block in flight.  With a route that may change, a silent edge must not hold the
        request: when the route has moved on and no verdict came for ``SILENT_EDGE_S``, the block is given up
        (LINK_DOWN, handled by ``recover``, which moves the request; the device emits only verdicts it received,
        so nothing is lost).  A merely slow edge answers within that time and the move happens between rounds,
        closing the session there.  On a fixed route a verdict that does not come within the resume window (a
        link held in an outage, an edge that hangs) is handled the same way: the stream is replaced, and if that
        fails too the request ends with an error rather than waiting for ever."""
        waited = 0.0
        while True:
            timeout = self.attempt if self.route.may_change else self.resume_within
            try:
                return self.session.receive_verdict(timeout)
            except TimeoutError:
                waited += timeout
                if not self.route.may_change or (waited >= SILENT_EDGE_S * self.route.time_stretch and self.moved()):
                    raise EdgeError(EdgeFailure.LINK_DOWN, f"{self.edge.name} sent no verdict for "
                                                           f"{waited:g} s") from None

    def _continue_at(self, committed: list[int], spec: SessionSpec) -> None:
        """A new session holding everything committed so far as its prompt (positions do not change)."""
        self.session = self.reopen(replace(spec, prompt=list(committed)))
        self.base = len(committed)

    def move(self, committed: list[int], spec: SessionSpec) -> None:
        """Close the session here (best effort: the old edge may be gone) and continue on the route's edge."""
        try:
            self.session.close(timeout=CLOSE_TIMEOUT_S * self.route.time_stretch)
        except EdgeError:
            self.session.cancel()
        self.result.count_bytes(self.session)
        self._continue_at(committed, spec)
        self.result.migrations += 1

    def recover(self, committed: list[int], spec: SessionSpec) -> list[int]:
        """Replace a broken stream; returns the tokens the edge committed that the device had not seen."""
        self.result.count_bytes(self.session)
        self.session.cancel()
        self.result.resumes += 1
        deadline = time.monotonic() + self.resume_within
        while True:
            if self.moved():
                self._continue_at(committed, spec)
                self.result.migrations += 1
                return []
            try:
                self.session = self.edge.attach(self.session.id, within_s=_left(self.attempt, deadline))
            except EdgeError as error:
                # The edge lost the session (it restarted) or ended it (closed after its idle timeout, a link down
                # for longer): a new session continues from the committed tokens.
                if error.kind is EdgeFailure.SESSION_GONE:
                    self._continue_at(committed, spec)
                    return []
                if error.kind is not EdgeFailure.LINK_DOWN or time.monotonic() >= deadline:
                    raise
                continue
            return self.session.committed[len(committed) - self.base:]


def _left(attempt: float, deadline: float) -> float:
    """How long the next attempt may take: ``attempt``, cut to what is left before ``deadline`` (at least 0.1 s)."""
    return max(0.1, min(attempt, deadline - time.monotonic()))
