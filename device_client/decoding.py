"""The device's decoding loops: speculative (sequential ``sd`` or parallel ``psd``) and ``edge-only``.

Parallel speculative decoding (PEARL's post-verify, SpecEdge's proactive drafting): while block b is in flight,
the device keeps drafting as if b were fully accepted, one token at a time, polling for the verdict in between,
up to the guessed bonus token and a block of the round's length.
If the verdict accepts all of b and the bonus token equals the first speculative token, the rest of the
speculative tokens are already drafted for block b+1; otherwise they are dropped and drafting restarts from the
corrected token (the draft's KV cache rolls back for free).  Every emitted token comes from the edge's verdicts,
so all modes emit what the target's verification decides: speed never changes the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from device_client.draft import DraftEngine, DraftToken, draft_token
from device_client.edge_handle import EdgeError, EdgeFailure, EdgeHandle, EdgeSession, SessionSpec, Verdict
from device_client.routing import DeviceStats, Route
from tandem.sampling import PositionRandom, SamplingConfig

MODES = ("psd", "sd", "edge-only")
TokenSink = Callable[[list[int]], None]
# With a route that may change, each attempt on one edge is this short, so that a reassignment (failover) is seen.
ATTEMPT_S = 1.0
CLOSE_TIMEOUT_S = 5.0
# A block in flight is given up on an edge that stays silent this long after the route moved on (a hung edge).
SILENT_EDGE_S = 10.0
# Failures on which opening a session on the route's edge is tried again: the link is down, or (when the request is
# being moved there) the edge is full for the moment; the route may also name another edge meanwhile.
RETRY_OPEN = (EdgeFailure.LINK_DOWN,)
RETRY_MOVE = (EdgeFailure.LINK_DOWN, EdgeFailure.BUSY)


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
    speculation_kept: int = 0  # psd rounds whose drafting ahead survived the verdict (the next block was ready)
    resumes: int = 0  # streams replaced after the link broke
    migrations: int = 0  # moves to another edge (a new association, or the old edge failed)
    edges: list[str] = field(default_factory=list)  # every edge the request used, in order
    bytes_up: int = 0
    bytes_down: int = 0

    def count_round(self, drafted: int, verdict: Verdict, seconds: float) -> None:
        """One verified block: ``drafted`` tokens sent, ``seconds`` from sending it to its verdict."""
        self.round_seconds.append(seconds)
        self.edge_verify_seconds.append(verdict.verify_seconds)
        self.rounds += 1
        self.drafted_sent += drafted
        self.accepted += verdict.accepted
        self.accepted_lengths.append(verdict.accepted)
        self.block_lengths.append(drafted)

    def count_bytes(self, stream: EdgeSession) -> None:
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


class _Placement:
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


def decode_edge_only(
    route: Route, prompt: Sequence[int], config: SamplingConfig, max_tokens: int,
    stop_ids: Sequence[int], fingerprint: str, sink: TokenSink | None = None, user: int | None = None,
) -> DecodeResult:
    """The edge decodes alone and streams tokens. A broken stream (LINK_DOWN) or a move to another edge
    continues as a new edge-only session whose prompt is the old prompt plus every token received: the edge closes
    an edge-only session with its stream, and a token is the device's once it arrived."""
    result = DecodeResult("edge-only", started=time.perf_counter())
    emitter = _Emitter(result, max_tokens, stop_ids, sink)

    def spec() -> SessionSpec:
        return SessionSpec(list(prompt) + result.token_ids, config, False, max_new_tokens=emitter.remaining,
                           stop_ids=tuple(stop_ids), tokenizer_fingerprint=fingerprint, user=user)

    place = _Placement(route, spec(), result)

    def restart() -> None:
        """Drop the stream (the edge closes its edge-only session) and go on from every token received."""
        place.session.cancel()
        result.count_bytes(place.session)
        place.session = place.reopen(spec())

    try:
        while True:
            if place.moved() and not emitter.done:
                restart()
                result.migrations += 1
            try:
                tokens = place.session.receive_tokens()
            except EdgeError as error:
                if error.kind is not EdgeFailure.LINK_DOWN:
                    raise
                if emitter.done:
                    break  # every token arrived; only the edge's `closed` was lost
                restart()
                result.resumes += 1
                continue
            if tokens is None:
                break
            emitter.emit(tokens)
    except BaseException:
        place.session.cancel()
        raise
    result.finished = time.perf_counter()
    result.count_bytes(place.session)
    return result


