"""The seam between the device's decoding loop and an edge: what the loop asks of an edge, in domain types.

The loop opens a session (``EdgeHandle.open``), sends blocks and reads verdicts (``EdgeSession``), and on a broken
link attaches again.  It never builds protocol messages and never knows which edge it talks to, or how many it has
used: a ``Route`` (routing.py) hands it the edge to use now.  ``grpc_edge.EdgeConnection`` is the gRPC implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum, auto

from tandem.sampling import SamplingConfig, SparseDist

# A session is opened, or its stream broken by the link (radio link down, proxy reset) replaced, within this long.
RESUME_WITHIN_S = 60.0


class EdgeFailure(Enum):
    """What went wrong on an edge, as far as the decoding loop acts on it."""

    LINK_DOWN = auto()  # the connection broke or the edge cannot be reached now: attach again, or move
    BUSY = auto()  # the edge refuses for load: a request being moved waits it out, a new one gives up
    SESSION_GONE = auto()  # the edge no longer holds the session (restarted, or closed it): open a new one
    REFUSED = auto()  # anything else (a bad request, a policy, a failure on the edge): retrying cannot help


class EdgeError(Exception):
    """The edge ended a call with an error.  ``status`` is the edge's own name for it (e.g. NOT_FOUND), which leads
    the message people see; the loop branches on ``kind`` only."""

    def __init__(self, kind: EdgeFailure, details: str, status: str = "") -> None:
        self.status = status or kind.name
        super().__init__(f"{self.status}: {details}")
        self.kind = kind
        self.details = details


class EdgeUnreachable(Exception):
    """No edge answered at the address within the connect timeout (``EdgeHandle.info``)."""


@dataclass(frozen=True)
class EdgeFacts:
    """What an edge serves and its limits, checked before a session opens (generate.check_compatible)."""

    engine: str  # "vllm" or "llamacpp"
    model: str
    vocab_size: int
    tokenizer_fingerprint: str  # a draft must share the target's tokenizer (tandem/models.py)
    max_context: int  # prompt + generated tokens per session
    max_draft_length: int
    max_top_k: int  # sampling needs 1 <= top_k <= max_top_k
    max_sessions: int
    edge_id: int | None  # the edge's index in the topology, when it was given one
    dilation: float = 0.0  # the edge is paced: D times slower than the hardware it emulates (0 = not paced)


@dataclass(frozen=True)
class SessionSpec:
    """What a session is opened with. A moved session is opened again with ``prompt`` = the original prompt plus
    every token committed so far: positions, and so the sampler's randomness, stay the same."""

    prompt: list[int]
    sampling: SamplingConfig
    speculative: bool
    draft_length: int = 0  # speculative: the longest block
    max_new_tokens: int = 0  # edge-only: tokens to generate; speculative: the request's budget (0: the context)
    stop_ids: tuple[int, ...] = ()  # edge-only
    tokenizer_fingerprint: str = ""
    user: int | None = None  # whose compute share pays (set when the device follows a controller)


@dataclass(frozen=True)
class Verdict:
    position: int
    accepted: int
    next_token: int
    verify_seconds: float  # as reported by the edge: block arrival to verdict
    queue_seconds: float
    received_at: float | None = None  # time.perf_counter() when it reached the device (None: when taken)


class EdgeSession(ABC):
    """One session on one edge, over one stream; replaced (attach, or a new session) when the stream breaks."""

    id: str
    committed: list[int]  # tokens the edge had committed after the session's prompt when this stream started
    bytes_up: int
    bytes_down: int

    @abstractmethod
    def send_block(self, position: int, tokens: list[int], dists: list[SparseDist] | None) -> None: ...

    @abstractmethod
    def poll(self) -> Verdict | None:
        """A verdict that already arrived, else None (never blocks)."""

    @abstractmethod
    def receive_verdict(self, timeout: float | None = None) -> Verdict:
        """The next verdict; TimeoutError when none came within ``timeout`` seconds (None: wait)."""

    @abstractmethod
    def receive_tokens(self) -> list[int] | None:
        """Edge-only: the next tokens the edge generated; None once it closed the session (generation done)."""

    @abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """End the session on the edge (waits for its answer)."""

    @abstractmethod
    def cancel(self) -> None:
        """Drop the stream without a word (the edge keeps a speculative session until its idle timeout)."""


class EdgeHandle(ABC):
    """An edge server the device can open sessions on."""

    name: str  # for messages: the edge's id and address

    @abstractmethod
    def info(self) -> EdgeFacts:
        """The edge's static facts (model, vocabulary, limits), checked before opening; EdgeUnreachable when no edge
        answers."""

    @abstractmethod
    def open(self, spec: SessionSpec, within_s: float) -> EdgeSession:
        """A new session; retried while the link is down, EdgeError once ``within_s`` passed or when refused."""

    @abstractmethod
    def attach(self, session_id: str, within_s: float) -> EdgeSession:
        """The session again, on a new stream (same retries as ``open``)."""

    @abstractmethod
    def close(self) -> None: ...
