"""tandem.config_files: one reader for every config, profile and scenario file, with one-line reasons."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from tandem.config_files import load_config, load_model_file


class Tls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert: str | None = None
    name: str = "edge"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = 1
    tls: Tls = Tls()


class Refused(ValueError):
    pass


def test_flags_go_on_top_of_the_file_and_fill_a_section_left_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("port: 7\ntls:\n")
    config = load_config(Config, path, {"port": None, "tls.cert": "c.pem"}, Refused)
    assert config.port == 7 and config.tls == Tls(cert="c.pem")
    assert load_config(Config, None, {"port": 9}, Refused).port == 9


@pytest.mark.parametrize("text, flags, reason", [
    ("tls: 3\n", {"tls.cert": "c.pem"}, "tls: must be a mapping (--cert sets one of its fields)"),
    ("[1, 2]\n", {}, "must hold a mapping"),
    ("port: [\n", {}, "cannot read config file"),
    ("port: x\n", {}, "invalid configuration: port: Input should be a valid integer"),
    ("", {"tls.bogus": 1}, "invalid configuration: tls.bogus: Extra inputs are not permitted"),
])
def test_a_bad_file_or_flag_is_refused_with_the_callers_error_and_one_line(tmp_path, text, flags, reason):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(Refused) as refused:
        load_config(Config, path, flags, Refused)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_model_file_names_what_it_is_and_where(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("port: -x\n")
    with pytest.raises(Refused, match=rf"invalid profile {path}: port"):
        load_model_file(Config, path, "profile", Refused)
    with pytest.raises(Refused, match="cannot read profile"):
        load_model_file(Config, tmp_path / "missing.yaml", "profile", Refused)
