"""The device's decoding loops: speculative (sequential ``sd`` or parallel ``psd``) and ``edge-only``.

Parallel speculative decoding (PEARL's post-verify, SpecEdge's proactive drafting): while block b is in flight,
the device keeps drafting as if b were fully accepted, one token at a time, polling for the verdict in between.
If the verdict accepts all of b and the bonus token equals the first speculative token, the rest of the
speculative tokens are already drafted for block b+1; otherwise they are dropped and drafting restarts from the
corrected token (the draft's KV cache rolls back for free).  Every emitted token comes from the edge's verdicts,
so all modes emit what the target's verification decides: speed never changes the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import grpc
import numpy as np

from device_client.draft import DraftEngine, DraftToken, draft_token
from device_client.link import DecodeStream, EdgeError
from tandem.sampling import PositionRandom, SamplingConfig
from tandem.wire.v1 import edge_pb2 as pb

MODES = ("psd", "sd", "edge-only")
TokenSink = Callable[[list[int]], None]
# Given an open message: a new stream whose session it opened (retried while the link is down).
Start = Callable[[pb.DeviceMessage], tuple[DecodeStream, pb.SessionOpened]]
# Given a session id: a new stream attached to it, and the tokens the edge committed after the prompt.
Resume = Callable[[str], tuple[DecodeStream, list[int]]]


@dataclass
class DecodeResult:
    mode: str
    session_id: str | None = None  # the edge's id of a speculative session (its verification log key)
    token_ids: list[int] = field(default_factory=list)
    started: float = 0.0
    first_token_at: float | None = None
    finished: float = 0.0
    rounds: int = 0
    drafted_sent: int = 0
    accepted: int = 0
    accepted_lengths: list[int] = field(default_factory=list)
    block_lengths: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)  # block sent -> verdict received
    edge_verify_seconds: list[float] = field(default_factory=list)  # as reported by the edge
    draft_seconds: float = 0.0  # all draft compute, discarded speculation included
    draft_overlapped_seconds: float = 0.0  # draft compute done while a block was in flight
    draft_wasted_tokens: int = 0
    resumes: int = 0  # streams replaced after the link broke
    bytes_up: int = 0
    bytes_down: int = 0

    def count_bytes(self, stream: DecodeStream) -> None:
        """Add a stream's payload bytes (a session may use several when the link breaks)."""
        self.bytes_up += stream.bytes_up
        self.bytes_down += stream.bytes_down

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted_sent if self.drafted_sent else None

    @property
    def mean_accepted_length(self) -> float | None:
        return float(np.mean(self.accepted_lengths)) if self.accepted_lengths else None

    @property
    def draft_hidden_fraction(self) -> float | None:
        return self.draft_overlapped_seconds / self.draft_seconds if self.draft_seconds > 0 else None


class _Emitter:
    """Collects emitted tokens, stops at a stop token or the token budget, and streams them out."""

    def __init__(self, result: DecodeResult, max_tokens: int, stop_ids: Sequence[int], sink: TokenSink | None):
        self.result = result
        self.max_tokens = max_tokens
        self.stop_ids = set(stop_ids)
        self.sink = sink
        self.done = False

    @property
    def remaining(self) -> int:
        return self.max_tokens - len(self.result.token_ids)

    def emit(self, tokens: Sequence[int]) -> None:
        out = []
        for token in tokens:
            if self.done:
                break
            out.append(int(token))
            if token in self.stop_ids or len(self.result.token_ids) + len(out) >= self.max_tokens:
                self.done = True
        if out:
            if self.result.first_token_at is None:
                self.result.first_token_at = time.perf_counter()
            self.result.token_ids.extend(out)
            if self.sink:
                self.sink(out)


