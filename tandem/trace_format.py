"""The channel-trace file format (version 1) and its one validating reader.

A trace is a NumPy ``.npz`` archive (no pickled objects) holding a few arrays and one JSON metadata document.
``docs/traces.md`` is the specification; this module is its only implementation, so every consumer (link
emulator, plots, benchmarks, later the controller) reads traces through ``load_trace`` and gets either a trace
whose shapes, units and values are consistent, or a ``TraceError`` saying what is wrong.

Axes: ``D`` directions (0 = downlink edge->device, 1 = uplink device->edge), ``T`` slots, ``U`` users, ``E`` edges.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.config_files import validation_reasons

FORMAT_NAME = "tandem-channel-trace"
FORMAT_VERSION = 1
DIRECTIONS = ("down", "up")  # index 0 and 1 of the leading axis of the per-direction arrays

# name -> (dtype kind, shape as axis letters, unit)
ARRAYS: dict[str, tuple[str, str, str]] = {
    "sinr_db": ("f", "DTUE", "dB (wideband SINR: mean over the sampled subcarriers)"),
    "se": ("f", "DTUE", "bit/s/Hz (Sionna SYS: MCS rate x (1 - TBLER))"),
    "se_shannon": ("f", "DTUE", "bit/s/Hz (mean over subcarriers of log2(1 + SINR))"),
    "mcs": ("i", "DTUE", "MCS index chosen by inner-loop link adaptation (3GPP TS 38.214 table 1)"),
    "path_gain_db": ("f", "TUE", "dB (wideband channel gain incl. path loss, shadowing and fading)"),
    "user_pos": ("f", "TU3", "m (x, y, z)"),
    "edge_pos": ("f", "E3", "m (x, y, z)"),
}


class TraceError(ValueError):
    """A trace file that cannot be used, with the reason."""


class TraceMetadata(BaseModel):
    """What a trace needs to be replayed and reproduced; stored as JSON beside the arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = Field(pattern=f"^{FORMAT_NAME}$")
    version: int
    scenario: str = Field(min_length=1)
    seed: int = Field(ge=0)
    slot_ms: float = Field(gt=0, allow_inf_nan=False)
    num_slots: int = Field(ge=1)
    num_users: int = Field(ge=1)
    num_edges: int = Field(ge=1)
    carrier_hz: float = Field(gt=0, allow_inf_nan=False)
    edge_bandwidth_hz: list[float] = Field(min_length=1)
    edge_tx_power_dbm: float = Field(allow_inf_nan=False)
    user_tx_power_dbm: float = Field(allow_inf_nan=False)
    edge_noise_figure_db: float = Field(ge=0, allow_inf_nan=False)
    user_noise_figure_db: float = Field(ge=0, allow_inf_nan=False)
    uplink_interference_margin_db: float = Field(ge=0, allow_inf_nan=False)
    mobility_epoch_slots: int = Field(ge=1)
    sionna_version: str
    generator: str
    generation_seconds: float = Field(ge=0, allow_inf_nan=False)
    units: dict[str, str]
    directions: list[str]

    def shape(self, axes: str) -> tuple[int, ...]:
        sizes = {"D": len(DIRECTIONS), "T": self.num_slots, "U": self.num_users, "E": self.num_edges, "3": 3}
        return tuple(sizes[axis] for axis in axes)


