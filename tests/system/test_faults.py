"""Faults with real daemons: every session ends complete and lossless, or with a clear error to its caller — never a
hang.  SIGTERM drains an edge (the block in flight gets its verdict, new work is refused, the process exits);
kill -9 of an edge or of the link emulator mid-session; a link outage longer than the device's patience.

(An edge killed while a controller routes the device is moved losslessly to another edge:
tests/system/test_control_plane.py::test_failover_when_an_edge_is_killed_mid_request.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from device_client.edge_handle import EdgeError, EdgeFailure
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection, StreamError
from device_client.routing import FixedRoute
from tandem.sampling import SamplingConfig
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.wire.v1 import edge_pb2 as pb
from tandem.processes import EdgeProcess, LinkEmuProcess

REPO = Path(__file__).resolve().parents[2]
PROMPT = "Write a short note about rivers."
HANG = 120.0  # a request still running this long after the fault is hung


def request(tokens: int = 48) -> GenerationRequest:
    return GenerationRequest(PROMPT, "psd", tokens, SamplingConfig(), ignore_eos=True)


class Generation(threading.Thread):
    """A generation in the background that signals once it emitted ``after`` tokens."""

    def __init__(self, route, draft, after: int = 6, tokens: int = 48) -> None:
        super().__init__(daemon=True)
        self.route, self.draft, self.tokens = route, draft, tokens
        self.started_emitting, self.after = threading.Event(), after
        self.emitted = 0
        self.result = self.error = None

    def _on_text(self, text: str) -> None:
        self.emitted += 1
        if self.emitted >= self.after:
            self.started_emitting.set()

    def run(self) -> None:
        try:
            self.result, _ = generate(self.route, self.draft, request(self.tokens), self._on_text)
        except Exception as error:  # what the caller of a failed request sees
            self.error = error
        finally:
            self.started_emitting.set()

    def finish(self) -> None:
        self.join(timeout=HANG)
        assert not self.is_alive(), "the request hung after the fault"


@pytest.fixture
def own_edge(prepared, data_dir, tmp_path):
    def start(*extra: str) -> EdgeProcess:
        edge = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--idle-timeout", "30", *extra],
                           log_path=tmp_path / "edge.log")
        edge.start()
        started.append(edge)
        return edge
    started: list[EdgeProcess] = []
    yield start
    for edge in started:
        edge.stop()


@pytest.fixture(scope="module")
def reference(llamacpp_edge, draft):
    connection = EdgeConnection(llamacpp_edge.address)
    result, _ = generate(connection, draft, request())
    connection.close()
    return result.token_ids


def test_sigterm_drains_the_edge(own_edge):
    """A paced edge (each block held ~0.5 s) gets SIGTERM while a block is being verified: that block's verdict
    arrives, the next block is refused with UNAVAILABLE (resume elsewhere), and the edge exits after logging how
    long the drain took."""
    edge = own_edge("--profile", str(REPO / "profiles" / "phone-1b-gpu-8b.yaml"), "--dilation", "100",
                    "--drain", "20")
    connection = EdgeConnection(edge.address)
    stream, opened = connection.start_stream(pb.DeviceMessage(open=pb.Open(
        prompt_token_ids=[1, 2, 3, 4, 5], mode=pb.MODE_SPECULATIVE, draft_length=4)), 10)
    position = opened.committed_length
    stream.send(pb.DeviceMessage(draft=pb.DraftBlock(position=position, token_ids=[6, 7, 8, 9])))
    first = stream.receive(timeout=30)  # the first block pays the prompt's prefill: let it through
    assert first.WhichOneof("kind") == "verdict"
    position += first.verdict.accepted + 1
    stream.send(pb.DeviceMessage(draft=pb.DraftBlock(position=position, token_ids=[6, 7, 8, 9])))
    threading.Timer(0.2, edge.process.terminate).start()  # SIGTERM while that block is held
    verdict = stream.receive(timeout=30)
    assert verdict.WhichOneof("kind") == "verdict" and verdict.verdict.position == position
    stream.send(pb.DeviceMessage(draft=pb.DraftBlock(position=position + verdict.verdict.accepted + 1,
                                                     token_ids=[1, 2])))
    with pytest.raises(StreamError) as refused:
        stream.receive(timeout=30)
    assert refused.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert edge.process.wait(timeout=60) == 0
    log = edge.log_path.read_text()
    assert "drained in" in log and "1 requests were in flight, 0 left unfinished" in log, log[-2000:]
    connection.close()


def test_kill_9_of_the_edge_mid_session_ends_with_a_clear_error(own_edge, draft):
    """No controller to move the request: the device retries for its resume window, then fails with an error
    that names the edge; the tokens it emitted before are the undisturbed answer's."""
    edge = own_edge()
    route = FixedRoute(EdgeConnection(edge.address), resume_within_s=3)
    generation = Generation(route, draft)
    generation.start()
    assert generation.started_emitting.wait(HANG)
    edge.kill()
    generation.finish()
    assert isinstance(generation.error, EdgeError), generation.error
    assert generation.error.kind is EdgeFailure.LINK_DOWN and generation.error.status == "UNAVAILABLE"


def test_kill_9_of_the_link_emulator_mid_session_resumes_losslessly(llamacpp_edge, draft, reference, tmp_path):
    """The emulator dies with the session's stream in it and comes back on the same port within the device's
    resume window: the device attaches to its session again and the answer is the undisturbed one."""
    se = np.full(200, 10.0)
    path = tmp_path / "steady.npz"
    save_trace(synthetic_trace(se, se, slot_ms=100), path)
    args = ["--trace", str(path), "--upstream", llamacpp_edge.address, "--base-delay-ms", "5"]
    link = LinkEmuProcess(args, log_path=tmp_path / "linkemu-1.log")
    link.start()
    address = link.address
    route = FixedRoute(EdgeConnection(address), resume_within_s=30)
    generation = Generation(route, draft)
    generation.start()
    assert generation.started_emitting.wait(HANG)
    link.kill()
    again = LinkEmuProcess([*args, "--listen", address], log_path=tmp_path / "linkemu-2.log")
    again.start()
    try:
        generation.finish()
    finally:
        again.stop()
    assert generation.error is None, generation.error
    assert generation.result.token_ids == reference and generation.result.resumes >= 1


def test_an_outage_longer_than_the_deadline_ends_with_a_clear_error(llamacpp_edge, draft, reference, tmp_path):
    """The link goes silent for 100 s (the emulator's outage limit is longer, so it holds the bytes rather than
    breaking the connection): the device gives up after its resume window with UNAVAILABLE, having emitted only
    tokens of the undisturbed answer."""
    rates = np.array([10.0] * 10 + [0.0] * 1000)  # 1 s up, then 100 s of outage
    path = tmp_path / "fade.npz"
    save_trace(synthetic_trace(rates, rates, slot_ms=100), path)
    with LinkEmuProcess(["--trace", str(path), "--upstream", llamacpp_edge.address, "--no-loop",
                         "--outage-limit", "300", "--base-delay-ms", "5"], log_path=tmp_path / "linkemu.log") as link:
        connection = EdgeConnection(link.address)
        connection.info()
        generation = Generation(FixedRoute(connection, resume_within_s=2), draft, after=1, tokens=400)
        generation.start()
        generation.finish()
    assert isinstance(generation.error, EdgeError), generation.error
    assert generation.error.kind is EdgeFailure.LINK_DOWN and generation.error.status == "UNAVAILABLE"
