"""Export one link of a trace as a Mahimahi delivery-opportunity trace (mm-link's uplink/downlink files).

Mahimahi's format: one integer per line, the millisecond at which one 1500-byte packet may be delivered; the file
repeats when it ends.  A link with rate r bit/s during a slot gets r / 12000 opportunities per second of it; the
fractional remainder carries over, so the long-run byte rate matches the trace exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem.trace_format import ChannelTrace

MTU_BITS = 1500 * 8


class ExportError(ValueError):
    pass


def delivery_opportunities(rates_bps: np.ndarray, slot_ms: float) -> list[int]:
    """Millisecond timestamps of packet delivery opportunities for per-slot rates."""
    total_ms = int(round(len(rates_bps) * slot_ms))
    if total_ms < 1:
        raise ExportError("the trace is shorter than one millisecond")
    slot_of_ms = np.minimum((np.arange(total_ms) / slot_ms).astype(int), len(rates_bps) - 1)
    bits_per_ms = rates_bps[slot_of_ms] / 1000.0
    cumulative_packets = np.floor(np.cumsum(bits_per_ms) / MTU_BITS).astype(np.int64)
    per_ms = np.diff(cumulative_packets, prepend=0)
    stamps = np.repeat(np.arange(1, total_ms + 1), per_ms)  # Mahimahi timestamps start at 1 ms
    if stamps.size == 0:
        raise ExportError("this link never carries a packet (all slots in outage or too slow); choose another "
                          "user, edge or share")
    return stamps.tolist()


def export_mahimahi(trace: ChannelTrace, direction: str, user: int, edge: int, share: float, path: Path) -> int:
    meta = trace.metadata
    if not 0 <= user < meta.num_users:
        raise ExportError(f"--user must be within [0, {meta.num_users}), got {user}")
    if not 0 <= edge < meta.num_edges:
        raise ExportError(f"--edge must be within [0, {meta.num_edges}), got {edge}")
    if not 0 < share <= 1:
        raise ExportError(f"--share must be within (0, 1], got {share}")
    stamps = delivery_opportunities(trace.rate_bps(direction, user, edge, share), meta.slot_ms)
    path.write_text("\n".join(map(str, stamps)) + "\n")
    return len(stamps)
