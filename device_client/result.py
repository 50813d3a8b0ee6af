"""What one generation did: the tokens, and the figures of its rounds, drafts, streams and edges."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_client.edge_handle import EdgeSession
from device_client.efficiency import RoundTiming, bound_seconds, breakdown, draft_token_seconds
from device_client.speculation import acceptance_estimate

RECENT_STEPS = 32  # draft steps the decoding loop's estimate of a step's time looks at (the draft's speed drifts)


@dataclass
class DecodeResult:
    mode: str
    psd_variant: str | None = None  # the improvements of psd in use (device_client/speculation.py)
    session_id: str | None = None  # the edge's id of a speculative session (its verification log key)
    token_ids: list[int] = field(default_factory=list)
    started: float = 0.0
    first_token_at: float | None = None
    finished: float = 0.0
    rounds: int = 0
    drafted_sent: int = 0
    accepted: int = 0
    rejections: int = 0  # rounds not fully accepted
    accepted_lengths: list[int] = field(default_factory=list)
    block_lengths: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)  # block sent -> verdict received
    edge_verify_seconds: list[float] = field(default_factory=list)  # as reported by the edge
    round_timings: list[RoundTiming] = field(default_factory=list)
    draft_seconds: float = 0.0  # all draft compute, discarded speculation included
    draft_step_seconds: list[float] = field(default_factory=list)  # each draft step's time
    draft_overlapped_seconds: float = 0.0  # draft compute done while a block was in flight
    draft_wasted_tokens: int = 0
    speculation_kept: int = 0  # psd rounds whose drafting ahead survived the verdict (the next block was ready)
    resumes: int = 0  # streams replaced after the link broke
    migrations: int = 0  # moves to another edge (a new association, or the old edge failed)
    edges: list[str] = field(default_factory=list)  # every edge the request used, in order
    bytes_up: int = 0
    bytes_down: int = 0

    def count_round(self, timing: RoundTiming) -> None:
        """One verified block, timed from its drafting to its verdict taken."""
        self.round_timings.append(timing)
        self.round_seconds.append(timing.in_flight_s + timing.late_s)
        self.edge_verify_seconds.append(timing.edge_s)
        self.rounds += 1
        self.drafted_sent += timing.block
        self.accepted += timing.accepted
        self.rejections += timing.accepted < timing.block
        self.accepted_lengths.append(timing.accepted)
        self.block_lengths.append(timing.block)

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

    @property
    def per_token_acceptance(self) -> float | None:
        """The rounds so far, as ``acceptance_estimate`` (kept as counts: the decoding loop reads it every round)."""
        return acceptance_estimate(self.accepted, self.rejections)

    @property
    def draft_token_s(self) -> float | None:
        return draft_token_seconds(self.draft_step_seconds)

    @property
    def recent_draft_token_s(self) -> float | None:
        """``draft_token_s`` over the last RECENT_STEPS steps: what the decoding loop reads at every step."""
        return draft_token_seconds(self.draft_step_seconds[-RECENT_STEPS:])

    @property
    def bound_s(self) -> float | None:
        """The least time these rounds could have taken (device_client/efficiency.py)."""
        if not self.round_timings or self.draft_token_s is None:
            return None
        return bound_seconds(self.round_timings, self.draft_token_s)

    @property
    def efficiency(self) -> float | None:
        """The bound over the time measured: 1 means the rounds ran as fast as the hardware and the link allow."""
        bound = self.bound_s
        return bound / self.elapsed if bound is not None and self.elapsed > 0 else None

    def time_by_part(self) -> dict[str, float] | None:
        return breakdown(self.round_timings, self.elapsed) if self.round_timings else None


def summarize(result: DecodeResult, text: str, prompt_tokens: int, dilation: float = 0.0) -> dict:
    """The figures of one generation, as printed by `tandem generate --json`.  With ``dilation`` D > 0 (a paced
    edge, docs/testbed.md) every time is emulated: the real seconds over D, labelled so in ``clock``."""
    rounds = max(result.rounds, 1)
    scale = 1 / dilation if dilation > 0 else 1.0

    def emulated(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * scale

    elapsed = result.elapsed * scale
    tokens = len(result.token_ids)
    parts = result.time_by_part()
    bound = result.bound_s
    return {
        "mode": result.mode,
        "psd_variant": result.psd_variant,
        "clock": f"emulated (D={dilation:g})" if dilation > 0 else "wall",
        "text": text,
        "token_ids": result.token_ids,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": tokens,
        "elapsed_s": elapsed,
        "wall_elapsed_s": result.elapsed,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "per_token_latency_s": elapsed / tokens if tokens else None,
        "ttft_s": emulated(result.ttft),
        "bound_s_per_token": bound * scale / tokens if bound is not None and tokens else None,
        "efficiency": result.efficiency,
        "draft_token_s": emulated(result.draft_token_s),
        "breakdown_s": {part: seconds * scale for part, seconds in parts.items()} if parts else None,
        "acceptance_rate": result.acceptance_rate,
        "mean_accepted_length": result.mean_accepted_length,
        "rounds": result.rounds,
        "mean_block_length": float(np.mean(result.block_lengths)) if result.block_lengths else None,
        "mean_round_s": emulated(float(np.mean(result.round_seconds))) if result.round_seconds else None,
        "mean_edge_verify_s": (emulated(float(np.mean(result.edge_verify_seconds))) if result.edge_verify_seconds
                               else None),
        "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down,
        "bytes_up_per_block": result.bytes_up / rounds if result.rounds else None,
        "bytes_down_per_block": result.bytes_down / rounds if result.rounds else None,
        "draft_s": emulated(result.draft_seconds),
        "draft_hidden_fraction": result.draft_hidden_fraction,
        "draft_wasted_tokens": result.draft_wasted_tokens,
        "resumes": result.resumes,
        "migrations": result.migrations,
        "edges": result.edges,
    }