@dataclass(frozen=True)
class ChannelTrace:
    metadata: TraceMetadata
    sinr_db: np.ndarray
    se: np.ndarray
    se_shannon: np.ndarray
    mcs: np.ndarray
    path_gain_db: np.ndarray
    user_pos: np.ndarray
    edge_pos: np.ndarray

    @property
    def slot_s(self) -> float:
        return self.metadata.slot_ms / 1000.0

    def direction_index(self, direction: str) -> int:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return DIRECTIONS.index(direction)

    def rate_bps(self, direction: str, user: int, edge: int, share: float, slot: int | slice = slice(None)):
        """Rate (bit/s) of one user-edge link at a share of the edge's bandwidth: share x B_e x SE, for every
        slot (an array) or for one slot (a number)."""
        spectral_efficiency = self.se[self.direction_index(direction), slot, user, edge]
        return share * self.metadata.edge_bandwidth_hz[edge] * spectral_efficiency

    def availability(self) -> np.ndarray:
        """[U, E]: the share of slots in which each user-edge link is up (SE > 0) in both directions."""
        return (self.se > 0).all(axis=0).mean(axis=0)

    def most_reliable_pair(self) -> tuple[int, int]:
        """(user, edge) whose link is up in the most slots; ties go to the higher median SE.
        A static association for demos and tests until the controller assigns edges."""
        up = self.availability()
        median = np.median(self.se.min(axis=0), axis=0)
        best = np.lexsort((-median.ravel(), -up.ravel()))[0]
        user, edge = np.unravel_index(best, up.shape)
        return int(user), int(edge)

    def check(self) -> None:
        """Raise TraceError unless arrays and metadata agree; run on every save and load."""
        meta = self.metadata
        if meta.version != FORMAT_VERSION:
            raise TraceError(f"trace format version {meta.version} is not supported (this reader reads "
                             f"version {FORMAT_VERSION}); regenerate it with `tandem traces generate`")
        if list(meta.directions) != list(DIRECTIONS):
            raise TraceError(f"directions must be {list(DIRECTIONS)}, got {meta.directions}")
        if len(meta.edge_bandwidth_hz) != meta.num_edges or not all(0 < b < math.inf for b in meta.edge_bandwidth_hz):
            raise TraceError(f"edge_bandwidth_hz must hold {meta.num_edges} positive finite values")
        for name, (kind, axes, _) in ARRAYS.items():
            array = getattr(self, name)
            if array.dtype.kind != kind:
                raise TraceError(f"array {name!r} has dtype {array.dtype}, expected kind {kind!r}")
            if array.shape != meta.shape(axes):
                raise TraceError(f"array {name!r} has shape {array.shape}, but the metadata says "
                                 f"{meta.shape(axes)} ({axes}); the file is inconsistent")
            if kind == "f" and not np.isfinite(array).all():
                raise TraceError(f"array {name!r} holds NaN or infinite values")
        if (self.se < 0).any() or (self.se_shannon < 0).any():
            raise TraceError("spectral efficiencies must be >= 0")


def save_trace(trace: ChannelTrace, path: Path) -> None:
    trace.check()
    arrays = {name: getattr(trace, name) for name in ARRAYS}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # a file object, so numpy does not append ".npz" to the user's name
        np.savez_compressed(handle, metadata=np.array(trace.metadata.model_dump_json()), **arrays)


def load_trace(path: Path) -> ChannelTrace:
    """Read and validate a trace file; TraceError with the reason when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.lib.npyio.NpzFile):
            with archive:
                contents = {name: archive[name] for name in archive.files}
    except Exception as error:  # noqa: BLE001 - see below
        # zipfile and numpy's .npy reader raise an open set of types for a damaged file, not only BadZipFile and
        # ValueError: zlib.error (a corrupt member), NotImplementedError (an unknown compression method),
        # RuntimeError (a member flagged as encrypted), tokenize.TokenError and TypeError (a garbled .npy header),
        # MemoryError (a header claiming a huge array).  Whatever it is, the file is not a usable trace.
        kind = type(error).__qualname__ if type(error).__module__ == "builtins" else (
            f"{type(error).__module__}.{type(error).__qualname__}")  # zlib.error, not just "error"
        raise TraceError(f"{path} is not a readable trace file (truncated or not a .npz archive: {kind}: {error})"
                         ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # np.load reads a lone .npy array too
        raise TraceError(f"{path} holds a single NumPy array, not a trace (a .npz archive of arrays and metadata)")
    # numpy hands back a member without the .npy magic as its raw bytes, whatever its name
    not_arrays = sorted(name for name, value in contents.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise TraceError(f"{path}: members that are not NumPy arrays: {', '.join(not_arrays)}")
    if "metadata" not in contents:
        raise TraceError(f"{path} has no metadata; it is not a Tandem channel trace")
    try:
        raw = json.loads(str(contents.pop("metadata")))
    except (ValueError, RecursionError) as error:  # not JSON, an integer of over 4300 digits, nested too deeply
        raise TraceError(f"{path}: metadata is not JSON ({error})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise TraceError(f"{path} is not a Tandem channel trace (format is not {FORMAT_NAME!r})")
    if raw.get("version") != FORMAT_VERSION:
        raise TraceError(f"{path}: trace format version {raw.get('version')!r} is not supported (this reader "
                         f"reads version {FORMAT_VERSION}); regenerate it with `tandem traces generate`")
    try:
        metadata = TraceMetadata.model_validate(raw)
    except ValidationError as error:
        raise TraceError(f"{path}: bad metadata: {validation_reasons(error)}") from None
    missing = [name for name in ARRAYS if name not in contents]
    if missing:
        raise TraceError(f"{path}: arrays missing: {', '.join(missing)}")
    extra = sorted(set(contents) - set(ARRAYS))
    if extra:
        raise TraceError(f"{path}: unknown arrays: {', '.join(extra)}")
    trace = ChannelTrace(metadata=metadata, **contents)
    try:
        trace.check()
    except TraceError as error:
        raise TraceError(f"{path}: {error}") from None
    return trace
