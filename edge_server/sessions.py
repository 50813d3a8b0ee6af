"""Decoding sessions held by an edge: committed tokens, sampling state, limits.

A session outlives the gRPC stream that drives it, so that a device whose radio link dropped can attach again
without losing a committed token; it ends on close, or after ``idle_timeout`` seconds without a message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tandem.sampling import SamplingConfig

if TYPE_CHECKING:
    from edge_server.checks import SessionRequest


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
    user: int | None = None  # whose compute share pays for its verifications
    last_active: float = field(default_factory=time.monotonic)
    attached: bool = True

    def touch(self) -> None:
        self.last_active = time.monotonic()


class SessionRegistry:
    def __init__(self, max_sessions: int, idle_timeout: float, remember_closed: int = 4096) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._sessions: dict[str, Session] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()  # recently ended ids, to say "closed" not "unknown"
        self._remember_closed = remember_closed

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, request: "SessionRequest") -> Session:
        self.reap()
        if len(self._sessions) >= self.max_sessions:
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
            user=request.user,
        )
        self._sessions[session.id] = session
        return session

    def sessions_by_user(self) -> Counter[int | None]:
        return Counter(session.user for session in self._sessions.values())

    def attach(self, session_id: str) -> Session:
        self.reap()
        session = self._sessions.get(session_id)
        if session is None:
            if session_id in self._closed:
                raise SessionError("FAILED_PRECONDITION", f"session {session_id} is closed")
            raise SessionError("NOT_FOUND", f"unknown session {session_id!r}")
        if session.attached:
            # ABORTED (a conflict worth retrying): the old stream may be dead but not yet noticed by the server.
            raise SessionError("ABORTED", f"session {session_id} is attached to another stream")
        session.attached = True
        session.touch()
        return session

    def detach(self, session: Session) -> None:
        session.attached = False
        session.touch()

    def close(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._closed[session.id] = None
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
