"""From channel gains to what a link can carry: SINR per subcarrier, then Sionna SYS link adaptation.

Downlink: every edge transmits at full power on the whole band (full buffer), so a user's SINR towards one edge
counts the other edges as interference.  Uplink: the edge receives the user's full transmit power; interference
from users of neighbouring cells depends on association decisions the trace must not presume, so it enters as a
fixed interference-over-thermal margin.  Uplink and downlink share the channel gains (TDD reciprocity).

Spectral efficiency is what Sionna SYS gives for the band: inner-loop link adaptation picks the highest MCS
whose transport-block error rate at the effective (EESM) SINR stays under the target, and the PHY abstraction's
BLER tables give that error rate; the rate is modulation order x code rate x (1 - TBLER), and 0 (outage) when
the TBLER exceeds OUTAGE_TBLER.  Shannon's
log2(1 + SINR) is kept beside it for reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BOLTZMANN = 1.380649e-23
REFERENCE_TEMPERATURE_K = 290.0
OFDM_SYMBOLS_PER_SLOT = 14  # one NR slot; the grid the PHY abstraction sizes transport blocks from
PAIRS_PER_CHUNK = 512  # link-adaptation batch: bounds memory (~0.3 GB) while keeping torch calls large
PUSCH, PDSCH = 0, 1  # Sionna SYS MCS categories
# A link is in outage (spectral efficiency 0) when even the chosen MCS loses more than this share of transport
# blocks: the analogue of a radio link failure, and what the link emulator turns into "bytes wait".
OUTAGE_TBLER = 0.9


def to_db(linear: np.ndarray) -> np.ndarray:
    """10 log10 as float32, with zero (no path at all) floored at -300 dB."""
    return (10 * np.log10(np.maximum(np.asarray(linear, np.float64), 1e-30))).astype(np.float32)


def dbm_to_watt(dbm: float) -> float:
    return 10 ** ((dbm - 30) / 10)


def noise_psd(noise_figure_db: float) -> float:
    """Thermal noise power spectral density (W/Hz) behind a receiver with this noise figure."""
    return BOLTZMANN * REFERENCE_TEMPERATURE_K * 10 ** (noise_figure_db / 10)


@dataclass(frozen=True)
class LinkBudget:
    edge_bandwidth_hz: tuple[float, ...]  # each edge spreads its power over its own band
    edge_tx_power_dbm: float
    user_tx_power_dbm: float
    edge_noise_figure_db: float
    user_noise_figure_db: float
    uplink_interference_margin_db: float


def downlink_sinr(gains: np.ndarray, budget: LinkBudget) -> np.ndarray:
    """Per-subcarrier SINR [T, U, E, S] from linear gains [T, U, E, S]; the other edges interfere.

    Power spectral densities: edge e transmits P / B_e per Hz; the bands overlap (one carrier, reuse 1)."""
    tx_psd = dbm_to_watt(budget.edge_tx_power_dbm) / np.asarray(budget.edge_bandwidth_hz)  # [E]
    received = gains.astype(np.float64) * tx_psd[:, None]
    interference = received.sum(axis=2, keepdims=True) - received
    return (received / (noise_psd(budget.user_noise_figure_db) + interference)).astype(np.float32)


def uplink_sinr(gains: np.ndarray, budget: LinkBudget) -> np.ndarray:
    """Per-subcarrier SINR [T, U, E, S]: the user's power over edge e's band, against the edge's noise raised
    by the interference-over-thermal margin."""
    tx_psd = dbm_to_watt(budget.user_tx_power_dbm) / np.asarray(budget.edge_bandwidth_hz)  # [E]
    noise = noise_psd(budget.edge_noise_figure_db) * 10 ** (budget.uplink_interference_margin_db / 10)
    return (gains.astype(np.float64) * tx_psd[:, None] / noise).astype(np.float32)


@dataclass(frozen=True)
class LinkQuality:
    sinr_db: np.ndarray  # [T, U, E] wideband: mean over subcarriers, in dB
    se: np.ndarray  # [T, U, E] bit/s/Hz
    se_shannon: np.ndarray  # [T, U, E]
    mcs: np.ndarray  # [T, U, E]


def link_quality(sinr: np.ndarray, downlink: bool, bler_target: float,
                 on_chunk: Callable[[int], None] = lambda pairs: None) -> LinkQuality:
    """Sionna SYS link adaptation over every (slot, user, edge) pair of ``sinr`` [T, U, E, S]."""
    import torch
    from sionna.phy.nr.utils import decode_mcs_index
    from sionna.sys import InnerLoopLinkAdaptation, PHYAbstraction

    phy = PHYAbstraction()
    adaptation = InnerLoopLinkAdaptation(phy, bler_target=bler_target)
    category = PDSCH if downlink else PUSCH
    flat = sinr.reshape(-1, sinr.shape[-1])
    se, mcs = np.empty(flat.shape[0], np.float32), np.empty(flat.shape[0], np.int8)
    for begin in range(0, flat.shape[0], PAIRS_PER_CHUNK):
        end = min(begin + PAIRS_PER_CHUNK, flat.shape[0])
        # [pairs, OFDM symbols, subcarriers, 1 user, 1 stream]: the sampled subcarriers stand for the band
        grid = torch.from_numpy(flat[begin:end]).clamp_min(1e-12)[:, None, :, None, None]
        grid = grid.expand(-1, OFDM_SYMBOLS_PER_SLOT, -1, -1, -1)
        chosen = adaptation(sinr=grid, mcs_table_index=1, mcs_category=category)
        _, _, _, tbler, _ = phy(chosen, sinr=grid, mcs_table_index=1, mcs_category=category)
        order, code_rate = decode_mcs_index(chosen, table_index=1, is_pusch=not downlink)
        rate = torch.where(tbler > OUTAGE_TBLER, 0.0, order * code_rate * (1 - tbler))
        se[begin:end] = rate.clamp_min(0)[:, 0].numpy()
        mcs[begin:end] = chosen[:, 0].numpy()
        on_chunk(end - begin)
    shape = sinr.shape[:-1]
    shannon = np.log2(1 + sinr.astype(np.float64)).mean(axis=-1).astype(np.float32)
    return LinkQuality(
        sinr_db=to_db(sinr.astype(np.float64).mean(axis=-1)),
        se=se.reshape(shape), se_shannon=shannon, mcs=mcs.reshape(shape),
    )
