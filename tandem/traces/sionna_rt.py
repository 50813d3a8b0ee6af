"""Channel gains from Sionna RT ray tracing in one of the scenes shipped in the sionna-rt wheel.

Ray tracing is deterministic in the geometry, so traces are time-consistent by construction: a user's channel in
consecutive slots differs only as much as its position does.  Every (slot, user) position becomes one receiver;
receivers are traced in batches against all edges (transmitters).  On the CPU, Dr.Jit needs a newer LLVM than
Debian's default: install ``libllvm19`` and set ``DRJIT_LIBLLVM_PATH`` (done here when the library is found).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

RECEIVERS_PER_BATCH = 1024
MAX_DEPTH = 3  # reflections + diffractions per path: enough for street canyons, bounded cost on the CPU
SAMPLES_PER_SOURCE = 10**5
LLVM_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1", "/usr/lib/aarch64-linux-gnu/libLLVM.so.19.1",
                   "/usr/lib/x86_64-linux-gnu/libLLVM-19.so")


class RayTracingUnavailable(RuntimeError):
    """Sionna RT cannot run here (no suitable LLVM for Dr.Jit's CPU backend)."""


def _ensure_llvm() -> None:
    if os.environ.get("DRJIT_LIBLLVM_PATH"):
        return
    for candidate in LLVM_CANDIDATES:
        if Path(candidate).is_file():
            os.environ["DRJIT_LIBLLVM_PATH"] = candidate
            return


class RayTracedScene:
    """A scene shipped in the sionna-rt wheel, loaded once: its default user area, then ray-traced gains."""

    def __init__(self, name: str) -> None:
        _ensure_llvm()
        try:
            import sionna.rt as rt
        except (ImportError, RuntimeError) as error:
            raise RayTracingUnavailable(
                f"Sionna RT does not load ({error}); on Debian install libllvm19 and set DRJIT_LIBLLVM_PATH"
            ) from None
        self._rt = rt
        self._scene = rt.load_scene(getattr(rt.scene, name), merge_shapes=True)

    def default_area(self) -> tuple[float, float]:
        """80% of the scene's footprint around the origin."""
        box = self._scene.mi_scene.bbox()
        return tuple(1.6 * min(abs(float(box.min[axis])), abs(float(box.max[axis]))) for axis in (0, 1))

    def gains(self, carrier_hz: float, bandwidth_hz: float, num_subcarriers: int, edge_pos: np.ndarray,
              user_pos: np.ndarray, seed: int, on_slots: Callable[[int], None] = lambda slots: None) -> np.ndarray:
        """Linear channel power gains [T, U, E, S] from ray-traced channel frequency responses."""
        rt, scene = self._rt, self._scene
        scene.frequency = carrier_hz
        scene.tx_array = rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        scene.rx_array = rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
        edge_names = [f"edge{index}" for index in range(len(edge_pos))]
        for name, position in zip(edge_names, edge_pos):
            scene.add(rt.Transmitter(name=name, position=[float(v) for v in position]))
        solver = rt.PathSolver()
        frequencies = (np.arange(num_subcarriers) - (num_subcarriers - 1) / 2) * (bandwidth_hz / num_subcarriers)
        num_slots, num_users, _ = user_pos.shape
        flat = user_pos.reshape(-1, 3)
        gains = np.empty((flat.shape[0], edge_pos.shape[0], num_subcarriers), dtype=np.float32)
        slots_per_batch = max(1, RECEIVERS_PER_BATCH // num_users)
        for first_slot in range(0, num_slots, slots_per_batch):
            count = min(slots_per_batch, num_slots - first_slot)
            begin, end = first_slot * num_users, (first_slot + count) * num_users
            names = [f"user{i}" for i in range(begin, end)]
            for name, position in zip(names, flat[begin:end]):
                scene.add(rt.Receiver(name=name, position=[float(v) for v in position]))
            paths = solver(scene, max_depth=MAX_DEPTH, samples_per_src=SAMPLES_PER_SOURCE, synthetic_array=True,
                           seed=seed)
            response = paths.cfr(frequencies=frequencies, normalize=False, out_type="numpy")
            # [receivers, rx antennas, edges, tx antennas, time steps, subcarriers]
            gains[begin:end] = (np.abs(response) ** 2)[:, 0, :, 0, 0, :]
            for name in names:
                scene.remove(name)
            on_slots(count)
        for name in edge_names:
            scene.remove(name)  # the scene can trace again with other edges
        return gains.reshape(num_slots, num_users, edge_pos.shape[0], num_subcarriers)
