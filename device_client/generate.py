"""One generation from a device: check the edge, tokenize the chat prompt, run the chosen mode."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Callable

from device_client.decoding import decode_edge_only, decode_speculative
from device_client.draft import DraftEngine
from device_client.edge_handle import EdgeFacts, EdgeHandle
from device_client.result import DecodeResult, summarize
from device_client.routing import FixedRoute, Route
from device_client.speculation import DEFAULT_VARIANT, PsdVariant
from tandem.sampling import SamplingConfig


class IncompatibleEdge(Exception):
    """The edge cannot serve this request as asked (tokenizer, limits); the message says why."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    mode: str
    max_tokens: int
    sampling: SamplingConfig
    draft_length: int = 4
    ignore_eos: bool = False
    raw_prompt: bool = False  # send the prompt as it is, without the chat template
    psd_variant: PsdVariant = DEFAULT_VARIANT  # the improvements of psd to use (device_client/speculation.py)


def check_compatible(info: EdgeFacts, draft: DraftEngine, request: GenerationRequest) -> None:
    if info.tokenizer_fingerprint != draft.tokenizer_fingerprint:
        raise IncompatibleEdge(
            f"the edge's target model ({info.model}) uses another tokenizer than this device's draft model"
        )
    if request.mode != "edge-only" and request.draft_length > info.max_draft_length:
        raise IncompatibleEdge(
            f"--draft-length {request.draft_length} exceeds the edge's limit {info.max_draft_length}"
        )
    try:
        request.sampling.validate(info.vocab_size, info.max_top_k)
    except ValueError as error:
        raise IncompatibleEdge(str(error)) from None


def generate(
    target: EdgeHandle | Route,
    draft: DraftEngine,
    request: GenerationRequest,
    on_text: Callable[[str], None] | None = None,
    info: EdgeFacts | None = None,
    user: int | None = None,
    dilation: float | None = None,
) -> tuple[DecodeResult, dict]:
    """One generation on an edge, or on whichever edges a route (a controller) chooses for ``user``.  The summary's
    times are emulated when ``dilation`` (default: the edge's own pacing, which its info says) is > 0."""
    route = target if isinstance(target, Route) else FixedRoute(target)
    info = info or route.current().info()
    check_compatible(info, draft, request)
    prompt = (
        draft.encode_text(request.prompt) if request.raw_prompt else draft.encode_chat(request.prompt)
    )
    stop_ids = [] if request.ignore_eos else draft.stop_ids
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sink = (lambda ids: on_text(decoder.decode(draft.decode(ids)))) if on_text else None
    if request.mode == "edge-only":
        result = decode_edge_only(route, prompt, request.sampling, request.max_tokens, stop_ids,
                                  draft.tokenizer_fingerprint, sink, user)
    else:
        result = decode_speculative(route, draft, prompt, request.sampling, request.max_tokens, request.draft_length,
                                    parallel=request.mode == "psd", stop_ids=stop_ids, sink=sink, user=user,
                                    variant=request.psd_variant)
    text = draft.decode(result.token_ids).decode("utf-8", errors="replace")
    return result, summarize(result, text, len(prompt), info.dilation if dilation is None else dilation)
