"""Coverage-guided fuzzing (atheris, fuzz/) of the edge's message checks, the control plane's share rule and the
trace, config and checkpoint readers, for a bounded time per target.

Each harness runs as its own libFuzzer process from its seed corpus and its past crashes (fuzz/crashes/<target>/,
replayed first), for ``TANDEM_FUZZ_SECONDS`` (default 15) seconds; it must end without a crash, and the number
of inputs it ran goes to the end-of-run report.  New corpus entries and crash inputs land in the test's temporary
folder, never in the repository.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness.figures import REPORT

pytest.importorskip("atheris")

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
BUDGET_MB = 2048  # the fuzzer's own memory, beyond what it starts with
TARGETS = ("edge_messages", "control_messages", "trace_reader", "config_readers", "checkpoint_reader")
SECONDS = int(os.environ.get("TANDEM_FUZZ_SECONDS", "15"))
RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)|^Done (\d+) runs", re.MULTILINE)
CRASH_INPUT = re.compile(r"Test unit written to (\S+)")


def fuzz_command(target: str, work: Path) -> list[str]:
    """libFuzzer's arguments: new corpus entries into ``work``/corpus (the first corpus folder is the one written),
    the seeds and past crashes read only; crash inputs to ``work``."""
    corpus = work / "corpus"
    corpus.mkdir()
    command = [sys.executable, str(FUZZ / f"{target}.py"), str(corpus),
               *(str(folder) for folder in (FUZZ / "corpus" / target, FUZZ / "crashes" / target) if folder.is_dir()),
               f"-max_total_time={SECONDS}", f"-rss_limit_mb={rss_limit_mb()}", "-timeout=30", "-print_final_stats=1",
               f"-artifact_prefix={work}/"]
    dictionary = FUZZ / f"{target}.dict"
    return [*command, f"-dict={dictionary}"] if dictionary.is_file() else command


def rss_limit_mb() -> int:
    """libFuzzer limits the process's peak RSS as getrusage reports it, and Linux carries a peak across fork and
    exec: a child of this test process starts with this process's peak (the suite's models), whatever it uses
    itself.  The budget counts from there."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + BUDGET_MB


@pytest.mark.parametrize("target", TARGETS)
def test_fuzzing_finds_no_crash_within_the_budget(target: str, tmp_path: Path) -> None:
    done = subprocess.run(fuzz_command(target, tmp_path), capture_output=True, text=True, cwd=tmp_path,
                          timeout=SECONDS + 180)
    output = done.stdout + done.stderr
    counts = [int(first or second) for first, second in RUNS.findall(output)]
    REPORT.setdefault("atheris", {})[target] = counts[0] if counts else None
    crash = CRASH_INPUT.search(output)
    last_lines = "\n".join(output.strip().splitlines()[-40:])
    assert done.returncode == 0, (
        f"fuzz/{target}.py failed (exit {done.returncode}); crash input: {crash.group(1) if crash else 'none'} "
        f"(replay: python fuzz/{target}.py <input>)\n{last_lines}")
    assert counts and counts[0] > 0, f"fuzz/{target}.py ran no input:\n{last_lines}"
