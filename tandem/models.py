"""Prepared models as the engines read them: the data directory, the checksummed manifest that
`tandem models prepare` writes (toolbox/models.py), and the tokenizer fingerprint that ties a draft to its target.

A draft and a target must share one tokenizer: both are fingerprinted (sha256 of the token strings by id), and an
edge and a device that disagree refuse to work together.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ValidationError

MANIFEST_VERSION = 1


MANIFEST_NAME = "manifest.json"


DEFAULT_MODEL_NAME = "smollm2-135m"


class ModelError(Exception):
    """A model file or directory cannot be used; the message says why."""


class Manifest(BaseModel):
    version: int
    name: str
    source: str
    source_sha256: str
    draft_quant: str
    tokenizer_fingerprint: str
    vocab_size: int
    files: dict[str, str]  # path (relative to the model dir, or absolute for user files) -> sha256


@dataclass(frozen=True)
class PreparedModels:
    model_dir: Path
    hf_checkpoint: Path | None  # None when prepared with gguf_only
    target_gguf: Path
    draft_gguf: Path
    tokenizer_fingerprint: str
    vocab_size: int

    @property
    def target_hf(self) -> Path:
        """The vLLM target; a ModelError (which the CLIs report) when only the GGUFs were prepared."""
        if self.hf_checkpoint is None:
            raise ModelError(
                f"{self.model_dir} has no Hugging Face target (prepared with --gguf-only); run `tandem models "
                "prepare` with torch and transformers installed, or use the llama.cpp engine"
            )
        return self.hf_checkpoint


def default_data_dir() -> Path:
    """$TANDEM_DATA_DIR, else the user's cache dir (XDG_CACHE_HOME or ~/.cache)/tandem."""
    if env := os.environ.get("TANDEM_DATA_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tandem"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_tokens(tokens: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(token.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def hf_tokens(model_dir: Path) -> list[str]:
    """The token strings of a Hugging Face checkpoint's tokenizer, by id, over the model's vocabulary."""
    config = load_hf_config(model_dir)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as error:
        raise ModelError(f"{model_dir} has no usable tokenizer: {error}") from None
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(config["vocab_size"])))]


def load_hf_config(model_dir: Path) -> dict:
    import json

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{model_dir} is not a Hugging Face checkpoint (no config.json)")
    config = json.loads(config_path.read_text())
    if "vocab_size" not in config:
        raise ModelError(f"{config_path} has no vocab_size")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise ModelError(f"{model_dir} has no weights (*.safetensors or *.bin)")
    return config


def load_prepared(model_dir: Path, verify: bool = False) -> PreparedModels:
    """Read a model directory's manifest; with ``verify`` recompute every checksum."""
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelError(f"no prepared models in {model_dir}; run `tandem models prepare` first")
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text())
    except ValidationError as error:
        raise ModelError(f"{manifest_path} is not a valid manifest: {error}") from None
    if manifest.version != MANIFEST_VERSION:
        raise ModelError(f"{manifest_path} has version {manifest.version}, expected {MANIFEST_VERSION}")
    for key, digest in manifest.files.items():
        path = _manifest_path(model_dir, key)
        if not path.is_file():
            raise ModelError(f"{path} listed in {manifest_path} is missing; run `tandem models prepare` again")
        if verify and sha256_file(path) != digest:
            raise ModelError(f"{path} does not match its checksum; run `tandem models prepare --force`")
    drafts = [k for k in manifest.files if k.endswith(".gguf") and Path(k).name != "target.gguf"]
    hf_dirs = {str(Path(k).parent) for k in manifest.files if Path(k).name == "config.json"}
    return PreparedModels(
        model_dir=model_dir,
        hf_checkpoint=_manifest_path(model_dir, hf_dirs.pop()) if hf_dirs else None,
        target_gguf=model_dir / "target.gguf",
        draft_gguf=_manifest_path(model_dir, drafts[0]),
        tokenizer_fingerprint=manifest.tokenizer_fingerprint,
        vocab_size=manifest.vocab_size,
    )


def _manifest_path(model_dir: Path, key: str) -> Path:
    path = Path(key)
    return path if path.is_absolute() else model_dir / path
