"""The EdgeService gRPC servicer: validates every device message, drives sessions, verifies blocks.

Validation happens before any state changes, so a bad message ends only its own stream (with a status that says
what was wrong) and never alters a session's committed tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import grpc
import numpy as np

from edge_server.audit import VerificationLogWriter
from edge_server.batcher import VerifyBatcher
from edge_server.engines.base import ScoreRequest, TargetEngine
from edge_server.metrics import EdgeMetrics
from edge_server.sessions import Session, SessionError, SessionRegistry
from tandem.sampling import SamplingConfig, SparseDist, verify_block
from tandem.verification_log import BlockRecord
from tandem.wire.v1 import edge_pb2 as pb
from tandem.wire.v1 import edge_pb2_grpc

log = logging.getLogger(__name__)
PROTOCOL_VERSION = "tandem.wire.v1"
PROBABILITY_TOLERANCE = 1e-3  # how far a draft distribution's mass may stray from 1 (float32 on the wire)
MAX_SCORE_TOP_N = 64


def _invalid(message: str) -> SessionError:
    return SessionError("INVALID_ARGUMENT", message)


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    def __init__(
        self,
        engine: TargetEngine,
        registry: SessionRegistry,
        batcher: VerifyBatcher,
        metrics: EdgeMetrics,
        max_draft_length: int,
        audit: VerificationLogWriter | None = None,
    ) -> None:
        self._engine = engine
        self._registry = registry
        self._batcher = batcher
        self._metrics = metrics
        self._max_draft_length = max_draft_length
        self._audit = audit

    @property
    def _info(self):
        return self._engine.info

    async def GetInfo(self, request: pb.InfoRequest, context) -> pb.EdgeInfo:
        info = self._info
        return pb.EdgeInfo(
            engine=info.engine,
            model=info.model,
            vocab_size=info.vocab_size,
            tokenizer_fingerprint=info.tokenizer_fingerprint,
            max_context=info.max_context,
            max_draft_length=self._max_draft_length,
            max_top_k=info.max_top_n,
            max_sessions=self._registry.max_sessions,
            protocol_version=PROTOCOL_VERSION,
        )

    async def Score(self, request: pb.ScoreRequest, context) -> pb.ScoreReply:
        try:
            tokens = list(request.token_ids)
            self._check_tokens(tokens, "token_ids")
            if len(tokens) < 2 or len(tokens) > self._info.max_context:
                raise _invalid(f"token_ids must hold 2..{self._info.max_context} tokens, got {len(tokens)}")
            if not 1 <= request.start < len(tokens):
                raise _invalid(f"start must lie in [1, {len(tokens) - 1}], got {request.start}")
            top_n_limit = min(MAX_SCORE_TOP_N, self._info.max_top_n)
            if not 2 <= request.top_n <= top_n_limit:
                raise _invalid(f"top_n must lie in [2, {top_n_limit}], got {request.top_n}")
        except SessionError as error:
            await self._abort(context, error)
        scored = await self._engine.teacher_force(tokens, request.start, request.top_n)
        return pb.ScoreReply(
            positions=[
                pb.PositionScore(
                    token_id=p.token_id,
                    token_logprob=p.token_logprob,
                    top_ids=p.candidates.token_ids.tolist(),
                    top_logprobs=p.candidates.logprobs.tolist(),
                )
                for p in scored
            ]
        )

    async def Decode(self, request_iterator, context) -> AsyncIterator[pb.EdgeMessage]:
        session: Session | None = None
        messages = request_iterator.__aiter__()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(messages.__anext__(), timeout=self._registry.idle_timeout)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    if session is not None:
                        self._registry.close(session)
                        session = None
                    raise SessionError(
                        "DEADLINE_EXCEEDED", f"no message for {self._registry.idle_timeout:g} s; session closed"
                    ) from None
                self._metrics.bytes_received.inc(message.ByteSize())
                kind = message.WhichOneof("kind")
                if session is None:
                    if kind == "open":
                        session = self._open(message.open)
                        reply = pb.EdgeMessage(
                            opened=pb.SessionOpened(session_id=session.id, committed_length=len(session.tokens))
                        )
                        yield self._sent(reply)
                        if not session.speculative:
                            async for reply in self._decode_on_edge(session, message.open):
                                yield self._sent(reply)
                            return
                    elif kind == "attach":
                        session = self._registry.attach(message.attach.session_id)
                        yield self._sent(
                            pb.EdgeMessage(
                                opened=pb.SessionOpened(
                                    session_id=session.id,
                                    committed_length=len(session.tokens),
                                    committed_token_ids=session.tokens[session.prompt_length :],
                                )
                            )
                        )
                    else:
                        raise SessionError(
                            "FAILED_PRECONDITION", f"a stream must start with open or attach, got {kind or 'nothing'}"
                        )
                elif kind == "draft":
                    session.touch()
                    yield self._sent(await self._verify(session, message.draft))
                elif kind == "close":
                    self._registry.close(session)
                    yield self._sent(pb.EdgeMessage(closed=pb.Closed(committed_length=len(session.tokens))))
                    session = None
                    return
                else:
                    raise SessionError("FAILED_PRECONDITION", f"session {session.id} is already open; got {kind}")
        except SessionError as error:
            await self._abort(context, error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:  # an engine failure: the session keeps its committed tokens
            log.exception("decoding failed")
            await self._abort(context, SessionError("INTERNAL", f"the edge failed to verify: {error}"))
        finally:
            if session is not None:
                if session.speculative:
                    self._registry.detach(session)
                else:
                    self._registry.close(session)
            self._metrics.sessions_active.set(len(self._registry))

    def _open(self, request: pb.Open) -> Session:
        prompt = list(request.prompt_token_ids)
        info = self._info
        if not prompt:
            raise _invalid("prompt_token_ids is empty")
        self._check_tokens(prompt, "prompt_token_ids")
        if len(prompt) >= info.max_context:
            raise _invalid(
                f"prompt of {len(prompt)} tokens leaves no room in the edge's context of {info.max_context} tokens"
            )
        if request.tokenizer_fingerprint and request.tokenizer_fingerprint != info.tokenizer_fingerprint:
            raise SessionError(
                "FAILED_PRECONDITION",
                "the device's tokenizer differs from the edge's target model; drafts would be meaningless",
            )
        sampling = SamplingConfig(
            temperature=request.sampling.temperature,
            top_k=request.sampling.top_k,
            top_p=request.sampling.top_p,
            seed=request.sampling.seed,
        )
        try:
            sampling.validate(info.vocab_size, info.max_top_n)
        except ValueError as error:
            raise _invalid(str(error)) from None
        if request.mode == pb.MODE_SPECULATIVE:
            if not 1 <= request.draft_length <= self._max_draft_length:
                raise _invalid(f"draft_length must lie in [1, {self._max_draft_length}], got {request.draft_length}")
        elif request.mode == pb.MODE_EDGE_ONLY:
            if request.max_new_tokens < 1:
                raise _invalid("max_new_tokens must be at least 1 in edge-only mode")
            if len(prompt) + request.max_new_tokens > info.max_context:
                raise _invalid(
                    f"prompt ({len(prompt)}) + max_new_tokens ({request.max_new_tokens}) exceeds the edge's context "
                    f"of {info.max_context} tokens"
                )
            self._check_tokens(list(request.stop_token_ids), "stop_token_ids")
        else:
            raise _invalid("mode must be MODE_SPECULATIVE or MODE_EDGE_ONLY")
        session = self._registry.open(prompt, sampling, request.mode == pb.MODE_SPECULATIVE, request.draft_length)
        self._metrics.sessions_opened.labels("speculative" if session.speculative else "edge-only").inc()
        self._metrics.sessions_active.set(len(self._registry))
        return session

    async def _decode_on_edge(self, session: Session, request: pb.Open) -> AsyncIterator[pb.EdgeMessage]:
        async for tokens in self._engine.generate(
            session.tokens, session.sampling, request.max_new_tokens, list(request.stop_token_ids)
        ):
            session.tokens.extend(tokens)
            self._metrics.emitted_tokens.labels("edge-only").inc(len(tokens))
            yield pb.EdgeMessage(tokens=pb.Tokens(token_ids=tokens))
        self._registry.close(session)
        yield pb.EdgeMessage(closed=pb.Closed(committed_length=len(session.tokens)))

    async def _verify(self, session: Session, block: pb.DraftBlock) -> pb.EdgeMessage:
        arrived = time.perf_counter()
        draft = list(block.token_ids)
        dists = self._check_block(session, block, draft)
        top_n = session.sampling.candidates_needed(self._info.vocab_size)
        result = await self._batcher.score(ScoreRequest(session.tokens, draft, top_n))
        candidates = result.scored.candidates
        verdict = verify_block(draft, dists, candidates, session.sampling, len(session.tokens))
        if self._audit is not None:
            self._audit.write(BlockRecord.of(session.id, len(session.tokens), session.sampling, draft, dists,
                                             candidates, verdict, result.batch_size, result.scored.cached_tokens))
        # Commit only now, after everything that can fail.
        session.tokens.extend(draft[: verdict.accepted])
        session.tokens.append(verdict.next_token)
        elapsed = time.perf_counter() - arrived
        self._metrics.verify_seconds.observe(elapsed)
        self._metrics.queue_seconds.observe(result.queue_seconds)
        self._metrics.accepted_length.observe(verdict.accepted)
        self._metrics.drafted_tokens.inc(len(draft))
        self._metrics.accepted_tokens.inc(verdict.accepted)
        self._metrics.emitted_tokens.labels("speculative").inc(verdict.accepted + 1)
        return pb.EdgeMessage(
            verdict=pb.Verdict(
                position=block.position,
                accepted=verdict.accepted,
                next_token_id=verdict.next_token,
                verify_seconds=elapsed,
                queue_seconds=result.queue_seconds,
            )
        )

    def _check_block(self, session: Session, block: pb.DraftBlock, draft: list[int]) -> list[SparseDist]:
        if block.position != len(session.tokens):
            raise SessionError(
                "FAILED_PRECONDITION",
                f"block extends position {block.position} but the session has {len(session.tokens)} committed "
                f"tokens (blocks must follow the last verdict)",
            )
        if not draft:
            raise _invalid("empty draft block")
        if len(draft) > session.draft_length:
            raise _invalid(f"block of {len(draft)} tokens exceeds the session's draft_length {session.draft_length}")
        self._check_tokens(draft, "token_ids")
        if len(session.tokens) + len(draft) + 1 > self._info.max_context:
            raise SessionError(
                "OUT_OF_RANGE",
                f"block would take the session past the edge's context of {self._info.max_context} tokens",
            )
        if session.sampling.greedy:
            return []
        if len(block.draft_distributions) != len(draft):
            raise _invalid(
                f"sampling needs one draft distribution per drafted token: got {len(block.draft_distributions)} "
                f"for {len(draft)} tokens"
            )
        support_limit = session.sampling.top_k or self._info.vocab_size
        dists = []
        for i, (token, dist) in enumerate(zip(draft, block.draft_distributions)):
            ids = np.asarray(dist.token_ids, dtype=np.int64)
            probs = np.asarray(dist.probs, dtype=np.float64)
            where = f"draft distribution {i}"
            if ids.size == 0 or ids.size != probs.size:
                raise _invalid(f"{where}: needs as many probs as token_ids (got {probs.size} and {ids.size})")
            if ids.size > support_limit:
                raise _invalid(f"{where}: support of {ids.size} tokens exceeds top_k {support_limit}")
            self._check_tokens(ids.tolist(), where)
            if np.unique(ids).size != ids.size:
                raise _invalid(f"{where}: repeated token ids")
            if not np.all(np.isfinite(probs)) or np.any(probs < 0):
                raise _invalid(f"{where}: probabilities must be finite and non-negative")
            if abs(probs.sum() - 1.0) > PROBABILITY_TOLERANCE:
                raise _invalid(f"{where}: probabilities sum to {probs.sum():.6f}, not 1")
            sparse = SparseDist(ids, probs / probs.sum())
            if sparse.prob_of(token) <= 0:
                raise _invalid(f"{where}: drafted token {token} has no probability under it")
            dists.append(sparse)
        return dists

    def _check_tokens(self, tokens: list[int], what: str) -> None:
        vocab = self._info.vocab_size
        bad = [t for t in tokens if t >= vocab]
        if bad:
            raise _invalid(f"{what}: token id {bad[0]} is outside the vocabulary of {vocab}")

    def _sent(self, message: pb.EdgeMessage) -> pb.EdgeMessage:
        self._metrics.bytes_sent.inc(message.ByteSize())
        return message

    async def _abort(self, context, error: SessionError) -> None:
        self._metrics.errors.labels(error.code).inc()
        await context.abort(getattr(grpc.StatusCode, error.code), str(error))
