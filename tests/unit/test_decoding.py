"""The speculative decoding loop against an in-memory edge (no process, no socket): whatever breaks on the way —
a stream, a session, the route — the device emits exactly the target's greedy answer, and acts on the failure's
kind as the seam (edge_handle.py) defines it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pytest

from device_client.decoding import decode_speculative
from device_client.draft import DraftEngine
from device_client.edge_handle import EdgeError, EdgeFailure, EdgeHandle, EdgeSession, SessionSpec, Verdict
from device_client.routing import DeviceStats, FixedRoute, Route
from device_client.speculation import PsdVariant
from tandem.sampling import SamplingConfig, SparseDist

VOCAB = 64
PROMPT = [3, 1, 4, 1, 5]
TOKENS = 40


def target(context: Sequence[int]) -> int:
    """The target's greedy choice after ``context``."""
    return (sum(token * (i + 2) for i, token in enumerate(context[-3:])) * 37 + len(context) * 11) % VOCAB


def greedy_answer(prompt: list[int], tokens: int) -> list[int]:
    context = list(prompt)
    for _ in range(tokens):
        context.append(target(context))
    return context[len(prompt):]


class Draft(DraftEngine):
    """Agrees with the target at about three positions in four; where it does not, the target's token is its
    runner-up (what branch-aware drafting guesses)."""

    vocab_size = VOCAB
    tokenizer_fingerprint = "fake"
    stop_ids: list[int] = []

    def encode_chat(self, user_message: str) -> list[int]:
        raise NotImplementedError

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, token_ids: Sequence[int]) -> bytes:
        raise NotImplementedError

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        agrees = (len(context) * 5 + sum(context)) % 4 != 0
        logits = np.zeros(VOCAB)
        logits[target(context)] = 5.0 if agrees else 4.0
        if not agrees:
            logits[(target(context) + 1) % VOCAB] = 5.0
        return logits


@dataclass
class Faults:
    """Scripted failures, by the edge's count of blocks (from 1) and of attaches."""

    break_after: set[int] = field(default_factory=set)  # the block is verified, its verdict lost with the stream
    refuse: set[int] = field(default_factory=set)  # the block is refused (REFUSED)
    gone_on_attach: set[int] = field(default_factory=set)  # the attach finds no session (SESSION_GONE)
    verdict_after_polls: int = 2  # a verdict is in flight while the device polls this many times


@dataclass
class _Held:
    prompt: list[int]
    tokens: list[int]


class Edge(EdgeHandle):
    def __init__(self, name: str, faults: Faults | None = None) -> None:
        self.name = name
        self.faults = faults or Faults()
        self.sessions: dict[str, _Held] = {}
        self.opened: list[list[int]] = []  # the prompt of every session opened here
        self.sent: list[tuple[int, int]] = []  # (position, length) of every block sent here
        self.blocks = itertools.count(1)
        self.attaches = itertools.count(1)

    def info(self):
        raise NotImplementedError

    def open(self, spec: SessionSpec, within_s: float) -> EdgeSession:
        session_id = f"{self.name}-{len(self.opened)}"
        self.opened.append(list(spec.prompt))
        self.sessions[session_id] = _Held(list(spec.prompt), list(spec.prompt))
        return Stream(self, session_id)

    def attach(self, session_id: str, within_s: float) -> EdgeSession:
        if next(self.attaches) in self.faults.gone_on_attach:
            raise EdgeError(EdgeFailure.SESSION_GONE, f"no session {session_id}")
        return Stream(self, session_id)

    def close(self) -> None: ...


class Stream(EdgeSession):
    bytes_up = bytes_down = 0

    def __init__(self, edge: Edge, session_id: str) -> None:
        self.edge, self.id = edge, session_id
        held = edge.sessions[session_id]
        self.committed = held.tokens[len(held.prompt):]
        self.verdict: Verdict | None = None
        self.polls_left = 0
        self.failure: EdgeError | None = None

    def send_block(self, position: int, tokens: list[int], dists: list[SparseDist] | None) -> None:
        held = self.edge.sessions[self.id]
        assert position == len(held.tokens), "blocks must follow the last verdict"
        self.edge.sent.append((position, len(tokens)))
        number = next(self.edge.blocks)
        if number in self.edge.faults.refuse:
            self.failure = EdgeError(EdgeFailure.REFUSED, "a bad block")
            return
        accepted = 0
        while accepted < len(tokens) and tokens[accepted] == target(held.tokens + tokens[:accepted]):
            accepted += 1
        new = tokens[:accepted] + [target(held.tokens + tokens[:accepted])]
        held.tokens += new  # committed on the edge, whether or not the verdict arrives
        self.verdict = Verdict(position, accepted, new[-1], 0.0, 0.0)
        self.polls_left = self.edge.faults.verdict_after_polls
        if number in self.edge.faults.break_after:
            self.failure = EdgeError(EdgeFailure.LINK_DOWN, "the stream broke")

    def poll(self) -> Verdict | None:
        if self.failure:
            raise self.failure
        if self.polls_left:
            self.polls_left -= 1
            return None
        return self.receive_verdict()

    def receive_verdict(self, timeout: float | None = None) -> Verdict:
        if self.failure:
            raise self.failure
        verdict, self.verdict = self.verdict, None
        assert verdict is not None, "no block in flight"
        return verdict

    def receive_tokens(self) -> list[int] | None:
        raise NotImplementedError

    def close(self, timeout: float | None = None) -> None: ...

    def cancel(self) -> None: ...


