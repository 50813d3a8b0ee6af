"""Every command the docs and file headers show names what exists: the repository files and scripts they mention,
the `tandem` commands and actions they run, and the `make` targets. Read from the text, nothing run."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from harness.paths import REPO
from tandem.cli import build_parser
from tandem.commands import subcommands


def repo_files(*patterns: str) -> list[str]:
    return sorted(str(path.relative_to(REPO)) for pattern in patterns for path in REPO.glob(pattern))


# Where a reader finds commands: the docs, and the comment headers of the files an operator runs.
DOCS = ["README.md", "deploy/README.md", "fuzz/README.md", *repo_files("docs/**/*.md")]
HEADERS = ["docker-compose.yml", "Makefile", ".ci/run", *repo_files("scripts/*.sh", "deploy/*.sh", "bench/*.py")]
SOURCE_DIRS = ("bench", "configs", "controller", "deploy", "device_client", "docs", "edge_server", "fuzz", "harness",
               "linkemu", "policies", "profiles", "proto", "scripts", "tandem", "testbed", "tests", "toolbox")
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(SOURCE_DIRS)})/[\w./-]*\w\.(?:py|sh|ya?ml|md|json|txt|proto|toml|png))"
                  r"(?![\w*<{])")
TANDEM = re.compile(r"(?:^|[\s`(|;&])(?:\.venv/bin/)?tandem ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)")
MAKE = re.compile(r"(?:`|^\s*)make ([a-z][a-z-]*)", re.M)  # in code: `make x`, or a line of a code block


def header(path: Path) -> str:
    """The comments or docstring a file opens with."""
    text = path.read_text()
    if path.suffix == ".py":
        match = re.match(r'\s*(?:#.*\n)*\s*"""(.*?)"""', text, re.S)
        return match.group(1) if match else ""
    return "\n".join(line for line in text.splitlines()[:40] if line.lstrip().startswith("#"))


def code(text: str) -> str:
    """The code a text shows: its fenced blocks and `inline spans` (prose says "make a" and means no target)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    return "\n".join(blocks + [f"`{span}`" for span in re.findall(r"`([^`\n]+)`", text)])


@cache
def texts() -> dict[str, str]:
    """Each doc whole and each file's header, read once for every test."""
    return {name: (REPO / name).read_text() for name in DOCS} | {name: header(REPO / name) for name in HEADERS}


@pytest.mark.parametrize("name", [*DOCS, *HEADERS])
def test_the_files_and_scripts_a_text_names_exist(name):
    here = (REPO / name).parent  # a doc may link relative to its own folder (docs/testbed/latency.png)
    missing = sorted({path for path in PATH.findall(texts()[name])
                      if "NAME" not in path and not (REPO / path).exists() and not (here / path).exists()})
    assert not missing, f"{name} names files that do not exist: {missing}"


@pytest.mark.parametrize("name", [*DOCS, *HEADERS])
def test_the_tandem_commands_a_text_runs_exist(name):
    commands = subcommands(build_parser())
    unknown = set()
    for words in TANDEM.findall(texts()[name]):
        command, _, action = words.partition(" ")
        if command not in commands:
            unknown.add(command)
        elif (actions := subcommands(commands[command])) and action and action not in actions:
            unknown.add(words)
    assert not unknown, f"{name} runs `tandem` commands that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("name", [*DOCS, *HEADERS])
def test_the_make_targets_a_text_runs_exist(name):
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    text = texts()[name]
    unknown = sorted(set(MAKE.findall(code(text) if name.endswith(".md") else text)) - targets)
    assert not unknown, f"{name} runs make targets that do not exist: {unknown}"


def test_the_checks_read_what_they_claim_to_read():
    """The patterns find the README's commands and files, and a name that does not exist is caught."""
    readme = texts()["README.md"]
    assert len(TANDEM.findall(readme)) > 10 and len(PATH.findall(readme)) > 10 and MAKE.findall(code(readme))
    assert PATH.findall("`bash deploy/compose-trace.sh`") == ["deploy/compose-trace.sh"]
    assert not (REPO / "deploy/compose-trace.sh").exists()
