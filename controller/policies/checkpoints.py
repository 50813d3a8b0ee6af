"""Learned-policy checkpoints: found by name in one policy directory, read without running any code from them.

A checkpoint is a folder ``<policy_dir>/<name>/`` holding

    tandem-policy.json    what it is: format, observation encoding, user slots, the network's width, how it was
                          trained
    actor.safetensors     the actor's weights (safetensors: tensors and nothing else, no pickle)

The network class is Tandem's own (``set_network.SetPolicyNetwork``, the module RLlib trains layer for layer),
built from the sizes in the JSON and then filled with the tensors; nothing in the folder is ever executed.  RLlib's
own checkpoints (``RLModule.from_checkpoint``) unpickle ``class_and_ctor_args.pkl`` and ``module_state.pkl``: a
folder with a crafted pickle would run code inside whatever loads it, so they are never read here — training
exports the actor into this format (``set_module.export_actor``).

Names, not paths: the controller loads checkpoints only from its configured ``policy_dir``, by a name that is one
folder in it (``POLICY_NAME``); the name is resolved and must stay inside the directory (no ``..``, no symlink out
of it).  A name refused there gets one answer, that no usable checkpoint has that name — never which paths exist;
a folder found in the directory is refused with the reason (which of its two files is missing or wrong).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from controller.policies.draft_agent import (CHOICES, EDGE_FEATURES, ENCODING, ENCODING_VERSION, USER_FEATURES,
                                             AgentSpec)
from controller.policies.set_network import SetNetworkSpec

METADATA = "tandem-policy.json"
WEIGHTS = "actor.safetensors"
FORMAT = "tandem-policy"
FORMAT_VERSION = 3  # 1: RLlib's pickled RLModule checkpoint; 2: an MLP actor of shares (neither read any more)
POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHIPPED_POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
MAX_LAYER_WIDTH = 4096
MAX_METADATA_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 256 << 20


class CheckpointError(ValueError):
    """A policy checkpoint that cannot be used, with the reason."""


def policy_folder(policy_dir: Path, name: str) -> Path:
    """The checkpoint folder called ``name`` in ``policy_dir``; CheckpointError (saying nothing of the file system)
    for a name that is not a plain folder name or that leads outside the directory."""
    refusal = CheckpointError(f"no usable policy checkpoint named {name[:64]!r} in the policy directory")
    if not isinstance(name, str) or not POLICY_NAME.fullmatch(name) or ".." in name:
        raise refusal
    try:
        root = Path(policy_dir).resolve(strict=True)
        folder = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, unreadable, a symlink loop
        raise refusal from None
    if folder.parent != root or not folder.is_dir():
        raise refusal
    return folder


def network_spec(hidden: int) -> SetNetworkSpec:
    """The network of this encoding with ``hidden`` units per layer."""
    return SetNetworkSpec(USER_FEATURES, EDGE_FEATURES, hidden, CHOICES)


def read_metadata(folder: Path) -> tuple[AgentSpec, SetNetworkSpec]:
    """The agent's and the network's shape from ``tandem-policy.json`` (CheckpointError naming the problem)."""
    path = Path(folder) / METADATA
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_METADATA_BYTES + 1)
    except OSError as error:
        raise CheckpointError(f"not a learned-policy folder: cannot read {METADATA} ({error.strerror})") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise CheckpointError(f"{METADATA} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deeply
        raise CheckpointError(f"{METADATA} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{METADATA} is not a tandem policy description")
    version, max_users = data.get("encoding_version"), data.get("max_users")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{METADATA}: checkpoint format {data.get('format_version')!r}; this version reads "
                              f"format {FORMAT_VERSION} (weights in {WEIGHTS}): train again or export it")
    if data.get("encoding") != ENCODING or not _is_int(version) or version != ENCODING_VERSION:
        raise CheckpointError(f"{METADATA}: trained with observation encoding {data.get('encoding')!r} version "
                              f"{version!r}; this version reads {ENCODING!r} version {ENCODING_VERSION}: train again "
                              f"(tandem train)")
    if not _is_int(max_users):
        raise CheckpointError(f"{METADATA}: max_users must be an integer, got {max_users!r}")
    try:
        spec = AgentSpec(max_users)
    except ValueError as error:
        raise CheckpointError(f"{METADATA}: bad max_users ({error})") from None
    hidden = data.get("hidden")
    if not (_is_int(hidden) and 1 <= hidden <= MAX_LAYER_WIDTH):
        raise CheckpointError(f"{METADATA}: hidden must be a layer width in [1, {MAX_LAYER_WIDTH}], got {hidden!r}")
    return spec, network_spec(hidden)


def write_checkpoint(folder: Path, spec: AgentSpec, network: SetNetworkSpec, tensors: dict[str, np.ndarray],
                     training: dict) -> None:
    """Write a checkpoint folder: the description and the weights."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()},
              str(folder / WEIGHTS))
    (folder / METADATA).write_text(json.dumps({
        "format": FORMAT, "format_version": FORMAT_VERSION, "encoding": ENCODING, "encoding_version": ENCODING_VERSION,
        "max_users": spec.max_users, "hidden": network.hidden, "training": training}, indent=2) + "\n")


def read_weights(folder: Path, network: SetNetworkSpec) -> dict[str, np.ndarray]:
    """The actor's tensors, each of the shape the network needs (CheckpointError otherwise)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(folder) / WEIGHTS
    try:
        if path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise CheckpointError(f"{WEIGHTS} is larger than {MAX_WEIGHTS_BYTES >> 20} MiB")
        tensors = load_file(str(path))
    except OSError as error:
        raise CheckpointError(f"cannot read {WEIGHTS} ({error.strerror})") from None
    except (SafetensorError, ValueError, TypeError, AttributeError) as error:  # any header or dtype it cannot map
        raise CheckpointError(f"{WEIGHTS} is not a safetensors file of float32 tensors: {error}") from None
    return check_tensors(network, tensors)


def check_tensors(network: SetNetworkSpec, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensors`` when they are exactly the network's, each finite and of its shape (CheckpointError otherwise)."""
    expected = network.tensor_shapes()
    if set(tensors) != set(expected):
        raise CheckpointError(f"the actor's tensors are {sorted(tensors)[:8]}, the network needs {sorted(expected)}")
    for name, shape in expected.items():
        tensor = tensors[name]
        if tensor.dtype != np.float32 or tensor.shape != shape or not np.all(np.isfinite(tensor)):
            raise CheckpointError(f"{name} must be finite float32 of shape {shape}, got {tensor.dtype} {tensor.shape}")
    return tensors


def _is_int(value: object) -> bool:
    """An integer as JSON gives it: not a float (24.9, Infinity), a string or a bool (true == 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
