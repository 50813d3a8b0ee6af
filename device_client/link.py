"""The device's side of the wire: a connection to one edge and its decoding streams.

A ``DecodeStream`` wraps one bidirectional ``Decode`` call so that the decoding loop can send without blocking and
poll for verdicts between two drafted tokens (that polling is what lets drafting overlap verification).
Payload bytes are counted in both directions.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc

from tandem.wire.v1 import edge_pb2 as pb
from tandem.wire.v1 import edge_pb2_grpc

MAX_MESSAGE_BYTES = 16 << 20
# A session is opened, or its stream broken by the link (radio link down, proxy reset) replaced, within this long.
RESUME_WITHIN_S = 60.0
# The link may still be down (UNAVAILABLE), or the edge may not yet have noticed that the old stream is gone
# (ABORTED: the session is still attached to it).
RETRY_ATTACH_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
# gRPC waits 1 s after a broken connection and then backs off up to 120 s before it dials again, failing calls
# fast meanwhile. A radio link comes back within seconds, and the edge drops a session nobody attached to within
# its idle timeout (30 s in the tests), so the device redials quickly and never waits more than a second.
RECONNECT_BACKOFF_MS = {"initial": 100, "min": 100, "max": 1000}


class EdgeError(Exception):
    """The edge ended a call with an error status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class EdgeUnreachable(Exception):
    pass


class EdgeConnection:
    def __init__(self, address: str, connect_timeout: float = 10.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                *((f"grpc.{bound}_reconnect_backoff_ms", ms) for bound, ms in RECONNECT_BACKOFF_MS.items()),
            ],
        )
        self.stub = edge_pb2_grpc.EdgeServiceStub(self.channel)

    def info(self) -> pb.EdgeInfo:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                return self.stub.GetInfo(pb.InfoRequest(), timeout=max(0.1, deadline - time.monotonic()),
                                         wait_for_ready=True)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    time.sleep(0.05)  # the connection broke during the call (a link outage): dial again
                    continue
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise EdgeUnreachable(
                        f"cannot reach an edge server at {self.address} within {self.connect_timeout:g} s "
                        f"({code.name}); is `tandem edge serve` running there?"
                    ) from None
                raise EdgeError(code, error.details()) from None

    def score(self, token_ids: list[int], start: int, top_n: int) -> pb.ScoreReply:
        try:
            return self.stub.Score(pb.ScoreRequest(token_ids=token_ids, start=start, top_n=top_n))
        except grpc.RpcError as error:
            raise EdgeError(error.code(), error.details()) from None

    def open_stream(self) -> "DecodeStream":
        return DecodeStream(self.stub)

    def attach(self, session_id: str, within_s: float = RESUME_WITHIN_S) -> tuple["DecodeStream", list[int]]:
        """A new stream attached to ``session_id``, and the tokens the edge committed after the prompt."""
        stream, opened = self.start_stream(pb.DeviceMessage(attach=pb.Attach(session_id=session_id)), within_s)
        return stream, list(opened.committed_token_ids)

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
                if reply.WhichOneof("kind") != "opened":
                    raise EdgeError(grpc.StatusCode.INTERNAL, f"protocol error: {first.WhichOneof('kind')} "
                                                              f"answered by {reply.WhichOneof('kind')}")
                return stream, reply.opened
            except (EdgeError, TimeoutError) as error:
                stream.cancel()
                if isinstance(error, EdgeError) and error.code not in RETRY_ATTACH_CODES:
                    raise  # e.g. the session is closed or unknown: retrying cannot help
                if time.monotonic() + delay > deadline:
                    raise EdgeError(grpc.StatusCode.UNAVAILABLE, f"could not reach the edge again within "
                                                                 f"{within_s:g} s: {error}") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        self.channel.close()


class DecodeStream:
    def __init__(self, stub: edge_pb2_grpc.EdgeServiceStub) -> None:
        self.bytes_up = 0
        self.bytes_down = 0
        self._outbox: queue.Queue[pb.DeviceMessage | None] = queue.Queue()
        self._inbox: queue.Queue[pb.EdgeMessage | EdgeError | None] = queue.Queue()
        self._call = stub.Decode(iter(self._outbox.get, None))
        self._reader = threading.Thread(target=self._read, name="edge-reader", daemon=True)
        self._reader.start()

    def send(self, message: pb.DeviceMessage) -> None:
        self.bytes_up += message.ByteSize()
        self._outbox.put(message)

    def receive(self, timeout: float | None = None) -> pb.EdgeMessage:
        """The next message from the edge; raises EdgeError if the edge ended the stream with an error."""
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

    def _unwrap(self, item: pb.EdgeMessage | EdgeError | None) -> pb.EdgeMessage:
        if isinstance(item, EdgeError):
            self._inbox.put(item)  # keep reporting the error to later calls
            raise item
        if item is None:
            self._inbox.put(None)
            raise EdgeError(grpc.StatusCode.UNAVAILABLE, "the edge ended the stream")
        return item

    def _read(self) -> None:
        try:
            for message in self._call:
                self.bytes_down += message.ByteSize()
                self._inbox.put(message)
            self._inbox.put(None)
        except grpc.RpcError as error:
            self._inbox.put(EdgeError(error.code(), error.details() or ""))