def _open_message(
    prompt: Sequence[int], config: SamplingConfig, mode: int, draft_length: int, max_tokens: int,
    stop_ids: Sequence[int], fingerprint: str,
) -> pb.DeviceMessage:
    return pb.DeviceMessage(
        open=pb.Open(
            prompt_token_ids=list(prompt),
            sampling=pb.SamplingParams(
                temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, seed=config.seed
            ),
            mode=mode,
            draft_length=draft_length,
            max_new_tokens=max_tokens,
            stop_token_ids=list(stop_ids),
            tokenizer_fingerprint=fingerprint,
        )
    )


def _expect(message: pb.EdgeMessage, kind: str) -> pb.EdgeMessage:
    if message.WhichOneof("kind") != kind:
        raise EdgeError(grpc.StatusCode.INTERNAL, f"protocol error: expected {kind}, got {message.WhichOneof('kind')}")
    return message


def decode_edge_only(
    start: Start, prompt: Sequence[int], config: SamplingConfig, max_tokens: int,
    stop_ids: Sequence[int], fingerprint: str, sink: TokenSink | None = None,
) -> DecodeResult:
    """The edge decodes alone and streams tokens. A stream broken by the link (UNAVAILABLE) is replaced by a new
    edge-only session whose prompt is the old prompt plus every token received: the edge closes an edge-only
    session with its stream, and a token is the device's once it arrived."""
    result = DecodeResult("edge-only", started=time.perf_counter())
    emitter = _Emitter(result, max_tokens, stop_ids, sink)
    stream, _ = start(_open_message(prompt, config, pb.MODE_EDGE_ONLY, 0, max_tokens, stop_ids, fingerprint))
    try:
        while True:
            try:
                message = stream.receive()
            except EdgeError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                if emitter.done:
                    break  # every token arrived; only the edge's `closed` was lost
                result.count_bytes(stream)
                stream.cancel()
                stream, _ = start(_open_message(list(prompt) + result.token_ids, config, pb.MODE_EDGE_ONLY, 0,
                                                emitter.remaining, stop_ids, fingerprint))
                result.resumes += 1
                continue
            if message.WhichOneof("kind") == "closed":
                break
            emitter.emit(_expect(message, "tokens").tokens.token_ids)
    except BaseException:
        stream.cancel()
        raise
    stream.finish()
    result.finished = time.perf_counter()
    result.count_bytes(stream)
    return result