class Moving(Route):
    """Names the next edge every ``every`` rounds (a controller reassigning the user)."""

    may_change = True

    def __init__(self, edges: list[Edge], every: int) -> None:
        self.edges, self.every, self.rounds = edges, every, 0

    def current(self) -> EdgeHandle:
        return self.edges[self.rounds // self.every % len(self.edges)]

    def report(self, stats: DeviceStats) -> None:
        self.rounds += 1


VARIANTS = ("post", "pre", "branch", "adaptive", "pre+branch+adaptive")
MODES = [(False, "post")] + [(True, variant) for variant in VARIANTS]  # sd, and psd with every variant


def decode(route: Route, parallel: bool, draft_length: int = 4, tokens: int = TOKENS, variant: str = "post"):
    return decode_speculative(route, Draft(), PROMPT, SamplingConfig(), tokens, draft_length, parallel, stop_ids=(),
                              variant=PsdVariant.parse(variant))


@pytest.mark.parametrize("parallel,variant", MODES)
@pytest.mark.parametrize("draft_length", [1, 3, 6])
def test_the_answer_is_the_targets(parallel, variant, draft_length):
    result = decode(FixedRoute(Edge("e0", Faults(verdict_after_polls=3))), parallel, draft_length, variant=variant)
    assert result.token_ids == greedy_answer(PROMPT, TOKENS)
    assert result.drafted_sent == sum(result.block_lengths) and result.accepted == sum(result.accepted_lengths)
    assert result.resumes == result.migrations == 0 and result.edges == ["e0"]
    assert max(result.block_lengths) <= draft_length
    assert len(result.round_timings) == result.rounds and result.efficiency is not None
    assert abs(sum(result.time_by_part().values()) - result.elapsed) < 1e-9


def test_drafting_ahead_is_kept_when_the_guess_was_right():
    result = decode(FixedRoute(Edge("e0", Faults(verdict_after_polls=10))), parallel=True)
    assert result.speculation_kept > 0 and result.draft_overlapped_seconds > 0
    assert decode(FixedRoute(Edge("e0")), parallel=False).speculation_kept == 0


def test_branch_aware_drafting_bets_on_the_likelier_correction_and_keeps_it():
    """Where this draft is unsure, its runner-up is the target's token: betting on that rejection survives more
    often than betting on a full accept."""
    slow = Faults(verdict_after_polls=10)
    post = decode(FixedRoute(Edge("e0", slow)), parallel=True)
    branch = decode(FixedRoute(Edge("e0", slow)), parallel=True, variant="branch")
    assert branch.token_ids == post.token_ids == greedy_answer(PROMPT, TOKENS)
    assert branch.speculation_kept / branch.rounds > post.speculation_kept / post.rounds


@pytest.mark.parametrize("variant", VARIANTS)
def test_sampled_blocks_follow_the_verdicts_not_the_timing(variant):
    """Where a sampled answer's blocks begin and end decides which sample a seed gives: a fast and a slow edge
    must see the same blocks, so that a seed gives the same answer on every run."""
    sampled = SamplingConfig(temperature=0.8, top_k=8, seed=3)

    def blocks(faults: Faults) -> list[tuple[int, int]]:
        edge = Edge("e0", faults)
        decode_speculative(FixedRoute(edge), Draft(), PROMPT, sampled, TOKENS, 4, True, stop_ids=(),
                           variant=PsdVariant.parse(variant))
        return edge.sent

    undisturbed = blocks(Faults(verdict_after_polls=0))
    assert blocks(Faults(verdict_after_polls=10)) == undisturbed
    # A verdict lost with the stream is read back from the edge's record: the next block is the same.
    assert blocks(Faults(verdict_after_polls=0, break_after={2, 5})) == undisturbed


def test_pre_verify_sends_a_single_token_when_the_drafts_ahead_failed():
    result = decode(FixedRoute(Edge("e0", Faults(verdict_after_polls=0))), parallel=True, variant="pre")
    assert result.block_lengths == [1] * result.rounds  # the verdict always came before anything was drafted ahead
    assert result.token_ids == greedy_answer(PROMPT, TOKENS)


@pytest.mark.parametrize("parallel,variant", MODES)
def test_a_broken_stream_is_attached_again_and_the_lost_verdicts_read_back(parallel, variant):
    edge = Edge("e0", Faults(break_after={2, 5, 6}))
    result = decode(FixedRoute(edge), parallel, variant=variant)
    assert result.token_ids == greedy_answer(PROMPT, TOKENS)
    assert result.resumes == 3 and result.migrations == 0 and len(edge.opened) == 1


@pytest.mark.parametrize("parallel", [False, True])
def test_a_session_gone_on_attach_continues_as_a_new_session_from_the_committed_tokens(parallel):
    edge = Edge("e0", Faults(break_after={3}, gone_on_attach={1}))
    result = decode(FixedRoute(edge), parallel)
    assert result.token_ids == greedy_answer(PROMPT, TOKENS)
    assert len(edge.opened) == 2 and edge.opened[1] == PROMPT + result.token_ids[:len(edge.opened[1]) - len(PROMPT)]


@pytest.mark.parametrize("parallel", [False, True])
def test_a_refused_block_ends_the_request(parallel):
    with pytest.raises(EdgeError) as refused:
        decode(FixedRoute(Edge("e0", Faults(refuse={3}))), parallel)
    assert refused.value.kind is EdgeFailure.REFUSED


@pytest.mark.parametrize("parallel", [False, True])
def test_a_moving_route_moves_the_request_without_changing_the_answer(parallel):
    edges = [Edge("e0"), Edge("e1", Faults(break_after={2})), Edge("e2")]
    result = decode(Moving(edges, every=3), parallel)
    assert result.token_ids == greedy_answer(PROMPT, TOKENS)
    assert result.migrations >= 3 and result.edges[:4] == ["e0", "e1", "e2", "e0"]
