"""Daemons as the tests start them."""

from __future__ import annotations

from pathlib import Path

from tandem.processes import EdgeProcess, vllm_edge_env


def edge_process(engine: str, data_dir: Path, logs: Path, extra: list[str] = ()) -> EdgeProcess:
    """An edge server on ``engine`` with the suite's settings, logging into ``logs`` (not started: use it as a
    context manager)."""
    env = vllm_edge_env() if engine == "vllm" else {}
    args = ["--engine", engine, "--data-dir", str(data_dir), "--metrics-port", "0", "--idle-timeout", "30",
            "--max-sessions", "64", "--verification-log", str(logs / f"verification-{engine}.jsonl"), *extra]
    return EdgeProcess(args, log_path=logs / f"edge-{engine}.log", env=env)