def decode_speculative(
    start: Start, resume: Resume, draft: DraftEngine, prompt: Sequence[int], config: SamplingConfig,
    max_tokens: int, draft_length: int, parallel: bool, stop_ids: Sequence[int], sink: TokenSink | None = None,
) -> DecodeResult:
    """Draft, send blocks, commit verdicts. A stream broken by the link (UNAVAILABLE) is replaced by attaching
    to the same session: the edge's committed tokens are authoritative, so a verdict lost on the way is recovered
    from them and nothing committed is lost or repeated."""
    result = DecodeResult("psd" if parallel else "sd", started=time.perf_counter())
    emitter = _Emitter(result, max_tokens, stop_ids, sink)
    random = PositionRandom(config.seed, PositionRandom.DEVICE)
    committed = list(prompt)
    speculative: list[DraftToken] = []  # drafted past the in-flight block, assuming it is fully accepted

    stream, opened = start(_open_message(prompt, config, pb.MODE_SPECULATIVE, draft_length, max_tokens, stop_ids,
                                         draft.tokenizer_fingerprint))
    session_id = result.session_id = opened.session_id

    def draft_one(context: list[int], overlapped: bool) -> DraftToken:
        token = draft_token(draft, context, config, random)
        result.draft_seconds += token.seconds
        if overlapped:
            result.draft_overlapped_seconds += token.seconds
        return token

    def resumed(error: EdgeError) -> None:
        """Replace the broken stream, or re-raise when this error is not a broken link."""
        nonlocal stream, speculative
        if error.code != grpc.StatusCode.UNAVAILABLE:
            raise error
        result.count_bytes(stream)
        stream.cancel()
        stream, edge_committed = resume(session_id)
        result.resumes += 1
        missed = edge_committed[len(committed) - len(prompt):]  # verdicts that never reached the device
        committed.extend(missed)
        emitter.emit(missed)
        result.draft_wasted_tokens += len(speculative)
        speculative = []

    try:
        while not emitter.done:
            # Each round emits accepted + 1 tokens: a block longer than remaining - 1 would be drafted in vain.
            length = max(1, min(draft_length, emitter.remaining - 1))
            block = speculative[:length]
            result.draft_wasted_tokens += len(speculative) - len(block)
            while len(block) < length:
                block.append(draft_one(committed + [t.token_id for t in block], overlapped=False))
            block_ids = [t.token_id for t in block]
            sent_at = time.perf_counter()
            stream.send(pb.DeviceMessage(draft=pb.DraftBlock(
                position=len(committed),
                token_ids=block_ids,
                draft_distributions=[] if config.greedy else [
                    pb.SparseDistribution(token_ids=t.dist.token_ids.tolist(), probs=t.dist.probs.tolist())
                    for t in block
                ],
            )))

            speculative = []
            message = None
            try:
                if parallel:
                    ahead = committed + block_ids
                    while len(speculative) <= draft_length and (message := stream.poll()) is None:
                        speculative.append(draft_one(ahead + [t.token_id for t in speculative], overlapped=True))
                verdict = _expect(message or stream.receive(), "verdict").verdict
            except EdgeError as error:
                resumed(error)
                continue
            result.round_seconds.append(time.perf_counter() - sent_at)
            result.edge_verify_seconds.append(verdict.verify_seconds)

            accepted, next_token = verdict.accepted, verdict.next_token_id
            result.rounds += 1
            result.drafted_sent += len(block_ids)
            result.accepted += accepted
            result.accepted_lengths.append(accepted)
            result.block_lengths.append(len(block_ids))
            new_tokens = block_ids[:accepted] + [next_token]
            committed.extend(new_tokens)
            emitter.emit(new_tokens)
            if accepted == len(block_ids) and speculative and speculative[0].token_id == next_token:
                speculative = speculative[1:]  # the guess of the bonus token was right: keep drafting from there
            else:
                result.draft_wasted_tokens += len(speculative)
                speculative = []

        while True:
            stream.send(pb.DeviceMessage(close=pb.Close()))
            try:
                _expect(stream.receive(), "closed")
                break
            except EdgeError as error:
                try:
                    resumed(error)
                except EdgeError as refused:
                    if refused.code == grpc.StatusCode.FAILED_PRECONDITION:
                        break  # the session is closed: the close got through and only its answer was lost
                    raise
    except BaseException:
        stream.cancel()
        raise
    stream.finish()
    result.finished = time.perf_counter()
    result.count_bytes(stream)
    return result


def summarize(result: DecodeResult, text: str, prompt_tokens: int) -> dict:
    """The figures of one generation, as printed by `tandem generate --json`."""
    rounds = max(result.rounds, 1)
    return {
        "mode": result.mode,
        "text": text,
        "token_ids": result.token_ids,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": len(result.token_ids),
        "elapsed_s": result.elapsed,
        "tokens_per_s": result.tokens_per_s,
        "per_token_latency_s": result.elapsed / len(result.token_ids) if result.token_ids else None,
        "ttft_s": result.ttft,
        "acceptance_rate": result.acceptance_rate,
        "mean_accepted_length": result.mean_accepted_length,
        "rounds": result.rounds,
        "mean_block_length": float(np.mean(result.block_lengths)) if result.block_lengths else None,
        "mean_round_s": float(np.mean(result.round_seconds)) if result.round_seconds else None,
        "mean_edge_verify_s": float(np.mean(result.edge_verify_seconds)) if result.edge_verify_seconds else None,
        "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down,
        "bytes_up_per_block": result.bytes_up / rounds if result.rounds else None,
        "bytes_down_per_block": result.bytes_down / rounds if result.rounds else None,
        "draft_s": result.draft_seconds,
        "draft_hidden_fraction": result.draft_hidden_fraction,
        "draft_wasted_tokens": result.draft_wasted_tokens,
        "resumes": result.resumes,
    }
