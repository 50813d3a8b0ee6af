"""The device's decoding loops: speculative (sequential ``sd`` or parallel ``psd``) and ``edge-only``.

Parallel speculative decoding (PEARL's post-verify, SpecEdge's proactive drafting): while block b is in flight,
the device keeps drafting from the outcome of b it bets on (a full accept, unless the variant says otherwise:
device_client/speculation.py), one token at a time, polling for the verdict in between.  If the verdict is that
outcome, the drafts made ahead are already the start of block b+1; otherwise they are dropped and drafting restarts
from the edge's token (the draft's KV cache rolls back for free).  Every emitted token comes from the edge's
verdicts, so all modes and variants emit what the target's verification decides: speed never changes the answer.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from device_client.draft import DraftEngine, DraftToken, draft_token
from device_client.edge_handle import EdgeError, EdgeFailure, SessionSpec, Verdict
from device_client.placement import CLOSE_TIMEOUT_S, Placement
from device_client.efficiency import RoundTiming
from device_client.result import DecodeResult
from device_client.routing import DeviceStats, Route
from device_client.speculation import (BETS, Bet, PsdVariant, adaptive_length, full_accept, ranked_branches,
                                       speculation_kept, step_pays)
from tandem.sampling import PositionRandom, SamplingConfig

MODES = ("psd", "sd", "edge-only")
TokenSink = Callable[[list[int]], None]


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

    place = Placement(route, spec(), result)

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
    user: int | None = None, variant: PsdVariant = PsdVariant(),
) -> DecodeResult:
    """Each round drafts a block (``draft_length`` is the longest; the route may ask for shorter ones), sends it,
    drafts ahead while it is verified (``parallel``: psd, as ``variant`` says), and commits the verdict.  Broken
    links and moves between edges are handled by ``Placement`` without losing or repeating a committed token."""
    request = _SpeculativeRequest(route, draft, prompt, config, max_tokens, draft_length, parallel, stop_ids, sink,
                                  user, variant)
    try:
        while not request.done:
            request.follow_route()
            block = request.draft_block()
            try:
                request.send(block)
                verdict = (request.draft_ahead(block) if parallel else None) or request.wait_verdict()
            except EdgeError as error:
                request.resume(error, block)
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
                 user: int | None, variant: PsdVariant) -> None:
        self.route, self.draft, self.config, self.draft_length = route, draft, config, draft_length
        self.variant = variant if parallel else PsdVariant()
        self.result = DecodeResult("psd" if parallel else "sd", psd_variant=variant.name if parallel else None,
                                   started=time.perf_counter())
        self.emitter = _Emitter(self.result, max_tokens, stop_ids, sink)
        self.random = PositionRandom(config.seed, PositionRandom.DEVICE)
        self.committed = list(prompt)
        self.bets: list[Bet] = []  # drafts made ahead of the block in flight, per outcome of it bet on
        self.ahead: list[DraftToken] = []  # the drafts of the bet that came true: the next block's head
        self.spec = SessionSpec(list(prompt), config, True, draft_length=draft_length, max_new_tokens=max_tokens,
                                stop_ids=tuple(stop_ids), tokenizer_fingerprint=draft.tokenizer_fingerprint, user=user)
        self.place = Placement(route, self.spec, self.result)
        self.result.session_id = self.place.session.id
        self.sent_at = 0.0  # when the block in flight was sent
        self.block_draft_s = 0.0  # drafting of the block in flight while nothing else was in flight
        self.full_accept_last = False  # whether the last verdict accepted its whole block

    @property
    def done(self) -> bool:
        return self.emitter.done

    def follow_route(self) -> None:
        """Between rounds (the last block got its verdict): move to the edge the route names, if it changed."""
        if self.place.moved():
            self.place.move(self.committed, self.spec)

    def draft_block(self) -> list[DraftToken]:
        """The round's block: the drafts made ahead that fit, then drafted on from there."""
        length = self._block_length()
        block = self.ahead[:length]
        self.result.draft_wasted_tokens += len(self.ahead) - len(block)
        self.ahead = []
        started = time.perf_counter()
        while len(block) < length:
            block.append(self._draft(self.committed + _ids(block), overlapped=False))
        self.block_draft_s = time.perf_counter() - started
        return block

    def _longest_block(self) -> int:
        """The longest block worth drafting now: the route's length (the controller's for this user), adapted to
        what the rounds so far observed when the variant says so."""
        # Each round emits accepted + 1 tokens: a block longer than remaining - 1 would be drafted in vain.
        longest = max(1, min(self.route.draft_length(self.draft_length), self.emitter.remaining - 1))
        result = self.result
        if not self.variant.adaptive_length or not self.config.greedy or result.rounds < 2:
            return longest  # sampling: lengths from the verdicts only (see _block_length)
        alpha = result.per_token_acceptance
        return adaptive_length(alpha, result.recent_draft_token_s or 0.0, self._expected_round_trip(), longest) \
            if alpha is not None else longest

    def _expected_round_trip(self) -> float:
        """The recent rounds' mean time in flight (the link and the edge's load change)."""
        recent = self.result.round_timings[-8:]
        return sum(r.in_flight_s for r in recent) / len(recent)

    def _block_length(self) -> int:
        """Pre-verify: with no surviving drafts ahead the first token goes at once; with them, all of them go.
        When sampling, where the sample a seed gives depends on where blocks begin and end (a bonus token is drawn
        from p, a drafted one accepted or resampled), lengths follow the verdicts alone, never timing, so that a
        seed gives the same answer on every run: one token after a round not fully accepted, else the longest."""
        longest = self._longest_block()
        if not self.variant.pre_verify:
            return longest
        if not self.config.greedy:
            return longest if self.full_accept_last else 1
        return min(longest, max(1, len(self.ahead)))

    def send(self, block: list[DraftToken]) -> None:
        """The block goes to the edge at the first uncommitted position (with its distributions when sampling)."""
        ids = _ids(block)
        self.sent_at = time.perf_counter()
        self.place.session.send_block(len(self.committed), ids, None if self.config.greedy else [t.dist for t in block])

    def draft_ahead(self, block: list[DraftToken]) -> Verdict | None:
        """psd: while the block is verified, draft on from the outcomes bet on, one token at a time, polling for
        the verdict in between; the verdict when it came meanwhile, else None."""
        result = self.result
        alpha = result.per_token_acceptance or 0.5
        if self.variant.branch_aware:
            self.bets = [Bet(branch) for branch in ranked_branches(block, alpha, BETS)]
        else:
            self.bets = [Bet(full_accept(block, alpha))]
        # A block of the next round's length (after a full accept, plus the guess of the bonus token): drafting
        # further would only make the device finish a token after the verdict came (a forward pass is not stopped).
        next_length = self._longest_block() if self.variant.adaptive_length or self.variant.pre_verify else len(block)
        for rank, bet in enumerate(self.bets):
            guess = [] if bet.branch.correction is None else [bet.branch.correction]
            context = self.committed + _ids(block[:bet.branch.accepted]) + guess
            while len(bet.drafts) < next_length + (0 if guess else 1):
                verdict = self.place.session.poll()
                if verdict is not None:
                    return verdict
                # A later bet is drafted only when the step pays (in time the device would otherwise wait, in
                # practice); the first, with the adaptive variant too.
                steps = 2 if bet.branch.correction is None and not bet.drafts else 1  # the bonus guess gains nothing
                if (rank > 0 or self.variant.adaptive_length) and not self._step_pays(bet.branch.chance, steps):
                    return None
                bet.drafts.append(self._draft(context + _ids(bet.drafts), overlapped=True))
        return None

    def _step_pays(self, chance: float, steps: int) -> bool:
        """``step_pays`` with the verdict expected after the recent rounds' mean time in flight."""
        step = self.result.recent_draft_token_s
        if not self.result.round_timings or step is None:
            return True  # nothing observed yet: draft ahead
        return step_pays(chance, step, self.sent_at + self._expected_round_trip() - time.perf_counter(), steps)

    def wait_verdict(self) -> Verdict:
        return self.place.wait_verdict()

    def commit(self, block: list[DraftToken], verdict: Verdict) -> None:
        """The accepted drafts and the edge's next token are committed and emitted.  The drafts made ahead stay only
        when the verdict is the outcome they bet on (accepted length and the edge's token)."""
        taken = time.perf_counter()
        received = verdict.received_at or taken
        self.result.count_round(RoundTiming(len(block), verdict.accepted, self.block_draft_s, received - self.sent_at,
                                            verdict.verify_seconds, verdict.queue_seconds, taken - received))
        self._commit_tokens(_ids(block)[:verdict.accepted] + [verdict.next_token])
        self.full_accept_last = verdict.accepted == len(block)
        self._report()
        for bet in self.bets:
            drop = speculation_kept(bet.branch, verdict.accepted, verdict.next_token, bet.drafts)
            if drop is not None:  # this bet came true: keep drafting from there (without the guess, if drafted)
                self.ahead, bet.drafts = bet.drafts[drop:], []
                self.result.speculation_kept += 1
                break
        self._drop_bets()

    def resume(self, error: EdgeError, block: list[DraftToken]) -> None:
        """After a broken link: a new stream (or a new session, on another edge if the route moved), the verdicts
        that never reached the device committed from the edge's record, and the drafts made ahead dropped (they
        assumed a verdict the device has not seen).  Any other failure ends the request."""
        if error.kind is not EdgeFailure.LINK_DOWN:
            raise error
        recovered = self.place.recover(self.committed, self.spec)
        if recovered:  # the verdict of ``block`` (one block is in flight at a time): was it a full accept?
            self.full_accept_last = len(recovered) == len(block) + 1
        self._commit_tokens(recovered)
        self._drop_bets()
        self.result.draft_wasted_tokens += len(self.ahead)
        self.ahead = []

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
        self.result.draft_step_seconds.append(token.seconds)
        if overlapped:
            self.result.draft_overlapped_seconds += token.seconds
        return token

    def _commit_tokens(self, tokens: list[int]) -> None:
        self.committed.extend(tokens)
        self.emitter.emit(tokens)

    def _drop_bets(self) -> None:
        self.result.draft_wasted_tokens += sum(len(bet.drafts) for bet in self.bets)
        self.bets = []

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
