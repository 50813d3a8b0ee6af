"""The device's side of the wire: the gRPC implementation of the edge seam (edge_handle.py) and its decoding streams.

``EdgeConnection`` and ``GrpcSession`` translate between the decoding loop's domain types (edge_handle.py) and the
protocol, statuses included: ``edge_error`` is the one place where a gRPC status becomes an ``EdgeFailure``.  A
``DecodeStream`` wraps one bidirectional ``Decode`` call so that the decoding loop can send without blocking and
poll for verdicts between two drafted tokens (that polling is what lets drafting overlap verification); it speaks
protocol messages and raises ``StreamError``.  Payload bytes are counted in both directions.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import grpc

from device_client.edge_handle import (RESUME_WITHIN_S, EdgeError, EdgeFacts, EdgeFailure, EdgeHandle, EdgeSession,
                                       EdgeUnreachable, SessionSpec, Verdict)
from tandem.sampling import SparseDist
from tandem.tls import Transport, default_transport
from tandem.wire.v1 import edge_pb2 as pb
from tandem.wire.v1 import edge_pb2_grpc

MAX_MESSAGE_BYTES = 16 << 20
# The link may still be down (UNAVAILABLE), or the edge may not yet have noticed that the old stream is gone
# (ABORTED: the session is still attached to it).
RETRY_ATTACH_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
# gRPC waits 1 s after a broken connection and then backs off up to 120 s before it dials again, failing calls
# fast meanwhile. A radio link comes back within seconds, and the edge drops a session nobody attached to within
# its idle timeout (30 s in the tests), so the device redials quickly and never waits more than a second.
# "min" is gRPC's minimum *connect timeout* (how long one dial may take), not a delay: a TLS handshake (~7 kB with
# the post-quantum key shares) over a thin radio share takes seconds, and a dial cut off after 100 ms never finishes.
RECONNECT_BACKOFF_MS = {"initial": 100, "min": 30_000, "max": 1000}
# What the decoding loop does about a status (edge_handle.EdgeFailure); any status not listed is REFUSED.
FAILURES = {grpc.StatusCode.UNAVAILABLE: EdgeFailure.LINK_DOWN, grpc.StatusCode.RESOURCE_EXHAUSTED: EdgeFailure.BUSY}
# Only an attach names a session the edge may no longer hold: it restarted (NOT_FOUND) or closed it
# (FAILED_PRECONDITION: after its idle timeout, a link down for longer).  Elsewhere these statuses refuse a bad
# request (a block at the wrong position, another tokenizer).
SESSION_GONE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def edge_facts(info: pb.EdgeInfo) -> EdgeFacts:
    """The wire's EdgeInfo as the device's domain sees it."""
    return EdgeFacts(engine=info.engine, model=info.model, vocab_size=info.vocab_size,
                     tokenizer_fingerprint=info.tokenizer_fingerprint, max_context=info.max_context,
                     max_draft_length=info.max_draft_length, max_top_k=info.max_top_k,
                     max_sessions=info.max_sessions, edge_id=info.edge_id if info.HasField("edge_id") else None,
                     dilation=info.dilation if math.isfinite(info.dilation) and info.dilation >= 1 else 0.0)


def edge_error(code: grpc.StatusCode, details: str, attaching: bool = False) -> EdgeError:
    """The domain error of a call the edge ended with ``code`` (``attaching``: the call was an attach)."""
    kind = EdgeFailure.SESSION_GONE if attaching and code in SESSION_GONE else FAILURES.get(code, EdgeFailure.REFUSED)
    return EdgeError(kind, details, code.name)


class StreamError(Exception):
    """The edge ended a ``Decode`` stream with ``code`` (the protocol's view; the seam's is ``edge_error``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@contextmanager
def _as_edge_errors() -> Iterator[None]:
    """Calls on a ``DecodeStream`` within raise the seam's EdgeError instead of its StreamError."""
    try:
        yield
    except StreamError as error:
        raise edge_error(error.code, error.details) from None


class EdgeConnection(EdgeHandle):
    def __init__(self, address: str, connect_timeout: float = 10.0, name: str | None = None,
                 transport: Transport | None = None, edge_id: int | None = None) -> None:
        """``transport``: the device's credentials (default: from $TANDEM_TLS_DIR as device-0, or plaintext with
        $TANDEM_INSECURE=1; TlsError otherwise).  ``edge_id``: the edge the device was sent to; over TLS a server
        without that edge's certificate is refused at the handshake (None: any edge of the deployment)."""
        self.address = address
        self.edge_id = edge_id
        self.name = name or address
        self.connect_timeout = connect_timeout
        self.transport = transport or default_transport("device-0")
        self.channel = self.transport.channel(
            address, "edge", edge_id=edge_id,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                *((f"grpc.{bound}_reconnect_backoff_ms", ms) for bound, ms in RECONNECT_BACKOFF_MS.items()),
                # A connection of its own: behind a radio link emulator, connections to one address reach whichever
                # edge the user was associated with when they were made, so two handles must not share one.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self.stub = edge_pb2_grpc.EdgeServiceStub(self.channel)

    def info(self) -> EdgeFacts:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                return edge_facts(self.stub.GetInfo(pb.InfoRequest(), timeout=max(0.1, deadline - time.monotonic()),
                                                    wait_for_ready=True))
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    time.sleep(0.05)  # the connection broke during the call (a link outage): dial again
                    continue
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    expected = "" if self.edge_id is None else (
                        f" as edge {self.edge_id} (over TLS only the certificate of edge-{self.edge_id} is accepted)")
                    raise EdgeUnreachable(
                        f"cannot reach an edge server at {self.address} within {self.connect_timeout:g} s "
                        f"({code.name}); is `tandem edge serve` running there{expected}?"
                    ) from None
                raise edge_error(code, error.details()) from None

    def score(self, token_ids: list[int], start: int, top_n: int, timeout: float = 600.0) -> pb.ScoreReply:
        try:
            return self.stub.Score(pb.ScoreRequest(token_ids=token_ids, start=start, top_n=top_n), timeout=timeout)
        except grpc.RpcError as error:
            raise edge_error(error.code(), error.details()) from None

    def open_stream(self) -> "DecodeStream":
        return DecodeStream(self.stub)

    def open(self, spec: SessionSpec, within_s: float = RESUME_WITHIN_S) -> "GrpcSession":
        open_message = pb.Open(
            prompt_token_ids=spec.prompt,
            sampling=pb.SamplingParams(temperature=spec.sampling.temperature, top_k=spec.sampling.top_k,
                                       top_p=spec.sampling.top_p, seed=spec.sampling.seed),
            mode=pb.MODE_SPECULATIVE if spec.speculative else pb.MODE_EDGE_ONLY,
            draft_length=spec.draft_length, max_new_tokens=spec.max_new_tokens, stop_token_ids=spec.stop_ids,
            tokenizer_fingerprint=spec.tokenizer_fingerprint)
        if spec.user is not None:
            open_message.user = spec.user
        return GrpcSession(*self.start_stream(pb.DeviceMessage(open=open_message), within_s))

    def attach(self, session_id: str, within_s: float = RESUME_WITHIN_S) -> "GrpcSession":
        return GrpcSession(*self.start_stream(pb.DeviceMessage(attach=pb.Attach(session_id=session_id)), within_s))

    def start_stream(self, first: pb.DeviceMessage,
                     within_s: float = RESUME_WITHIN_S) -> tuple["DecodeStream", pb.SessionOpened]:
        """A new stream that sent ``first`` (open or attach) and got ``opened`` back.

        Retries while the link is down or the edge still holds a broken stream of the session (it notices a
        reset within a moment); EdgeError once ``within_s`` has passed, or at once for any other refusal.
        """
        deadline = time.monotonic() + within_s
        delay = 0.05
        while True:
            stream = self.open_stream()
            stream.send(first)
            try:
                reply = stream.receive(timeout=max(0.1, deadline - time.monotonic()))
            except (StreamError, TimeoutError) as error:
                stream.cancel()
                if isinstance(error, StreamError) and error.code not in RETRY_ATTACH_CODES:
                    # e.g. the session is closed or unknown: retrying cannot help
                    raise edge_error(error.code, error.details, attaching=first.HasField("attach")) from None
                if time.monotonic() + delay > deadline:
                    raise edge_error(grpc.StatusCode.UNAVAILABLE, f"could not reach the edge again within "
                                                                  f"{within_s:g} s: {error}") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if reply.WhichOneof("kind") != "opened":
                stream.cancel()
                raise edge_error(grpc.StatusCode.INTERNAL, f"protocol error: {first.WhichOneof('kind')} "
                                                           f"answered by {reply.WhichOneof('kind')}")
            return stream, reply.opened

    def close(self) -> None:
        self.channel.close()


class DecodeStream:
    def __init__(self, stub: edge_pb2_grpc.EdgeServiceStub) -> None:
        self.bytes_up = 0
        self.bytes_down = 0
        self._outbox: queue.Queue[pb.DeviceMessage | None] = queue.Queue()
        self._inbox: queue.Queue[tuple[pb.EdgeMessage, float] | StreamError | None] = queue.Queue()
        self.received_at = 0.0  # when the message last taken reached the device (time.perf_counter())
        self._call = stub.Decode(iter(self._outbox.get, None))
        self._reader = threading.Thread(target=self._read, name="edge-reader", daemon=True)
        self._reader.start()

    def send(self, message: pb.DeviceMessage) -> None:
        self.bytes_up += message.ByteSize()
        self._outbox.put(message)

    def receive(self, timeout: float | None = None) -> pb.EdgeMessage:
        """The next message from the edge; raises StreamError if the edge ended the stream with an error."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message from the edge within {timeout} s") from None
        return self._unwrap(item)

    def poll(self) -> pb.EdgeMessage | None:
        try:
            item = self._inbox.get_nowait()
        except queue.Empty:
            return None
        return self._unwrap(item)

    def finish(self) -> None:
        """End the device's half of the stream."""
        self._outbox.put(None)

    def cancel(self) -> None:
        self._outbox.put(None)
        self._call.cancel()

    def _unwrap(self, item: tuple[pb.EdgeMessage, float] | StreamError | None) -> pb.EdgeMessage:
        if isinstance(item, StreamError):
            self._inbox.put(item)  # keep reporting the error to later calls
            raise item
        if item is None:
            self._inbox.put(None)
            raise StreamError(grpc.StatusCode.UNAVAILABLE, "the edge ended the stream")
        message, self.received_at = item
        return message

    def _read(self) -> None:
        try:
            for message in self._call:
                self.bytes_down += message.ByteSize()
                self._inbox.put((message, time.perf_counter()))
            self._inbox.put(None)
        except grpc.RpcError as error:
            self._inbox.put(StreamError(error.code(), error.details() or ""))


class GrpcSession(EdgeSession):
    def __init__(self, stream: DecodeStream, opened: pb.SessionOpened) -> None:
        self._stream = stream
        self.id = opened.session_id
        self.committed = list(opened.committed_token_ids)

    @property
    def bytes_up(self) -> int:
        return self._stream.bytes_up

    @property
    def bytes_down(self) -> int:
        return self._stream.bytes_down

    def send_block(self, position: int, tokens: list[int], dists: list[SparseDist] | None) -> None:
        self._stream.send(pb.DeviceMessage(draft=pb.DraftBlock(
            position=position, token_ids=tokens,
            draft_distributions=[pb.SparseDistribution(token_ids=d.token_ids.tolist(), probs=d.probs.tolist())
                                 for d in dists or ()])))

    def poll(self) -> Verdict | None:
        with _as_edge_errors():
            message = self._stream.poll()
        return None if message is None else _verdict(message, self._stream.received_at)

    def receive_verdict(self, timeout: float | None = None) -> Verdict:
        with _as_edge_errors():
            message = self._stream.receive(timeout)
        return _verdict(message, self._stream.received_at)

    def receive_tokens(self) -> list[int] | None:
        with _as_edge_errors():
            message = self._stream.receive()
        if message.WhichOneof("kind") == "closed":
            self._stream.finish()
            return None
        return list(_expect(message, "tokens").tokens.token_ids)

    def close(self, timeout: float | None = None) -> None:
        self._stream.send(pb.DeviceMessage(close=pb.Close()))
        try:
            with _as_edge_errors():
                _expect(self._stream.receive(timeout), "closed")
        except TimeoutError:
            raise edge_error(grpc.StatusCode.UNAVAILABLE, f"no answer to close within {timeout} s") from None
        self._stream.finish()

    def cancel(self) -> None:
        self._stream.cancel()


def _expect(message: pb.EdgeMessage, kind: str) -> pb.EdgeMessage:
    if message.WhichOneof("kind") != kind:
        raise edge_error(grpc.StatusCode.INTERNAL,
                         f"protocol error: expected {kind}, got {message.WhichOneof('kind')}")
    return message


def _verdict(message: pb.EdgeMessage, received_at: float) -> Verdict:
    verdict = _expect(message, "verdict").verdict
    return Verdict(verdict.position, verdict.accepted, verdict.next_token_id, verdict.verify_seconds,
                   verdict.queue_seconds, received_at)
