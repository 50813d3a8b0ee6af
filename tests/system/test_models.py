"""Model preparation: user models go through the same checks; a draft with another tokenizer is refused."""

from __future__ import annotations

import shutil

import pytest

from tandem.models import ModelError, load_prepared
from toolbox.models import TokenizerMismatch, gguf_tokens, prepare_models

QUIET = dict(progress=lambda message: None)


def write_vocab_gguf(path, tokens: list[str]) -> None:
    """A GGUF holding only a tokenizer: enough for the tokenizer check (not a loadable model)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_prepared_models_verify(prepared):
    again = load_prepared(prepared.model_dir, verify=True)
    assert again.draft_gguf.is_file() and (again.target_hf / "config.json").is_file()
    assert again.vocab_size == 49152


def test_draft_with_other_tokenizer_is_refused(prepared, tmp_path):
    tokens = gguf_tokens(prepared.draft_gguf)
    tokens[100] = "something-else"
    foreign = tmp_path / "foreign.gguf"
    write_vocab_gguf(foreign, tokens)
    with pytest.raises(TokenizerMismatch, match="token 100 is 'something-else'"):
        prepare_models(tmp_path / "data", target_hf=prepared.target_hf, draft_gguf=foreign, **QUIET)


def test_draft_with_other_vocabulary_size_is_refused(prepared, tmp_path):
    small = tmp_path / "small.gguf"
    write_vocab_gguf(small, ["a", "b", "c"])
    with pytest.raises(TokenizerMismatch, match="has 3 tokens"):
        prepare_models(tmp_path / "data", target_hf=prepared.target_hf, draft_gguf=small, **QUIET)


def test_user_supplied_models_are_used_in_place(prepared, tmp_path):
    mine = tmp_path / "my-draft.gguf"
    shutil.copyfile(prepared.draft_gguf, mine)
    result = prepare_models(tmp_path / "data", target_hf=prepared.target_hf, draft_gguf=mine, **QUIET)
    assert result.draft_gguf == mine.resolve() and result.target_hf == prepared.target_hf.resolve()
    # Idempotent: a second call only verifies checksums.
    messages = []
    prepare_models(tmp_path / "data", target_hf=prepared.target_hf, draft_gguf=mine, progress=messages.append)
    assert any("already prepared" in m for m in messages)
    # A changed file is caught by its checksum.
    with open(mine, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(ModelError, match="does not match its checksum"):
        load_prepared(tmp_path / "data" / "models" / "smollm2-135m", verify=True)


def test_not_a_gguf_is_refused(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF file"):
        prepare_models(tmp_path / "data", source_gguf=bogus, **QUIET)


def test_missing_manifest_says_what_to_run(tmp_path):
    with pytest.raises(ModelError, match="tandem models prepare"):
        load_prepared(tmp_path)
