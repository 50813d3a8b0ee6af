"""Inputs that made a reader fail with something other than its documented error (found by fuzz/, or built after
what a harness found), each refused now with that error and a reason.

Stored fuzzer inputs (fuzz/crashes/<target>/) begin with the harness's mode byte; the file the reader saw is the
rest.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from controller.policies.checkpoints import CheckpointError, read_metadata
from controller.twin.scenario import ScenarioError, load_scenario
from edge_server.config import EdgeConfig
from tandem.cli_support import UsageError
from tandem.config_files import load_config
from tandem.profiles import ProfileError, load_profile
from tandem.trace_format import ARRAYS, TraceError, load_trace
from toolbox.traces.radio_scenario import RadioScenarioError, load_radio_scenario
from toolbox.traces.synthetic import synthetic_trace
from testbed.config import load_testbed_config

CRASHES = Path(__file__).resolve().parents[2] / "fuzz" / "crashes"
TRACE = synthetic_trace(np.array([1.0, 2.0]), np.array([0.5, 0.0]))


def fuzzer_input(target: str, name: str) -> bytes:
    return (CRASHES / target / name).read_bytes()[1:]


def trace_archive(metadata: dict | None = None, metadata_text: str | None = None, **members: bytes) -> bytes:
    """TRACE stored uncompressed, its metadata updated with ``metadata`` or replaced by ``metadata_text``, with
    ``members`` (raw .npy bytes) added."""
    buffer = io.BytesIO()
    text = metadata_text or json.dumps({**json.loads(TRACE.metadata.model_dump_json()), **(metadata or {})})
    np.savez(buffer, metadata=np.array(text), **{name: getattr(TRACE, name) for name in ARRAYS})
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def npy(header: str) -> bytes:
    """A version 1.0 .npy file with this header and no data."""
    encoded = header.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(encoded)) + encoded


def with_member_field(archive: bytes, local_offset: int, central_offset: int, value: int) -> bytes:
    """``archive`` with a 2-byte field of every member set to ``value``, in its local and its central header."""
    patched = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        at = patched.find(signature)
        while at >= 0:
            struct.pack_into("<H", patched, at + offset, value)
            at = patched.find(signature, at + 1)
    return bytes(patched)


TRACE_FILES = {
    # found by fuzz/trace_reader.py: a corrupt deflate stream (zlib.error), a .npy header tokenize chokes on
    "corrupt-deflate": (lambda: fuzzer_input("trace_reader", "deflate-invalid-distance"), "zlib.error: Error -3"),
    "npy-header-token-error": (lambda: fuzzer_input("trace_reader", "npy-header-token-error"), "TokenError"),
    # found by fuzz/trace_reader.py in a CI run: a member named .npy without the .npy magic (numpy returns bytes)
    "member-not-npy": (lambda: fuzzer_input("trace_reader", "member-not-npy"), "not NumPy arrays: "),
    "raw-bytes-member": (lambda: trace_archive(**{"extra.npy": b"not an array"}), "not NumPy arrays: extra"),
    # built after them: the other ways zipfile and numpy's .npy reader fail besides BadZipFile and ValueError
    "lone-npy": (lambda: npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }"), "single NumPy array"),
    "unknown-compression": (lambda: with_member_field(trace_archive(), 8, 10, 99), "NotImplementedError"),
    "encrypted-member": (lambda: with_member_field(trace_archive(), 6, 8, 1), "RuntimeError: File .* is encrypted"),
    "unhashable-npy-header": (lambda: trace_archive(**{"extra.npy": npy("{[1]: 2}")}), "TypeError: unhashable"),
    "huge-npy-header": (lambda: trace_archive(**{"extra.npy": npy(  # MemoryError: 8 PB
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }")}), "not a readable trace file"),
    # found by fuzz/trace_reader.py (metadata-huge-integer), and alike: metadata JSON json.loads raises more for
    "metadata-huge-integer": (lambda: trace_archive(metadata_text='{"format": ' + "1" * 5000 + "}"), "not JSON"),
    "metadata-deep-nesting": (lambda: trace_archive(metadata_text="[" * 5000), "not JSON"),
    # accepted before although the format refuses non-finite values (the harness's invariant)
    "infinite-bandwidth": (lambda: trace_archive({"edge_bandwidth_hz": [float("inf")]}), "positive finite values"),
    "infinite-generation-time": (lambda: trace_archive({"generation_seconds": float("inf")}), "generation_seconds"),
}


@pytest.mark.parametrize("case", sorted(TRACE_FILES))
def test_a_damaged_trace_file_is_refused_with_a_trace_error(case: str, tmp_path: Path) -> None:
    content, reason = TRACE_FILES[case]
    path = tmp_path / "trace.npz"
    path.write_bytes(content())
    with pytest.raises(TraceError, match=reason):
        load_trace(path)


YAML_READERS = {
    "load_config": (lambda path: load_config(EdgeConfig, path, {}, UsageError), UsageError, "cannot read config file"),
    "profile": (load_profile, ProfileError, "cannot read profile"),
    "twin scenario": (load_scenario, ScenarioError, "cannot read scenario"),
    "testbed": (load_testbed_config, UsageError, "cannot read testbed config"),
}
BAD_YAML = {  # what PyYAML's safe loader (or reading the file) raises for each, besides YAMLError
    "not UTF-8": b"name: caf\xe9\n",  # UnicodeDecodeError (fuzz/config_readers.py)
    "timestamp tag": b"a: !!timestamp x\n",  # AttributeError (fuzz/config_readers.py)
    "bool tag": b"a: !!bool x\n",  # KeyError
    "empty int tag": b"a: !!int\n",  # IndexError
    "no such date": b"a: 2001-02-30\n",  # ValueError
    "huge integer": b"a: " + b"1" * 5000 + b"\n",  # ValueError (int conversion limit)
    "deep nesting": b"[" * 5000,  # RecursionError
}


@pytest.mark.parametrize("reader", sorted(YAML_READERS))
@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_an_unreadable_yaml_file_is_refused_with_the_readers_error(reader: str, case: str, tmp_path: Path) -> None:
    read, error, reason = YAML_READERS[reader]
    path = tmp_path / "config.yaml"
    path.write_bytes(BAD_YAML[case])
    with pytest.raises(error, match=reason):
        read(path)


@pytest.mark.parametrize("name, read, error", [
    ("profile-not-utf8", load_profile, ProfileError),
    ("yaml-timestamp-tag", lambda path: load_radio_scenario(path, None), RadioScenarioError),
])
def test_the_config_files_the_fuzzer_found_are_refused(name: str, read, error: type[Exception], tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(fuzzer_input("config_readers", name))
    with pytest.raises(error, match="cannot read"):
        read(path)


def test_a_testbed_config_naming_a_path_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yaml"
    path.write_text('scenario: "twin\\0.yaml"\n')
    with pytest.raises(UsageError, match="null byte"):
        load_testbed_config(path)


POLICY = {"format": "tandem-policy", "format_version": 3, "encoding": "draft-residual", "encoding_version": 1,
          "max_users": 24, "hidden": 64}


@pytest.mark.parametrize("text, reason", [
    # found by fuzz/checkpoint_reader.py
    (json.dumps({**POLICY, "max_users": float("inf")}), "max_users must be an integer"),  # was OverflowError
    (json.dumps({**POLICY, "max_users": 1.0000000000000002}), "max_users must be an integer"),  # was taken as 1
    (json.dumps({**POLICY, "encoding_version": 1.0}), "version 1.0"),  # was taken as 1
    # alike
    (json.dumps({**POLICY, "max_users": "24"}), "max_users must be an integer"),
    (json.dumps({**POLICY, "max_users": True}), "max_users must be an integer"),
    (json.dumps({**POLICY, "encoding_version": True}), "version True"),
    (json.dumps({**POLICY, "encoding": "edge-shares"}), "encoding 'edge-shares'"),  # the old shares actor
    (json.dumps({**POLICY, "max_users": 0}), "max_users must lie in"),
    (json.dumps({**POLICY, "format_version": 1}), "checkpoint format 1"),  # RLlib's pickles: never read
    (json.dumps({**POLICY, "format_version": 2}), "checkpoint format 2"),  # the old MLP actor of shares
    (json.dumps({**POLICY, "hidden": 10**9}), "hidden must be a layer width"),
    (json.dumps({**POLICY, "hidden": 64.0}), "hidden must be a layer width"),
    (json.dumps({**POLICY, "hidden": [64]}), "hidden must be a layer width"),
    ("[" * 5000, "not valid JSON"),  # was RecursionError
])
def test_a_bad_policy_description_is_refused_with_a_checkpoint_error(text: str, reason: str, tmp_path: Path) -> None:
    (tmp_path / "tandem-policy.json").write_text(text)
    with pytest.raises(CheckpointError, match=reason):
        read_metadata(tmp_path)


def test_the_shipped_policy_description_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "tandem-policy.json").write_text(json.dumps(POLICY))
    assert read_metadata(tmp_path)[0].max_users == 24
