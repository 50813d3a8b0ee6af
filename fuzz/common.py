"""What every atheris harness in fuzz/ shares: the expected-rejection rule, a scratch file, edgy numbers, main().

The rule the harnesses enforce: a reader or validator given bad input must refuse it with the error type it
documents (and a message saying why).  Such rejections are fine; any other exception escapes ``rejected`` and
atheris reports it as a crash, with the input that caused it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import atheris

# Floats that sit on the validators' boundaries (NaN, infinities, denormals, 0 and 1 and just past them): random
# floats almost never hit them, so the structured harnesses pick one of these about half of the time.
EDGE_FLOATS = (math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
               1.0, math.nextafter(1.0, 2.0), math.nextafter(1.0, 0.0), 1.0 + 1e-9, 0.5, 1e-3, 1e-9, 1e308, -1.0,
               3.4028234663852886e38, 1.401298464324817e-45)
EDGE_INTS = (0, 1, 2, 63, 64, 65, 2047, 2048, 2049, 49151, 49152, 1 << 31, (1 << 32) - 1, (1 << 63), (1 << 64) - 1)


@contextlib.contextmanager
def rejected(*expected: type[BaseException]) -> Iterator[None]:
    """Let the documented rejections of bad input pass, provided they say what was wrong; anything else escapes."""
    try:
        yield
    except expected as error:
        if not str(error).strip():
            raise AssertionError(f"{type(error).__name__} raised without a message") from error


def edgy_float(data: atheris.FuzzedDataProvider) -> float:
    """A boundary float half of the time, else any float the provider makes (NaN and infinities included)."""
    return data.PickValueInList(list(EDGE_FLOATS)) if data.ConsumeBool() else data.ConsumeFloat()


def edgy_uint(data: atheris.FuzzedDataProvider, bits: int = 32) -> int:
    """An unsigned int of ``bits`` bits, a boundary value (context length, vocabulary, word limits) half the time."""
    if data.ConsumeBool():
        return data.PickValueInList([value for value in EDGE_INTS if value < 1 << bits])
    return data.ConsumeIntInRange(0, (1 << bits) - 1)


def json_value(data: atheris.FuzzedDataProvider, words: Sequence[str] = (), depth: int = 0) -> object:
    """Any JSON value, biased to the ones validators trip on: numbers at their boundaries mostly (most fields of
    the files read are numbers), and ``words``, the strings the reader looks for."""
    kind = data.ConsumeIntInRange(0, 9 if depth < 2 else 6)
    if kind <= 2:
        return edgy_float(data)
    if kind == 3:
        return data.PickValueInList(list(EDGE_INTS)) * (-1 if data.ConsumeBool() else 1)
    if kind == 4:
        return data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 12))
    if kind == 5:
        return data.PickValueInList([None, True, False, "", *words])
    if kind == 6:
        return data.ConsumeInt(data.ConsumeIntInRange(1, 16))
    if kind in (7, 8):
        return [json_value(data, words, depth + 1) for _ in range(data.ConsumeIntInRange(0, 3))]
    return {data.ConsumeUnicodeNoSurrogates(4): json_value(data, words, depth + 1)
            for _ in range(data.ConsumeIntInRange(0, 3))}


def edited_json(data: atheris.FuzzedDataProvider, document: dict[str, object], words: Sequence[str] = ()) -> str:
    """``document`` as JSON text, with up to three of its keys (a short payload picks the first) or a new one
    removed or given any value; now and then any text instead: a piece of text repeated up to 5000 times spells
    what short inputs cannot (brackets nested too deeply, numbers of thousands of digits)."""
    document = dict(document)
    for _ in range(data.ConsumeIntInRange(0, 3)):
        key = data.PickValueInList([*document, "extra"])
        if data.ConsumeProbability() < 0.2:
            document.pop(key, None)
        else:
            document[key] = json_value(data, words)
    if data.ConsumeProbability() < 0.9:
        return json.dumps(document)
    return data.ConsumeUnicodeNoSurrogates(16) * data.ConsumeIntInRange(1, 5000) + data.ConsumeUnicodeNoSurrogates(16)


SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@contextlib.contextmanager
def scratch_file(name: str, content: bytes) -> Iterator[Path]:
    """``content`` in a file of that (relative) name, in a folder of this process removed again after the run:
    libFuzzer ends the process without running Python's exit handlers, so nothing may outlive a run."""
    folder = SCRATCH / f"tandem-fuzz-{os.getpid()}"
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dispatch(data: bytes, raw_modes: Sequence[Callable[[bytes], None]],
             built_modes: Sequence[Callable[[atheris.FuzzedDataProvider], None]]) -> None:
    """The first byte picks a mode: raw ones get the rest as bytes, built ones a FuzzedDataProvider over it."""
    if not data:
        return
    mode, payload = data[0] % (len(raw_modes) + len(built_modes)), data[1:]
    if mode < len(raw_modes):
        raw_modes[mode](payload)
    else:
        built_modes[mode - len(raw_modes)](atheris.FuzzedDataProvider(payload))


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], dict[str, bytes]]) -> None:
    """Fuzz ``test_one_input`` with libFuzzer's arguments from the command line; or, given ``--write-seeds DIR``,
    write the harness's seed inputs there (how fuzz/corpus/<target>/ was made)."""
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        folder = Path(sys.argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in seeds().items():
            (folder / name).write_bytes(content)
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