def decode_speculative(
    route: Route, draft: DraftEngine, prompt: Sequence[int], config: SamplingConfig, max_tokens: int,
    draft_length: int, parallel: bool, stop_ids: Sequence[int], sink: TokenSink | None = None,
    user: int | None = None,
) -> DecodeResult:
    """Each round drafts a block (``draft_length`` is the longest; the route may ask for shorter ones), sends it,
    drafts ahead while it is verified (``parallel``: psd), and commits the verdict.  Broken links and moves between
    edges are handled by ``_Placement`` without losing or repeating a committed token."""
    request = _SpeculativeRequest(route, draft, prompt, config, max_tokens, draft_length, parallel, stop_ids, sink,
                                  user)
    try:
        while not request.done:
            request.follow_route()
            block = request.draft_block()
            try:
                request.send(block)
                verdict = (request.draft_ahead(block) if parallel else None) or request.wait_verdict()
            except EdgeError as error:
                request.resume(error)
            else:
                request.commit(block, verdict)
        request.close()
    except BaseException:
        request.abandon()
        raise
    return request.finish()


class _SpeculativeRequest:
    """One request decoded speculatively: the tokens committed so far, the drafts made ahead of the edge, and where
    the request runs.  Each method is one step of ``decode_speculative``."""

    def __init__(self, route: Route, draft: DraftEngine, prompt: Sequence[int], config: SamplingConfig,
                 max_tokens: int, draft_length: int, parallel: bool, stop_ids: Sequence[int], sink: TokenSink | None,
                 user: int | None) -> None:
        self.route, self.draft, self.config, self.draft_length = route, draft, config, draft_length
        self.result = DecodeResult("psd" if parallel else "sd", started=time.perf_counter())
        self.emitter = _Emitter(self.result, max_tokens, stop_ids, sink)
        self.random = PositionRandom(config.seed, PositionRandom.DEVICE)
        self.committed = list(prompt)
        self.ahead: list[DraftToken] = []  # drafted past the block in flight, assuming it is fully accepted
        self.spec = SessionSpec(list(prompt), config, True, draft_length=draft_length, max_new_tokens=max_tokens,
                                stop_ids=tuple(stop_ids), tokenizer_fingerprint=draft.tokenizer_fingerprint, user=user)
        self.place = _Placement(route, self.spec, self.result)
        self.result.session_id = self.place.session.id
        self.sent_at = 0.0  # when the block in flight was sent

    @property
    def done(self) -> bool:
        return self.emitter.done

    def follow_route(self) -> None:
        """Between rounds (the last block got its verdict): move to the edge the route names, if it changed."""
        if self.place.moved():
            self.place.move(self.committed, self.spec)

    def draft_block(self) -> list[DraftToken]:
        """The round's block: the drafts made ahead that fit, then drafted on from there."""
        # Each round emits accepted + 1 tokens: a block longer than remaining - 1 would be drafted in vain.
        length = max(1, min(self.route.draft_length(self.draft_length), self.emitter.remaining - 1))
        block = self.ahead[:length]
        self.result.draft_wasted_tokens += len(self.ahead) - len(block)
        self.ahead = []
        while len(block) < length:
            block.append(self._draft(self.committed + _ids(block), overlapped=False))
        return block

    def send(self, block: list[DraftToken]) -> None:
        """The block goes to the edge at the first uncommitted position (with its distributions when sampling)."""
        ids = _ids(block)
        self.sent_at = time.perf_counter()
        self.place.session.send_block(len(self.committed), ids, None if self.config.greedy else [t.dist for t in block])

    def draft_ahead(self, block: list[DraftToken]) -> Verdict | None:
        """psd: while the block is verified, draft on as if it were fully accepted, one token at a time, polling for
        the verdict in between; the verdict when it came meanwhile, else None."""
        context = self.committed + _ids(block)
        # The guessed bonus token and a block of this round's length: drafting further would only make the device
        # finish a token after the verdict came (a forward pass is not stopped).
        while len(self.ahead) <= len(block):
            verdict = self.place.session.poll()
            if verdict is not None:
                return verdict
            self.ahead.append(self._draft(context + _ids(self.ahead), overlapped=True))
        return None

    def wait_verdict(self) -> Verdict:
        return self.place.wait_verdict()

    def commit(self, block: list[DraftToken], verdict: Verdict) -> None:
        """The accepted drafts and the edge's next token are committed and emitted.  The drafts made ahead stay only
        when the whole block was accepted and the bonus token is the one they assumed."""
        self.result.count_round(len(block), verdict, time.perf_counter() - self.sent_at)
        self._commit_tokens(_ids(block)[:verdict.accepted] + [verdict.next_token])
        self._report()
        if verdict.accepted == len(block) and self.ahead and self.ahead[0].token_id == verdict.next_token:
            self.ahead = self.ahead[1:]  # the guess of the bonus token was right: keep drafting from there
            self.result.speculation_kept += 1
        else:
            self._drop_ahead()

    def resume(self, error: EdgeError) -> None:
        """After a broken link: a new stream (or a new session, on another edge if the route moved), the verdicts
        that never reached the device committed from the edge's record, and the drafts made ahead dropped (they
        assumed a verdict the device has not seen).  Any other failure ends the request."""
        if error.kind is not EdgeFailure.LINK_DOWN:
            raise error
        self._commit_tokens(self.place.recover(self.committed, self.spec))
        self._drop_ahead()

    def close(self) -> None:
        """Every token is the device's by now: closing is a courtesy to the edge (which otherwise reaps the session at
        its idle timeout), so a dead or silent edge must not fail or hold a finished request."""
        try:
            self.place.session.close(timeout=CLOSE_TIMEOUT_S * self.route.time_stretch)
        except EdgeError:
            self.place.session.cancel()

    def abandon(self) -> None:
        self.place.session.cancel()

    def finish(self) -> DecodeResult:
        self.result.finished = time.perf_counter()
        self.result.count_bytes(self.place.session)
        return self.result

    def _draft(self, context: list[int], overlapped: bool) -> DraftToken:
        token = draft_token(self.draft, context, self.config, self.random)
        self.result.draft_seconds += token.seconds
        if overlapped:
            self.result.draft_overlapped_seconds += token.seconds
        return token

    def _commit_tokens(self, tokens: list[int]) -> None:
        self.committed.extend(tokens)
        self.emitter.emit(tokens)

    def _drop_ahead(self) -> None:
        self.result.draft_wasted_tokens += len(self.ahead)
        self.ahead = []

    def _report(self) -> None:
        """How this device fares, for the route (a controller allocates by it)."""
        result = self.result
        drafted = result.drafted_sent + result.draft_wasted_tokens
        rounds = result.round_seconds[-8:]  # the recent rounds: the link and the edge's load change
        self.route.report(DeviceStats(result.draft_seconds / drafted if drafted else 0.0,
                                      result.acceptance_rate or 0.0, 0 if self.done else self.emitter.remaining,
                                      sum(rounds) / len(rounds) if rounds else 0.0))


def _ids(tokens: list[DraftToken]) -> list[int]:
    return [t.token_id for t in tokens]


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
        "migrations": result.migrations,
        "edges": result.edges,
    }
