"""The EdgeService gRPC servicer: parses device messages, delegates, and maps errors to statuses.

Validation (checks.py), sessions (sessions.py), scheduling (scheduler.py) and commits (verification.py) live in
their own modules; this class only translates between the wire and them and drives a stream's state machine
(open or attach, then blocks, then close).
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc

from edge_server.checks import check_block, check_open, check_score
from edge_server.metrics import EdgeMetrics
from edge_server.sessions import Session, SessionError, SessionRegistry
from edge_server.verification import CommittedVerdict, Verifier
from tandem.wire.v1 import edge_pb2 as pb
from tandem.wire.v1 import edge_pb2_grpc

log = logging.getLogger(__name__)
PROTOCOL_VERSION = "tandem.wire.v1"


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    def __init__(self, verifier: Verifier, registry: SessionRegistry, metrics: EdgeMetrics, info_reply: pb.EdgeInfo,
                 max_draft_length: int) -> None:
        self._verifier = verifier
        self._registry = registry
        self._metrics = metrics
        self._info_reply = info_reply
        self._max_draft_length = max_draft_length

    @property
    def _info(self):
        return self._verifier.engine_info

    async def GetInfo(self, request: pb.InfoRequest, context) -> pb.EdgeInfo:
        return self._info_reply

    async def Score(self, request: pb.ScoreRequest, context) -> pb.ScoreReply:
        try:
            job = check_score(request, self._info)
        except SessionError as error:
            await self._abort(context, error)
        scored = await self._verifier.score(job)
        return pb.ScoreReply(positions=[
            pb.PositionScore(token_id=p.token_id, token_logprob=p.token_logprob,
                             top_ids=p.candidates.token_ids.tolist(), top_logprobs=p.candidates.logprobs.tolist())
            for p in scored])

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
                        request = check_open(message.open, self._info, self._max_draft_length)
                        session = self._registry.open(request)
                        mode = "speculative" if session.speculative else "edge-only"
                        self._metrics.sessions_opened.labels(mode).inc()
                        self._metrics.sessions_active.set(len(self._registry))
                        yield self._sent(pb.EdgeMessage(
                            opened=pb.SessionOpened(session_id=session.id, committed_length=len(session.tokens))))
                        if not session.speculative:
                            async for tokens in self._verifier.decode_on_edge(session, request):
                                yield self._sent(pb.EdgeMessage(tokens=pb.Tokens(token_ids=tokens)))
                            self._registry.close(session)
                            yield self._sent(pb.EdgeMessage(closed=pb.Closed(committed_length=len(session.tokens))))
                            return
                    elif kind == "attach":
                        session = self._registry.attach(message.attach.session_id)
                        yield self._sent(pb.EdgeMessage(opened=pb.SessionOpened(
                            session_id=session.id, committed_length=len(session.tokens),
                            committed_token_ids=session.tokens[session.prompt_length:])))
                    else:
                        raise SessionError(
                            "FAILED_PRECONDITION", f"a stream must start with open or attach, got {kind or 'nothing'}"
                        )
                elif kind == "draft":
                    session.touch()
                    verdict = await self._verifier.verify(session, check_block(session, message.draft, self._info))
                    yield self._sent(_verdict_message(verdict))
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

    def _sent(self, message: pb.EdgeMessage) -> pb.EdgeMessage:
        self._metrics.bytes_sent.inc(message.ByteSize())
        return message

    async def _abort(self, context, error: SessionError) -> None:
        self._metrics.errors.labels(error.code).inc()
        await context.abort(getattr(grpc.StatusCode, error.code), str(error))


def _verdict_message(verdict: CommittedVerdict) -> pb.EdgeMessage:
    return pb.EdgeMessage(verdict=pb.Verdict(
        position=verdict.position, accepted=verdict.accepted, next_token_id=verdict.next_token,
        verify_seconds=verdict.verify_seconds, queue_seconds=verdict.queue_seconds))


def info_reply(verifier: Verifier, max_draft_length: int, max_sessions: int, edge_id: int | None) -> pb.EdgeInfo:
    info = verifier.engine_info
    reply = pb.EdgeInfo(engine=info.engine, model=info.model, vocab_size=info.vocab_size,
                        tokenizer_fingerprint=info.tokenizer_fingerprint, max_context=info.max_context,
                        max_draft_length=max_draft_length, max_top_k=info.max_top_n, max_sessions=max_sessions,
                        protocol_version=PROTOCOL_VERSION)
    if edge_id is not None:
        reply.edge_id = edge_id
    return reply
