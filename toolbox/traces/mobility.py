"""User mobility: random waypoint inside a rectangle, sampled at slot starts; deterministic for a seed."""

from __future__ import annotations

import numpy as np

from toolbox.traces.radio_scenario import Mobility


def random_waypoint(rng: np.random.Generator, mobility: Mobility, area: tuple[float, float], num_users: int,
                    num_slots: int, slot_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions [T, U, 3] (m) and a per-user flag [U] telling vehicular users apart from pedestrians.

    Each user starts at a uniform point, moves in a straight line at a speed drawn from its class's range to a
    uniform waypoint, pauses up to ``max_pause_s``, and repeats.
    """
    half = np.array(area) / 2
    vehicular = rng.random(num_users) < mobility.vehicular_fraction
    positions = np.empty((num_slots, num_users, 3), dtype=np.float32)
    positions[:, :, 2] = mobility.user_height_m
    for user in range(num_users):
        speeds = mobility.vehicular if vehicular[user] else mobility.pedestrian
        here = rng.uniform(-half, half)
        target, speed, pause_left = rng.uniform(-half, half), rng.uniform(speeds.min_mps, speeds.max_mps), 0.0
        for slot in range(num_slots):
            positions[slot, user, :2] = here
            budget = slot_s  # seconds of this slot still to spend moving or pausing
            while budget > 0:
                if pause_left > 0:
                    spent = min(pause_left, budget)
                    pause_left -= spent
                    budget -= spent
                    continue
                gap = target - here
                distance = float(np.hypot(*gap))
                step = speed * budget
                if step < distance:
                    here = here + gap * (step / distance)
                    budget = 0
                else:
                    here = target
                    budget -= distance / speed
                    target = rng.uniform(-half, half)
                    speed = rng.uniform(speeds.min_mps, speeds.max_mps)
                    pause_left = rng.uniform(0, mobility.max_pause_s)
    return positions, vehicular
