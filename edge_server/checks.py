"""Validation of device messages against the edge's limits, translated into domain values.

Everything here runs before any state changes, so a bad message ends only its own stream (with a status that says
what was wrong) and never alters a session's committed tokens.  Cheap checks (sizes, counts) come before those that
pass over every token, so a request that will be refused costs little.  ``max_request_tokens`` bounds a Score (one
exclusive engine step).  A prompt is bounded by the context only: a request moved from another edge arrives with
every token committed so far as its prompt; its prefill is charged to its flow instead (scheduler.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_server.engines.base import EngineInfo
from edge_server.sessions import Session, SessionError, SessionRequest
from tandem.sampling import SamplingConfig, SparseDist
from tandem.wire.v1 import edge_pb2 as pb

PROBABILITY_TOLERANCE = 1e-3  # how far a draft distribution's mass may stray from 1 (float32 on the wire)
MAX_SCORE_TOP_N = 64
MAX_STOP_IDS = 256


@dataclass(frozen=True)
class Block:
    position: int
    tokens: list[int]
    dists: list[SparseDist]  # one per token when sampling, empty when greedy


@dataclass(frozen=True)
class ScoreJob:
    tokens: list[int]
    start: int
    top_n: int
    user: int | None


def invalid(message: str) -> SessionError:
    return SessionError("INVALID_ARGUMENT", message)


def check_tokens(tokens: list[int], what: str, info: EngineInfo) -> None:
    bad = [t for t in tokens if t >= info.vocab_size]
    if bad:
        raise invalid(f"{what}: token id {bad[0]} is outside the vocabulary of {info.vocab_size}")


def check_size(count: int, what: str, limit: int) -> None:
    if count > limit:
        raise invalid(f"{what} holds {count} tokens; this edge takes at most {limit} per request")


def check_open(request: pb.Open, info: EngineInfo, max_draft_length: int) -> SessionRequest:
    size = len(request.prompt_token_ids)
    if not size:
        raise invalid("prompt_token_ids is empty")
    if size >= info.max_context:
        raise invalid(f"prompt of {size} tokens leaves no room in the edge's context of {info.max_context} tokens")
    if len(request.stop_token_ids) > MAX_STOP_IDS:
        raise invalid(f"at most {MAX_STOP_IDS} stop_token_ids, got {len(request.stop_token_ids)}")
    prompt = list(request.prompt_token_ids)
    check_tokens(prompt, "prompt_token_ids", info)
    if request.tokenizer_fingerprint and request.tokenizer_fingerprint != info.tokenizer_fingerprint:
        raise SessionError("FAILED_PRECONDITION",
                           "the device's tokenizer differs from the edge's target model; drafts would be meaningless")
    sampling = SamplingConfig(temperature=request.sampling.temperature, top_k=request.sampling.top_k,
                              top_p=request.sampling.top_p, seed=request.sampling.seed)
    try:
        sampling.validate(info.vocab_size, info.max_top_n)
    except ValueError as error:
        raise invalid(str(error)) from None
    if request.mode == pb.MODE_SPECULATIVE:
        if not 1 <= request.draft_length <= max_draft_length:
            raise invalid(f"draft_length must lie in [1, {max_draft_length}], got {request.draft_length}")
    elif request.mode == pb.MODE_EDGE_ONLY:
        if request.max_new_tokens < 1:
            raise invalid("max_new_tokens must be at least 1 in edge-only mode")
        if len(prompt) + request.max_new_tokens > info.max_context:
            raise invalid(f"prompt ({len(prompt)}) + max_new_tokens ({request.max_new_tokens}) exceeds the edge's "
                          f"context of {info.max_context} tokens")
        check_tokens(list(request.stop_token_ids), "stop_token_ids", info)
    else:
        raise invalid("mode must be MODE_SPECULATIVE or MODE_EDGE_ONLY")
    return SessionRequest(prompt, sampling, request.mode == pb.MODE_SPECULATIVE, request.draft_length,
                          request.max_new_tokens, list(request.stop_token_ids),
                          request.user if request.HasField("user") else None)


def check_block(session: Session, block: pb.DraftBlock, info: EngineInfo) -> Block:
    if block.position != len(session.tokens):
        raise SessionError("FAILED_PRECONDITION",
                           f"block extends position {block.position} but the session has {len(session.tokens)} "
                           f"committed tokens (blocks must follow the last verdict)")
    size = len(block.token_ids)
    if not size:
        raise invalid("empty draft block")
    if size > session.draft_length:
        raise invalid(f"block of {size} tokens exceeds the session's draft_length {session.draft_length}")
    if not session.sampling.greedy and len(block.draft_distributions) != size:
        raise invalid(f"sampling needs one draft distribution per drafted token: got "
                      f"{len(block.draft_distributions)} for {size} tokens")
    draft = list(block.token_ids)
    check_tokens(draft, "token_ids", info)
    if len(session.tokens) + len(draft) + 1 > info.max_context:
        raise SessionError("OUT_OF_RANGE",
                           f"block would take the session past the edge's context of {info.max_context} tokens")
    if session.sampling.greedy:
        return Block(block.position, draft, [])
    support_limit = session.sampling.top_k or info.vocab_size
    for i, dist in enumerate(block.draft_distributions):
        where = f"draft distribution {i}"
        if len(dist.token_ids) == 0 or len(dist.token_ids) != len(dist.probs):
            raise invalid(f"{where}: needs as many probs as token_ids (got {len(dist.probs)} and "
                          f"{len(dist.token_ids)})")
        if len(dist.token_ids) > support_limit:
            raise invalid(f"{where}: support of {len(dist.token_ids)} tokens exceeds top_k {support_limit}")
    dists = []
    for i, (token, dist) in enumerate(zip(draft, block.draft_distributions)):
        ids = np.asarray(dist.token_ids, dtype=np.int64)
        with np.errstate(invalid="ignore"):  # a signalling NaN is refused below, without a warning in the log
            probs = np.asarray(dist.probs, dtype=np.float64)
        where = f"draft distribution {i}"
        check_tokens(ids.tolist(), where, info)
        if np.unique(ids).size != ids.size:
            raise invalid(f"{where}: repeated token ids")
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise invalid(f"{where}: probabilities must be finite and non-negative")
        if abs(probs.sum() - 1.0) > PROBABILITY_TOLERANCE:
            raise invalid(f"{where}: probabilities sum to {probs.sum():.6f}, not 1")
        sparse = SparseDist(ids, probs / probs.sum())
        if sparse.prob_of(token) <= 0:
            raise invalid(f"{where}: drafted token {token} has no probability under it")
        dists.append(sparse)
    return Block(block.position, draft, dists)


def check_score(request: pb.ScoreRequest, info: EngineInfo, max_request_tokens: int) -> ScoreJob:
    size = len(request.token_ids)
    if size < 2 or size > info.max_context:
        raise invalid(f"token_ids must hold 2..{info.max_context} tokens, got {size}")
    check_size(size, "token_ids", max_request_tokens)
    if not 1 <= request.start < size:
        raise invalid(f"start must lie in [1, {size - 1}], got {request.start}")
    top_n_limit = min(MAX_SCORE_TOP_N, info.max_top_n)
    if not 2 <= request.top_n <= top_n_limit:
        raise invalid(f"top_n must lie in [2, {top_n_limit}], got {request.top_n}")
    tokens = list(request.token_ids)
    check_tokens(tokens, "token_ids", info)
    return ScoreJob(tokens, request.start, request.top_n, request.user if request.HasField("user") else None)
