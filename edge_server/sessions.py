"""Decoding sessions held by an edge: committed tokens, sampling state, limits.

A session outlives the gRPC stream that drives it, so that a device whose radio link dropped can attach again
without losing a committed token; it ends on close, once it has been detached for ``idle_timeout`` seconds
without progress, or once an attached stream that already verified a block has committed nothing for
``commit_idle`` seconds (a stream that only holds a slot is closed: service.py waits for its next message no longer
than ``wait_limit``).  The idle clock restarts when a session that made progress (a verified block) since it was
last attached is detached — a device whose link broke gets the whole timeout to come back, and after attaching
again the rest of it to send its next block — but attaching, and detaching without progress, do not restart it:
a client cannot keep a session alive by re-attaching.

A session belongs to the identity that opened it (its client certificate; None in plaintext): only that identity
may attach to it.  Each identity holds at most ``per_identity`` sessions and opens at most ``OPEN_BURST`` at once
and ``open_rate`` per second after that, so one client cannot take every slot of the edge; an identity at its limit
that opens another session gives up its own oldest detached one (a request it abandoned) rather than being refused.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tandem.limits import RateLimit
from tandem.rpc import echo
from tandem.sampling import SamplingConfig


@dataclass(frozen=True)
class SessionRequest:
    """What a device asks a session for, once checks.py has validated its Open message."""

    prompt: list[int]
    sampling: SamplingConfig
    speculative: bool
    draft_length: int  # speculative: the longest block
    max_new_tokens: int  # edge-only: tokens to generate; speculative: the declared budget (0: up to the context)
    stop_ids: list[int]  # edge-only
    user: int | None


class SessionError(Exception):
    """A session operation that cannot be done; ``code`` names the gRPC status (see service.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    id: str
    tokens: list[int]  # prompt + committed tokens
    prompt_length: int
    sampling: SamplingConfig
    speculative: bool
    draft_length: int
    max_new_tokens: int = 0  # the request's declared budget (0: up to the context)
    user: int | None = None  # whose compute share pays for its verifications
    owner: str | None = None  # the identity that opened it (None: plaintext, nobody's)
    last_active: float = field(default_factory=time.monotonic)  # last progress: open, or a verified block
    attached: bool = True
    verified_blocks: int = 0
    progressed: bool = False  # a block was verified since the session was last attached

    def touch(self) -> None:
        self.last_active = time.monotonic()
        self.progressed = True

    def remaining_tokens(self, max_context: int) -> int:
        """Tokens this session may still commit: its declared budget left, bounded by the context left (what the
        edge reports as the user's pending work; a device's own report is never believed beyond it)."""
        room = max(0, max_context - len(self.tokens))
        if self.max_new_tokens:
            room = min(room, max(0, self.max_new_tokens - (len(self.tokens) - self.prompt_length)))
        return room


OPEN_BURST = 8


class SessionRegistry:
    def __init__(self, max_sessions: int, idle_timeout: float, remember_closed: int = 4096,
                 per_identity: int | None = None, open_rate: float = 2.0, commit_idle: float | None = None) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.commit_idle = commit_idle or idle_timeout
        self.per_identity = per_identity or max_sessions
        self._open_rate = RateLimit(open_rate, OPEN_BURST)
        self._scoring: Counter[str | None] = Counter()  # Score calls in flight, by identity
        self._sessions: dict[str, Session] = {}
        # Recently ended ids and their owners, to tell an owner "closed" rather than "unknown".
        self._closed: OrderedDict[str, str | None] = OrderedDict()
        self._remember_closed = remember_closed

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, request: SessionRequest, owner: str | None = None) -> Session:
        self.reap()
        if owner is not None:
            if self.held_by(owner) >= self.per_identity:
                self._reclaim_detached(owner)
            if self.held_by(owner) >= self.per_identity:
                raise SessionError("RESOURCE_EXHAUSTED", f"this identity holds its maximum of {self.per_identity} "
                                   "sessions, all attached; close one first")
            if not self._open_rate.take(owner):
                raise SessionError("RESOURCE_EXHAUSTED", "this identity opens sessions too fast; retry shortly")
        if len(self._sessions) + sum(self._scoring.values()) >= self.max_sessions:
            raise SessionError(
                "RESOURCE_EXHAUSTED", f"the edge holds its maximum of {self.max_sessions} sessions; retry later"
            )
        session = Session(
            id=uuid.uuid4().hex,
            tokens=list(request.prompt),
            prompt_length=len(request.prompt),
            sampling=request.sampling,
            speculative=request.speculative,
            draft_length=request.draft_length,
            max_new_tokens=request.max_new_tokens,
            user=request.user,
            owner=owner,
        )
        self._sessions[session.id] = session
        return session

    def sessions_by_user(self) -> Counter[int | None]:
        return Counter(session.user for session in self._sessions.values())

    def remaining_by_user(self, max_context: int) -> Counter[int | None]:
        """Per user, the tokens its open sessions may still commit."""
        remaining: Counter[int | None] = Counter()
        for session in self._sessions.values():
            remaining[session.user] += session.remaining_tokens(max_context)
        return remaining

    def wait_limit(self, session: Session | None) -> float:
        """How long a stream may wait for its next message: ``idle_timeout`` before it opens or attaches; then, until
        its session has made progress on this stream, what is left of ``idle_timeout`` (the resume window of a
        device that attached again); after that, ``commit_idle`` since its last verified block."""
        if session is None:
            return self.idle_timeout
        limit = self.commit_idle if session.progressed else self.idle_timeout
        return max(0.0, session.last_active + limit - time.monotonic())

    def _reclaim_detached(self, owner: str) -> None:
        detached = [session for session in self._sessions.values() if session.owner == owner and not session.attached]
        if detached:
            self.close(min(detached, key=lambda session: session.last_active))

    def held_by(self, owner: str) -> int:
        return sum(1 for session in self._sessions.values() if session.owner == owner) + self._scoring[owner]

    @contextmanager
    def score_lease(self, owner: str | None) -> Iterator[None]:
        """A Score call holds a session's slot while it runs: counted against the same limits."""
        if owner is not None and self.held_by(owner) >= self.per_identity:
            raise SessionError("RESOURCE_EXHAUSTED", f"this identity holds its maximum of {self.per_identity} "
                               "sessions and Score calls")
        if len(self._sessions) + sum(self._scoring.values()) >= self.max_sessions:
            raise SessionError("RESOURCE_EXHAUSTED", f"the edge holds its maximum of {self.max_sessions} sessions "
                               "and Score calls; retry later")
        self._scoring[owner] += 1
        try:
            yield
        finally:
            self._scoring[owner] -= 1

    def attach(self, session_id: str, owner: str | None = None) -> Session:
        self.reap()
        session = self._sessions.get(session_id)
        quoted = echo(session_id)
        if session is not None and session.owner != owner:
            session = None  # another identity's session: answered as if unknown, so ids cannot be probed
        if session is None:
            if session_id in self._closed and self._closed[session_id] == owner:
                raise SessionError("FAILED_PRECONDITION", f"session {quoted} is closed")
            raise SessionError("NOT_FOUND", f"no session {quoted} of this identity")
        if session.attached:
            # ABORTED (a conflict worth retrying): the old stream may be dead but not yet noticed by the server.
            raise SessionError("ABORTED", f"session {quoted} is attached to another stream")
        session.attached = True  # not progress: the idle clock keeps running
        session.progressed = False
        return session

    def detach(self, session: Session) -> None:
        session.attached = False
        if session.progressed:  # its device may be behind a broken link: the timeout counts from now
            session.touch()
        session.progressed = False

    def close(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._closed[session.id] = session.owner
            while len(self._closed) > self._remember_closed:
                self._closed.popitem(last=False)

    def reap(self) -> None:
        """Close detached sessions idle for longer than the timeout."""
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if not session.attached and now - session.last_active > self.idle_timeout:
                self.close(session)

    async def reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.idle_timeout / 4))
            self.reap()
