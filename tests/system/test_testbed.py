"""`tandem testbed up | status | down` with real daemons on loopback: a small scenario on the Sionna test trace,
llama.cpp edges and phone devices paced at a dilation, the controller deciding; status shows the processes, the
association table and per-user latency; down leaves no process behind; a part that fails to start is named and
everything already started is stopped."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from harness.clients import run_tandem
from harness.paths import REPO
from testbed.bed import _alive


def write_testbed(folder: Path, trace: Path, policy: str = "tma-opt", until_s: float = 3.0) -> Path:
    scenario = folder / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "test-bed", "trace": str(trace), "profile": str(REPO / "profiles" / "phone-1b-gpu-8b.yaml"),
        "users": 3, "edges": [{"id": 0, "capacity": 4, "compute_scale": 0.1}, {"id": 1, "capacity": 4,
                                                                               "compute_scale": 0.2}],
        "duration_slots": 60, "arrivals": {"kind": "poisson", "rate_per_user_s": 1.0, "until_s": until_s},
        "prompt_tokens": {"kind": "fixed", "value": 40}, "answer_tokens": {"kind": "fixed", "value": 12}}))
    config = folder / "testbed.yaml"
    config.write_text(yaml.safe_dump({"scenario": str(scenario), "dilation": 4, "policy": policy,
                                      "max_tokens": 12, "run_dir": str(folder / "run")}))
    return config


def recorded_pids(run_dir: Path) -> dict[str, int]:
    return {d["name"]: d["pid"] for d in json.loads((run_dir / "state.json").read_text())["daemons"]}


def test_up_status_down(prepared, umi_trace, tmp_path):
    config = write_testbed(tmp_path, umi_trace)
    up = run_tandem("testbed", "up", "--config", str(config))
    pids = recorded_pids(tmp_path / "run") if (tmp_path / "run" / "state.json").exists() else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(pids) == {"edge 0", "edge 1", "link emulator", "controller", "devices 0 (users 0-2)"}
        assert all(_alive(pid) for pid in pids.values())
        results = tmp_path / "run" / "devices-0.jsonl"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (results.exists() and results.read_text().strip()):
            time.sleep(1)
        record = json.loads(results.read_text().splitlines()[0])
        assert "error" not in record and len(record["token_ids"]) == 12 and record["latency_s"] > 0
        status = run_tandem("testbed", "status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        for expected in ("edge 0", "link emulator", "controller", "running", "policy tma-opt", "user  edge",
                         "latency s"):
            assert expected in status.stdout, status.stdout
    finally:
        down = run_tandem("testbed", "down", "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert "every process stopped" in down.stdout
    assert not any(_alive(pid) for pid in pids.values())
    assert run_tandem("testbed", "status", "--config", str(config)).returncode == 2  # nothing up any more


def test_a_part_that_fails_to_start_is_named_and_the_rest_stopped(prepared, umi_trace, tmp_path):
    config = write_testbed(tmp_path, umi_trace, policy="no-such-policy")
    up = run_tandem("testbed", "up", "--config", str(config))
    assert up.returncode == 1
    assert "controller failed to start" in up.stderr and "no-such-policy" in up.stderr
    logs = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"edge-0.log", "edge-1.log", "linkemu.log", "controller.log"} <= logs
    for name in ("edge-0.log", "linkemu.log"):  # they had started, and were stopped again
        assert "TANDEM-READY" in (tmp_path / "run" / name).read_text()
    assert not (tmp_path / "run" / "state.json").exists()
    leftovers = [line for line in os.popen("ps -eo args").read().splitlines() if str(tmp_path) in line]
    assert not leftovers, leftovers


@pytest.mark.parametrize("change, reason", [
    ({"dilation": 0.5}, "dilation"), ({"engine": "tpu"}, "engine"), ({"surprise": 1}, "surprise")])
def test_a_bad_config_is_refused_with_exit_2(umi_trace, tmp_path, change, reason):
    config = write_testbed(tmp_path, umi_trace)
    data = yaml.safe_load(config.read_text()) | change
    config.write_text(yaml.safe_dump(data))
    done = run_tandem("testbed", "up", "--config", str(config))
    assert done.returncode == 2 and reason in done.stderr


def test_every_phase_plays_the_same_requests_on_the_same_radio(prepared, umi_trace, tmp_path):
    """Workload phases under two policies (swapped through the admin CLI) on one running testbed: the same requests
    (user, sequence number, arrival time), and the link emulator seeks its trace to the same slot as each phase
    starts (LinkControl.Seek, over mutual TLS as the admin).  A third phase's devices each load a draft model of
    their own instead of sharing the process's copy: they answer every request with the same tokens."""
    from testbed.bed import Testbed
    from testbed.config import load_testbed_config
    from testbed.phases import PHASE_TRACE_SLOT, run_phase

    bed = Testbed(load_testbed_config(write_testbed(tmp_path, umi_trace, until_s=2.0)))
    try:
        bed.up(devices=False)
        phases = [run_phase(bed, policy, 2.0) for policy in ("max-sinr-hysteresis", "tma-equal:draft_lengths=tuned")]
        phases.append(run_phase(bed, "max-sinr-hysteresis", 2.0, name="own-weights", draft_weights="per-device"))
    finally:
        bed.down()
    played = [sorted((r["user"], r["seq"], round(r["arrival_s"], 6)) for r in phase.records) for phase in phases]
    assert played[0] and played[0] == played[1] == played[2]
    assert all("error" not in r for phase in phases for r in phase.records)
    assert [phase.trace_slot for phase in phases] == [PHASE_TRACE_SLOT] * 3
    log = (tmp_path / "run" / "linkemu.log").read_text()
    assert log.count(f"trace seek: slot {PHASE_TRACE_SLOT} plays now") == 3
    answers = [{(r["user"], r["seq"]): r["token_ids"] for r in phase.records} for phase in (phases[0], phases[2])]
    assert answers[0] == answers[1]
