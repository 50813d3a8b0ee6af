"""`tandem train --address` on a real two-node Ray cluster on loopback: a head node (`ray start --head`) and a second
node (`ray start --address`), one CPU each, both with Ray's token authentication.  The training's two environment
runners need a CPU each, so one runs on each node: the run samples on both, and its summary names the nodes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.clients import run_tandem
from harness.scenarios import write_twin_scenario

RAY = Path(sys.executable).parent / "ray"
PORT = 6391


def _ray_start(args: list[str], env: dict) -> subprocess.Popen:
    """One Ray node in the foreground (``--block``), in its own process group so that teardown reaches all of it."""
    return subprocess.Popen([str(RAY), "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block",
                             *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _stop(node: subprocess.Popen) -> None:
    """SIGINT is what makes `ray start --block` stop the processes it started; the group is killed if it lingers."""
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for_nodes(env: dict, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([str(RAY), "status", "--address", f"127.0.0.1:{PORT}"], env=env,
                                capture_output=True, text=True, timeout=60)
        if status.returncode == 0 and status.stdout.count(" node_") >= count:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster did not reach {count} nodes: {status.stdout[-2000:]}{status.stderr[-2000:]}")


@pytest.fixture(scope="module")
def two_node_cluster():
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "OMP_NUM_THREADS": "1"}
    head = _ray_start(["--head", "--port", str(PORT), "--num-cpus", "1", "--include-dashboard", "false"], env)
    nodes = [head]
    try:
        _wait_for_nodes(env, 1)
        nodes.append(_ray_start(["--address", f"127.0.0.1:{PORT}", "--num-cpus", "1"], env))
        _wait_for_nodes(env, 2)
        yield env
    finally:
        for node in reversed(nodes):
            _stop(node)


def test_training_runs_on_a_two_node_ray_cluster(two_node_cluster, umi_trace, tmp_path, monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, two_node_cluster[name])
    scenario = write_twin_scenario(tmp_path, umi_trace)
    done = run_tandem("train", "--scenario", str(scenario), "--iterations", "2", "--eval-every", "2",
                      "--batch-size", "200", "--batch-envs", "4", "--minibatch-size", "128", "--max-users", "4",
                      "--episode-slots", "40", "--env-runners", "2",
                      "--address", f"127.0.0.1:{PORT}", "--out", str(tmp_path / "run"), "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["env_steps"] >= 400
    assert (tmp_path / "run" / "best" / "actor.safetensors").exists()
    assert len(summary["env_runner_nodes"]) == 2 and len(set(summary["env_runner_nodes"])) == 2, summary
