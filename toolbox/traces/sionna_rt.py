"""Channel gains from Sionna RT ray tracing in one of the scenes shipped in the sionna-rt wheel.

Ray tracing is deterministic in the geometry, so traces are time-consistent by construction: a user's channel in
consecutive slots differs only as much as its position does.  Every (slot, user) position becomes one receiver;
receivers are traced in batches against all edges (transmitters).  On the CPU, Dr.Jit needs a newer LLVM than
Debian 12's default (``libllvm19``, installed by ``scripts/setup.sh``): the newest installed libLLVM is found and
handed to Dr.Jit through ``DRJIT_LIBLLVM_PATH``, and an old or missing one is refused with a one-line reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

RECEIVERS_PER_BATCH = 1024
MAX_DEPTH = 3  # reflections + diffractions per path: enough for street canyons, bounded cost on the CPU
SAMPLES_PER_SOURCE = 10**5
# Dr.Jit's CPU backend emits intrinsics (e.g. llvm.maximum on f32) that LLVM 16 and older cannot lower on x86:
# they abort the process with "LLVM ERROR: Cannot select ... fmaximum" instead of raising.  Refuse them up front.
MIN_LLVM_MAJOR = 17
LLVM_INSTALL_HINT = "sudo apt-get install libllvm19"
LLVM_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                     "/usr/local/lib", *(f"/usr/lib/llvm-{major}/lib" for major in range(30, MIN_LLVM_MAJOR - 1, -1)))


class RayTracingUnavailable(RuntimeError):
    """Sionna RT cannot run here (no suitable LLVM for Dr.Jit's CPU backend)."""


def llvm_major_version(library: Path) -> int | None:
    """The major version of a libLLVM shared library, or None when it is not a loadable LLVM.

    Read from the (resolved) file name, as distributions name them (libLLVM-14.so.1, libLLVM.so.19.1); only a file
    named otherwise is loaded to ask LLVMGetVersion (LLVM >= 16), so that scanning never loads several LLVMs."""
    name = library.resolve().name if library.exists() else library.name
    if match := re.fullmatch(r"libLLVM(?:-(\d+)[.\w]*\.so(?:\.\d+)*|\.so\.(\d+)(?:\.\d+)*)", name):
        return int(match.group(1) or match.group(2))
    import ctypes

    try:
        get_version = getattr(ctypes.CDLL(str(library)), "LLVMGetVersion", None)
    except OSError:
        return None
    if get_version is None:
        return None
    major, minor, patch = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    get_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return int(major.value)


def find_llvm() -> Path:
    """A libLLVM that Dr.Jit can use: $DRJIT_LIBLLVM_PATH when set (and checked), else the newest one installed.
    Raises RayTracingUnavailable with a one-line reason and the command that fixes it."""
    requested = os.environ.get("DRJIT_LIBLLVM_PATH")
    if requested:
        major = llvm_major_version(Path(requested))
        if major is None or major < MIN_LLVM_MAJOR:
            what = "not a loadable LLVM library" if major is None else f"LLVM {major}"
            raise RayTracingUnavailable(f"DRJIT_LIBLLVM_PATH={requested} is {what}; Sionna RT on the CPU needs LLVM >= "
                                        f"{MIN_LLVM_MAJOR} (install: {LLVM_INSTALL_HINT})")
        return Path(requested)
    found: dict[Path, int] = {}
    for directory in map(Path, LLVM_LIBRARY_DIRS):
        for library in sorted(directory.glob("libLLVM*.so*")) if directory.is_dir() else ():
            if (major := llvm_major_version(library)) is not None:
                found[library.resolve()] = major
    usable = [library for library, major in found.items() if major >= MIN_LLVM_MAJOR]
    if not usable:
        versions = ", ".join(str(major) for major in sorted(set(found.values()))) or "none"
        raise RayTracingUnavailable(
            f"Sionna RT on the CPU needs LLVM >= {MIN_LLVM_MAJOR} (found: {versions}); install it with "
            f"`{LLVM_INSTALL_HINT}` or point DRJIT_LIBLLVM_PATH at a newer libLLVM.so")
    return max(usable, key=lambda library: found[library])


class RayTracedScene:
    """A scene shipped in the sionna-rt wheel, loaded once: its default user area, then ray-traced gains."""

    def __init__(self, name: str) -> None:
        os.environ["DRJIT_LIBLLVM_PATH"] = str(find_llvm())  # before Dr.Jit loads: it reads the variable once
        try:
            import sionna.rt as rt
        except (ImportError, RuntimeError) as error:
            raise RayTracingUnavailable(
                f"Sionna RT does not load: {error}"
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
