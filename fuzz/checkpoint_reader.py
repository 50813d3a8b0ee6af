"""Fuzz the learned policy's checkpoint check: ``checkpoints.read_metadata`` reads a policy folder's tandem-policy.json
and decides, before torch or Ray is touched, whether the folder was written for this observation encoding and
with how many user slots.  A bad file must be refused with ``CheckpointError``; an accepted one must have said
exactly what the spec holds (the format, this encoding version, an integer max_users in range).

Mode 0 writes the payload as the file; mode 1 edits the shipped policy's file field by field (any JSON value,
NaN and infinities included), or replaces it with any text.

    python fuzz/checkpoint_reader.py [libFuzzer args]     python fuzz/checkpoint_reader.py --write-seeds DIR
"""

from __future__ import annotations

import json

import atheris

from common import edited_json, main, rejected, scratch_file

with atheris.instrument_imports(include=["controller.policies.checkpoints", "controller.policies.draft_agent",
                                         "json"]):
    from controller.policies.checkpoints import (FORMAT_VERSION, METADATA, SHIPPED_POLICY_DIR, CheckpointError,
                                                 read_metadata)
    from controller.policies.draft_agent import ENCODING, ENCODING_VERSION
    from controller.policies.mappo import DEFAULT_CHECKPOINT

SHIPPED = (SHIPPED_POLICY_DIR / DEFAULT_CHECKPOINT / METADATA).read_bytes()
SHIPPED_FIELDS = json.loads(SHIPPED)
# A short payload picks the first.
KEYS_TO_EDIT = ["max_users", "encoding_version", "hidden", "format_version", "training", "format", "encoding"]
WORDS = ("tandem-policy", "draft-residual")


def checked(content: bytes) -> None:
    with rejected(CheckpointError), scratch_file(f"policy/{METADATA}", content) as path:
        spec, network = read_metadata(path.parent)
        data = json.loads(content)
        assert data["format"] == "tandem-policy" and data["format_version"] == FORMAT_VERSION, data
        assert type(data["encoding_version"]) is int and data["encoding_version"] == ENCODING_VERSION, data
        assert data["encoding"] == ENCODING, data
        assert type(data["max_users"]) is int and data["max_users"] == spec.max_users, (data, spec)
        assert type(data["hidden"]) is int and network.hidden == data["hidden"], data


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2:
        fields = {key: SHIPPED_FIELDS[key] for key in KEYS_TO_EDIT}
        content = edited_json(atheris.FuzzedDataProvider(data[1:]), fields, WORDS).encode()
    else:
        content = data[1:]
    checked(content)


def seeds() -> dict[str, bytes]:
    """The shipped policy's file as it is, and edits of it from a few payloads."""
    found = {"raw-shipped": bytes([0]) + SHIPPED}
    found.update({f"built-{i}": bytes([1]) + bytes((i * 53 + k * 7) % 256 for k in range(32)) for i in range(4)})
    return found


if __name__ == "__main__":
    main(test_one_input, seeds)
