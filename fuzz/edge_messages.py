"""Fuzz the edge's data-plane checks: what a device may send (DeviceMessage, ScoreRequest) against the edge's limits.

Each input is a mode byte and a payload.  Raw modes parse the payload as the wire message, as the servicer does;
structured modes build Open, DraftBlock and ScoreRequest field by field with extreme integers and NaN, infinite
and denormal floats, which random bytes rarely spell.  A bad message must be refused with ``SessionError`` (or,
before that, protobuf's ``DecodeError``); what the checks accept must respect the limits they enforce.

    python fuzz/edge_messages.py [libFuzzer args]     python fuzz/edge_messages.py --write-seeds DIR
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import atheris
from google.protobuf.message import DecodeError

from common import dispatch, edgy_float, edgy_uint, main, rejected

with atheris.instrument_imports(include=["edge_server.checks", "edge_server.sessions", "tandem.sampling"]):
    from edge_server.checks import PROBABILITY_TOLERANCE, check_block, check_open, check_score
    from edge_server.config import EdgeConfig
    from edge_server.engines.base import EngineInfo
    from edge_server.sessions import Session, SessionError
    from tandem.sampling import SamplingConfig
    from tandem.wire.v1 import edge_pb2 as pb

INFO = EngineInfo(engine="fuzz", model="fuzz", vocab_size=49152, tokenizer_fingerprint="f" * 64, max_context=2048,
                  max_top_n=64)
EDGE_DEFAULTS = EdgeConfig()
MAX_DRAFT_LENGTH = EDGE_DEFAULTS.max_draft_length


def limits(check: Callable[..., object]) -> dict[str, int]:
    """The edge's limits (EdgeConfig defaults) that ``check`` takes as parameters, by name: the servicer passes
    its configured ones, and the checks gain limits over time without the harness falling behind."""
    return {name: getattr(EDGE_DEFAULTS, name) for name in inspect.signature(check).parameters
            if hasattr(EDGE_DEFAULTS, name)}


OPEN_LIMITS, SCORE_LIMITS = limits(check_open), limits(check_score)


def session(name: str, tokens: list[int], sampling: SamplingConfig, draft_length: int) -> Session:
    return Session(id=name, tokens=tokens, prompt_length=len(tokens), sampling=sampling, speculative=True,
                   draft_length=draft_length)


# Sessions a block may extend: greedy and sampling (narrow and widest exact top_k), and one at the context's end.
SESSIONS = (
    session("greedy", [1, 2, 3, 4], SamplingConfig(), 8),
    session("top-k-4", [5, 6, 7], SamplingConfig(temperature=0.8, top_k=4, top_p=0.9, seed=7), 4),
    session("top-k-64", [9] * 5, SamplingConfig(temperature=1.5, top_k=64, seed=1), MAX_DRAFT_LENGTH),
    session("full", [3] * (INFO.max_context - 3), SamplingConfig(), MAX_DRAFT_LENGTH),
)


def open_checked(request: pb.Open) -> None:
    with rejected(SessionError):
        accepted = check_open(request, INFO, **OPEN_LIMITS)
        accepted.sampling.validate(INFO.vocab_size, INFO.max_top_n)
        assert 0 < len(accepted.prompt) < INFO.max_context and max(accepted.prompt) < INFO.vocab_size
        assert not accepted.speculative or 1 <= accepted.draft_length <= MAX_DRAFT_LENGTH


def block_checked(session: Session, block: pb.DraftBlock) -> None:
    with rejected(SessionError):
        accepted = check_block(session, block, INFO)
        assert 1 <= len(accepted.tokens) <= session.draft_length and max(accepted.tokens) < INFO.vocab_size
        assert len(session.tokens) + len(accepted.tokens) < INFO.max_context
        assert len(accepted.dists) == (0 if session.sampling.greedy else len(accepted.tokens))
        for token, dist in zip(accepted.tokens, accepted.dists):
            assert all(math.isfinite(p) and p >= 0 for p in dist.probs) and dist.prob_of(token) > 0
            assert abs(float(dist.probs.sum()) - 1.0) <= PROBABILITY_TOLERANCE


def score_checked(request: pb.ScoreRequest) -> None:
    with rejected(SessionError):
        job = check_score(request, INFO, **SCORE_LIMITS)
        assert 1 <= job.start < len(job.tokens) <= INFO.max_context and 2 <= job.top_n <= INFO.max_top_n


def device_message(payload: bytes) -> None:
    """As the Decode stream checks one message: open, or draft (against each kind of session)."""
    message = pb.DeviceMessage()
    with rejected(DecodeError):
        message.ParseFromString(payload)
        kind = message.WhichOneof("kind")
        if kind == "open":
            open_checked(message.open)
        elif kind == "draft":
            for session in SESSIONS:
                block_checked(session, message.draft)


def score_request(payload: bytes) -> None:
    request = pb.ScoreRequest()
    with rejected(DecodeError):
        request.ParseFromString(payload)
        score_checked(request)


def token_ids(data: atheris.FuzzedDataProvider, most: int) -> list[int]:
    """Mostly in-vocabulary ids, sometimes a boundary one (the vocabulary size, 2^32 - 1)."""
    return [edgy_uint(data) if data.ConsumeProbability() < 0.1 else data.ConsumeIntInRange(0, INFO.vocab_size - 1)
            for _ in range(data.ConsumeIntInRange(0, most))]


def built_open(data: atheris.FuzzedDataProvider) -> None:
    sampling = pb.SamplingParams(temperature=edgy_float(data), top_k=edgy_uint(data), top_p=edgy_float(data),
                                 seed=edgy_uint(data, 64))
    fingerprint = INFO.tokenizer_fingerprint if data.ConsumeBool() else data.ConsumeUnicodeNoSurrogates(4)
    request = pb.Open(prompt_token_ids=token_ids(data, 64), sampling=sampling,
                      mode=data.ConsumeIntInRange(0, 3), draft_length=edgy_uint(data), max_new_tokens=edgy_uint(data),
                      stop_token_ids=token_ids(data, 4), tokenizer_fingerprint=fingerprint)
    if data.ConsumeBool():
        request.user = edgy_uint(data)
    open_checked(request)


def built_block(data: atheris.FuzzedDataProvider) -> None:
    session = data.PickValueInList(list(SESSIONS))
    tokens = token_ids(data, MAX_DRAFT_LENGTH + 1)
    block = pb.DraftBlock(position=len(session.tokens) if data.ConsumeProbability() < 0.9 else edgy_uint(data),
                          token_ids=tokens)
    for i in range(data.ConsumeIntInRange(0, len(tokens) + 1)):  # one per token, give or take one
        token = tokens[i] if i < len(tokens) else 0
        support = token_ids(data, 8) + ([token] if data.ConsumeBool() else [])
        probs = [edgy_float(data) if data.ConsumeBool() else 1.0 / len(support) for _ in support]
        if data.ConsumeBool():
            probs.append(data.ConsumeFloat())
        block.draft_distributions.add(token_ids=support, probs=probs)
    block_checked(session, block)


def built_score(data: atheris.FuzzedDataProvider) -> None:
    request = pb.ScoreRequest(token_ids=token_ids(data, 32), start=edgy_uint(data), top_n=edgy_uint(data))
    if data.ConsumeBool():
        request.user = edgy_uint(data)
    score_checked(request)


RAW_MODES = (device_message, score_request)
BUILT_MODES = (built_open, built_block, built_score)


def test_one_input(data: bytes) -> None:
    dispatch(data, RAW_MODES, BUILT_MODES)


def seeds() -> dict[str, bytes]:
    """One valid message of each kind, so that mutations start from what a device really sends."""
    sampling = pb.SamplingParams(temperature=0.8, top_k=4, top_p=0.9, seed=7)
    messages = {
        "open-speculative": pb.DeviceMessage(open=pb.Open(prompt_token_ids=[1, 2, 3], sampling=sampling,
                                                          mode=pb.MODE_SPECULATIVE, draft_length=4, user=3)),
        "open-edge-only": pb.DeviceMessage(open=pb.Open(prompt_token_ids=[1, 2], mode=pb.MODE_EDGE_ONLY,
                                                        max_new_tokens=16, stop_token_ids=[2])),
        "draft-greedy": pb.DeviceMessage(draft=pb.DraftBlock(position=4, token_ids=[10, 11])),
        "draft-sampling": pb.DeviceMessage(draft=pb.DraftBlock(position=3, token_ids=[10, 11], draft_distributions=[
            pb.SparseDistribution(token_ids=[10, 12], probs=[0.75, 0.25]),
            pb.SparseDistribution(token_ids=[11], probs=[1.0])])),
        "attach": pb.DeviceMessage(attach=pb.Attach(session_id="0" * 32)),
        "close": pb.DeviceMessage(close=pb.Close()),
    }
    found = {f"raw-{name}": bytes([0]) + message.SerializeToString() for name, message in messages.items()}
    found["raw-score"] = bytes([1]) + pb.ScoreRequest(token_ids=[1, 2, 3, 4], start=1, top_n=8).SerializeToString()
    found.update({f"built-{mode}": bytes([len(RAW_MODES) + mode]) + bytes(range(7, 90, 3)) for mode in range(3)})
    return found


if __name__ == "__main__":
    main(test_one_input, seeds)
