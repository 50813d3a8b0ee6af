"""The EdgeService gRPC servicer: parses device messages, delegates, and maps errors to statuses.

Validation (checks.py), sessions (sessions.py), scheduling (scheduler.py), commits (verification.py) and
shutdown (drain.py) live in their own modules; this class only translates between the wire and them and drives a
stream's state machine (open or attach, then blocks, then close).  Who may call is settled before (tandem/rpc.py);
here the caller's identity owns the sessions it opens, and a device certificate spends only its own user's share.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

import grpc

from edge_server.checks import check_block, check_open, check_score
from edge_server.drain import Drain
from edge_server.metrics import EdgeMetrics
from edge_server.sessions import Session, SessionError, SessionRegistry
from edge_server.verification import CommittedVerdict, Verifier
from tandem.rpc import Caller, caller_of
from tandem.wire.v1 import edge_pb2 as pb
from tandem.wire.v1 import edge_pb2_grpc

log = logging.getLogger(__name__)
PROTOCOL_VERSION = "tandem.wire.v1"


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    def __init__(self, verifier: Verifier, registry: SessionRegistry, metrics: EdgeMetrics, info_reply: pb.EdgeInfo,
                 max_draft_length: int, max_request_tokens: int, drain: Drain | None = None) -> None:
        self._verifier = verifier
        self._registry = registry
        self._metrics = metrics
        self._info_reply = info_reply
        self._max_draft_length = max_draft_length
        self._max_request_tokens = max_request_tokens
        self._drain = drain or Drain()

    @property
    def _info(self):
        return self._verifier.engine_info

    async def GetInfo(self, request: pb.InfoRequest, context) -> pb.EdgeInfo:
        return self._info_reply

    async def Score(self, request: pb.ScoreRequest, context) -> pb.ScoreReply:
        caller = caller_of(context)
        try:
            job = check_score(request, self._info, self._max_request_tokens)
            _check_user(caller, job.user)
            with self._registry.score_lease(caller.identity):
                async with self._drain.work():
                    scored = await self._verifier.score(job, caller.identity)
        except SessionError as error:
            await self._abort(context, error)
        except Exception:
            log.exception("scoring failed")
            await self._abort(context, SessionError("INTERNAL", "the edge's target engine failed"))
        return pb.ScoreReply(positions=[
            pb.PositionScore(token_id=p.token_id, token_logprob=p.token_logprob,
                             top_ids=p.candidates.token_ids.tolist(), top_logprobs=p.candidates.logprobs.tolist())
            for p in scored])

    async def Decode(self, request_iterator, context) -> AsyncIterator[pb.EdgeMessage]:
        caller = caller_of(context)
        session: Session | None = None
        messages = request_iterator.__aiter__()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(messages.__anext__(), timeout=self._registry.wait_limit(session))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    if session is None:
                        raise SessionError("DEADLINE_EXCEEDED",
                                           f"no message for {self._registry.idle_timeout:g} s") from None
                    self._registry.close(session)
                    session = None
                    raise SessionError("DEADLINE_EXCEEDED", f"nothing committed for {self._registry.commit_idle:g} "
                                       "s; session closed (its committed tokens are the prompt of a new one)") from None
                self._metrics.bytes_received.inc(message.ByteSize())
                kind = message.WhichOneof("kind")
                if session is None:
                    if kind == "open":
                        self._drain.refuse_new_work()
                        request = check_open(message.open, self._info, self._max_draft_length)
                        _check_user(caller, request.user)
                        session = self._registry.open(request, caller.identity)
                        mode = "speculative" if session.speculative else "edge-only"
                        self._metrics.sessions_opened.labels(mode).inc()
                        yield self._sent(pb.EdgeMessage(
                            opened=pb.SessionOpened(session_id=session.id, committed_length=len(session.tokens))))
                        if not session.speculative:
                            async for tokens in self._verifier.decode_on_edge(session, request):
                                yield self._sent(pb.EdgeMessage(tokens=pb.Tokens(token_ids=tokens)))
                                self._drain.refuse_new_work()  # shutting down: the device restarts elsewhere
                            self._registry.close(session)
                            yield self._sent(pb.EdgeMessage(closed=pb.Closed(committed_length=len(session.tokens))))
                            return
                    elif kind == "attach":
                        self._drain.refuse_new_work()
                        session = self._registry.attach(message.attach.session_id, caller.identity)
                        yield self._sent(pb.EdgeMessage(opened=pb.SessionOpened(
                            session_id=session.id, committed_length=len(session.tokens),
                            committed_token_ids=session.tokens[session.prompt_length:])))
                    else:
                        raise SessionError(
                            "FAILED_PRECONDITION", f"a stream must start with open or attach, got {kind or 'nothing'}"
                        )
                elif kind == "draft":
                    block = check_block(session, message.draft, self._info)
                    async with self._drain.work():
                        verdict = await self._verifier.verify(session, block)
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
        except Exception:  # an engine failure: the session keeps its committed tokens
            log.exception("decoding failed")
            await self._abort(context, SessionError(
                "INTERNAL", "the edge's target engine failed; the session keeps its committed tokens"))
        finally:
            if session is not None:
                if session.speculative:
                    self._registry.detach(session)
                else:
                    self._registry.close(session)

    def _sent(self, message: pb.EdgeMessage) -> pb.EdgeMessage:
        self._metrics.bytes_sent.inc(message.ByteSize())
        return message

    async def _abort(self, context, error: SessionError) -> None:
        self._metrics.errors.labels(error.code).inc()
        await context.abort(getattr(grpc.StatusCode, error.code), str(error))


def _check_user(caller: Caller, user: int | None) -> None:
    """A device certificate ("device-3") may only spend its own user's compute share."""
    if not caller.may_act_for(user):
        raise SessionError("PERMISSION_DENIED", f"{caller.identity} may not act for user {user}")


def _verdict_message(verdict: CommittedVerdict) -> pb.EdgeMessage:
    return pb.EdgeMessage(verdict=pb.Verdict(
        position=verdict.position, accepted=verdict.accepted, next_token_id=verdict.next_token,
        verify_seconds=verdict.verify_seconds, queue_seconds=verdict.queue_seconds))


def info_reply(verifier: Verifier, max_draft_length: int, max_sessions: int, edge_id: int | None,
               dilation: float) -> pb.EdgeInfo:
    info = verifier.engine_info
    # The model's name, not where it lies on the server's disk.
    reply = pb.EdgeInfo(engine=info.engine, model=Path(info.model).name, vocab_size=info.vocab_size,
                        tokenizer_fingerprint=info.tokenizer_fingerprint, max_context=info.max_context,
                        max_draft_length=max_draft_length, max_top_k=info.max_top_n, max_sessions=max_sessions,
                        protocol_version=PROTOCOL_VERSION, dilation=dilation)
    if edge_id is not None:
        reply.edge_id = edge_id
    return reply
