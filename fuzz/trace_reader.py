"""Fuzz the channel-trace reader: every consumer (link emulator, twin, plots) reads traces through ``load_trace``,
which must turn any file into a consistent trace or a ``TraceError`` naming the problem (docs/traces.md).

Mode 0 writes the payload as the file (the seeds are real traces, compressed and not, so mutations reach the zip
and .npy layers).  Mode 1 starts from a valid tiny trace and, driven by the payload, edits what the zip layer would
otherwise hide behind its checksums: metadata fields (any JSON value, NaN and infinities included, or the whole
text), and arrays (dropped, added, reshaped, retyped, a value replaced by NaN, an infinity or a huge number).

    python fuzz/trace_reader.py [libFuzzer args]     python fuzz/trace_reader.py --write-seeds DIR
"""

from __future__ import annotations

import io
import json
import math

import atheris
import numpy as np

from common import edgy_float, edited_json, main, rejected, scratch_file

with atheris.instrument_imports(include=["toolbox.traces", "zipfile", "json"]):
    from tandem.trace_format import (ARRAYS, DIRECTIONS, FORMAT_NAME, ChannelTrace, TraceError, TraceMetadata,
                                      load_trace, save_trace)
    from toolbox.traces.synthetic import synthetic_trace

BASE = synthetic_trace(np.array([[[1.5, 0.0], [2.0, 3.0]], [[0.5, 4.0], [0.0, 1.0]]]),
                       np.array([[[1.0, 2.0], [0.0, 0.5]], [[3.0, 0.0], [1.0, 2.5]]]), slot_ms=50.0)  # T=2, U=2, E=2
# Metadata keys in the order a payload picks them; the identity keys last, since a short payload picks the first
# and most of what follows a wrong format or version is never read.
KEYS_TO_EDIT = [*(key for key in TraceMetadata.model_fields if key not in ("format", "version")), "format", "version"]
WORDS = (*DIRECTIONS, FORMAT_NAME)
DTYPES = ("float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64", "U3", "S2", "V4", "O")


def loaded(content: bytes) -> None:
    """The reader's verdict on a file holding ``content``; an accepted trace must be finite throughout."""
    with rejected(TraceError), scratch_file("trace.npz", content) as path:
        trace = load_trace(path)
        trace.check()
        assert all(math.isfinite(value) for value in numbers(trace.metadata.model_dump())), trace.metadata


def numbers(value: object) -> list[float]:
    """Every number in a (nested) metadata dump."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def edited_array(data: atheris.FuzzedDataProvider, array: np.ndarray) -> np.ndarray | None:
    """One of BASE's arrays dropped (None), reshaped, retyped or with one value replaced."""
    action = data.ConsumeIntInRange(0, 4)
    if action == 0:
        return None
    if action == 1:
        shape = [data.ConsumeIntInRange(0, 4) for _ in range(data.ConsumeIntInRange(0, 5))]
        return np.resize(array, shape)
    if action == 2:
        with np.errstate(all="ignore"):
            return array.astype(data.PickValueInList(list(DTYPES)))
    if array.dtype.kind not in "fiub":
        return array
    edited = array.astype(np.float64 if action == 3 else np.float32)  # a value no integer array could hold
    if edited.size:
        with np.errstate(invalid="ignore", over="ignore"):
            edited.flat[data.ConsumeIntInRange(0, edited.size - 1)] = edgy_float(data)
    return edited


def built(payload: bytes) -> bytes:
    """A trace file made from the valid BASE with the edits the payload asks for (uncompressed, checksums right)."""
    data = atheris.FuzzedDataProvider(payload)
    metadata = json.loads(BASE.metadata.model_dump_json())
    text = edited_json(data, {key: metadata[key] for key in KEYS_TO_EDIT}, WORDS)
    arrays: dict[str, np.ndarray] = {name: getattr(BASE, name) for name in ARRAYS}
    for _ in range(data.ConsumeIntInRange(0, 3)):
        name = data.PickValueInList([*ARRAYS, "extra"])
        edited = edited_array(data, getattr(BASE, name) if name in ARRAYS else BASE.se)  # edits don't compound
        if edited is None:
            arrays.pop(name, None)
        else:
            arrays[name] = edited
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, metadata=np.array(text))  # may pickle an object array: the reader must refuse it
    return buffer.getvalue()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    loaded(built(data[1:]) if data[0] % 2 else data[1:])


def trace_file(trace: ChannelTrace, compressed: bool) -> bytes:
    """The bytes save_trace writes (compressed), or the same archive stored uncompressed."""
    if compressed:
        with scratch_file("seed.npz", b"") as path:
            save_trace(trace, path)
            return path.read_bytes()
    buffer = io.BytesIO()
    np.savez(buffer, metadata=np.array(trace.metadata.model_dump_json()), **{name: getattr(trace, name)
                                                                           for name in ARRAYS})
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    """BASE as save_trace writes it, uncompressed, and one of its arrays alone (.npy); edits of it (mode 1)."""
    lone_array = io.BytesIO()
    np.save(lone_array, BASE.se)
    found = {"raw-saved": bytes([0]) + trace_file(BASE, True), "raw-stored": bytes([0]) + trace_file(BASE, False),
             "raw-npy": bytes([0]) + lone_array.getvalue()}
    found.update({f"built-{i}": bytes([1]) + bytes((i * 37 + k * 11) % 256 for k in range(48)) for i in range(4)})
    return found


if __name__ == "__main__":
    main(test_one_input, seeds)
