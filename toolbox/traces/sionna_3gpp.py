"""Channel gains from the 3GPP TR 38.901 stochastic models in Sionna (UMi, UMa, RMa), time-consistent.

Calling ``set_topology`` once per slot would redraw shadowing and small-scale fading every slot (jumps of ~9 dB
measured here).  Instead, every user's trajectory is cut into mobility epochs; the position at the start of each
epoch becomes one UT entry of a single topology with spatial consistency enabled (TR 38.901 §7.6.3): the entries
of one user share a track id, so LoS state, shadowing and cluster parameters are spatially correlated along the
path.  Within an epoch, the channel evolves from that geometry over ``epoch`` samples at the slot rate with the
user's velocity (Doppler), which is how Sionna keeps fading consistent in time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Largest number of UT entries in one topology (the spatial-consistency correlation is over all entries, so cost
# grows with their square); longer traces are split into windows of epochs.
MAX_ENTRIES_PER_TOPOLOGY = 1024


def stochastic_gains(kind: str, carrier_hz: float, bandwidth_hz: float, num_subcarriers: int,
                     edge_pos: np.ndarray, user_pos: np.ndarray, slot_s: float, epoch_slots: int, seed: int,
                     on_window: Callable[[int], None] = lambda slots: None) -> np.ndarray:
    """Linear channel power gains [T, U, E, S] on ``num_subcarriers`` subcarriers spread over the band."""
    import torch
    from sionna.phy import config
    from sionna.phy.channel import cir_to_ofdm_channel, subcarrier_frequencies
    from sionna.phy.channel.tr38901 import RMa, UMa, UMi, PanelArray

    config.seed = seed
    num_slots, num_users, _ = user_pos.shape
    num_edges = edge_pos.shape[0]

    def antenna() -> PanelArray:
        return PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, polarization="single",
                          polarization_type="V", antenna_pattern="omni", carrier_frequency=carrier_hz)

    common = dict(carrier_frequency=carrier_hz, ut_array=antenna(), bs_array=antenna(), direction="downlink",
                  enable_spatial_consistency=True)
    model = {"umi": lambda: UMi(o2i_model="low", **common), "uma": lambda: UMa(o2i_model="low", **common),
             "rma": lambda: RMa(**common)}[kind]()
    frequencies = subcarrier_frequencies(num_subcarriers, bandwidth_hz / num_subcarriers)
    epochs_per_window = max(1, MAX_ENTRIES_PER_TOPOLOGY // num_users)
    gains = np.empty((num_slots, num_users, num_edges, num_subcarriers), dtype=np.float32)
    window_slots = epochs_per_window * epoch_slots
    for first in range(0, num_slots, window_slots):
        starts = np.arange(first, min(first + window_slots, num_slots), epoch_slots)
        ends = np.minimum(starts + epoch_slots, num_slots - 1)
        # UT entry (user u, epoch p) at index u * P + p
        locations = user_pos[starts].transpose(1, 0, 2).reshape(-1, 3)
        moves = (user_pos[ends] - user_pos[starts]) / (np.maximum(ends - starts, 1) * slot_s)[:, None, None]
        velocities = moves.transpose(1, 0, 2).reshape(-1, 3)  # [P, U, 3] -> entries in the same order
        entries = locations.shape[0]
        model.reset_topology()  # the last window may hold fewer entries; Sionna keeps buffer shapes otherwise
        model.set_topology(
            ut_loc=torch.from_numpy(locations)[None].float(),
            bs_loc=torch.from_numpy(edge_pos)[None].float(),
            ut_orientations=torch.zeros(1, entries, 3),
            bs_orientations=torch.zeros(1, num_edges, 3),
            ut_velocities=torch.from_numpy(velocities)[None].float(),
            in_state=torch.zeros(1, entries, dtype=torch.bool),
            spatial_consistency_track_ids=torch.arange(entries) // len(starts),
        )
        coefficients, delays = model(epoch_slots, 1.0 / slot_s)
        response = cir_to_ofdm_channel(frequencies, coefficients, delays, normalize=False)
        # [1, UT entries, 1, edges, 1, time, subcarriers] -> [epochs, time, users, edges, subcarriers]
        power = (response.abs() ** 2)[0, :, 0, :, 0].reshape(num_users, len(starts), num_edges, epoch_slots,
                                                                 num_subcarriers)
        power = power.permute(1, 3, 0, 2, 4).reshape(-1, num_users, num_edges, num_subcarriers).numpy()
        count = min(window_slots, num_slots - first)
        gains[first:first + count] = power[:count]
        on_window(count)
    return gains
