"""Fixtures shared by the whole suite.

``tests/unit`` holds pure logic on synthetic inputs: no daemon, no socket, no child process in the test itself,
seconds each. ``tests/system`` holds everything that runs the real thing: daemons over loopback, the CLI in child
processes, Docker, Ray. The daemons here are session-scoped, so each target engine starts once per run (vLLM takes
~30-60 s on CPU); helpers the benchmarks use too live in the ``harness`` package.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from harness.clients import ADMIN_TOKEN, run_tandem
from harness.daemons import edge_process
from harness.figures import REPORT
from harness.paths import RESULTS
from harness.scenarios import write_twin_scenario
from tandem.models import default_data_dir
from toolbox.models import prepare_models
from tandem.processes import LinkEmuProcess

# The shared daemons and clients of the tests talk plaintext over loopback, asked for explicitly (each daemon logs it
# as a warning); tests/system/test_security.py starts its own daemons with mutual TLS, and the testbed runs TLS
# throughout. Every daemon a test starts takes the admin token from the environment (harness.clients).
os.environ["TANDEM_INSECURE"] = "1"
os.environ["TANDEM_ADMIN_TOKEN"] = ADMIN_TOKEN
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "test_report.json").write_text(json.dumps(REPORT, indent=2))
        terminalreporter.section("tandem figures measured by the tests")
        for name, figures in sorted(REPORT.items()):
            terminalreporter.write_line(f"{name}: {json.dumps(figures)}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return default_data_dir()


@pytest.fixture(scope="session")
def prepared(data_dir):
    return prepare_models(data_dir, progress=lambda message: None)


@pytest.fixture(scope="session")
def llamacpp_edge(prepared, data_dir, tmp_path_factory):
    with edge_process("llamacpp", data_dir, tmp_path_factory.mktemp("logs")) as edge:
        yield edge


@pytest.fixture(scope="session")
def vllm_edge(prepared, data_dir, tmp_path_factory):
    if not HAVE_VLLM:
        pytest.skip("vllm is not installed")
    with edge_process("vllm", data_dir, tmp_path_factory.mktemp("logs")) as edge:
        yield edge


@pytest.fixture(scope="session", params=["llamacpp", "vllm"])
def edge(request):
    """Each target engine in turn (the test runs once per engine)."""
    return request.getfixturevalue(f"{request.param}_edge")


@pytest.fixture(scope="session")
def draft(prepared):
    from device_client.draft import LlamaCppDraftEngine

    return LlamaCppDraftEngine(prepared.draft_gguf)


@pytest.fixture
def connection(edge):
    from device_client.grpc_edge import EdgeConnection

    conn = EdgeConnection(edge.address)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def umi_trace(tmp_path_factory) -> Path:
    """A small Sionna UMi trace made by the CLI: 3 edges x 4 users x 60 slots of 100 ms."""
    path = tmp_path_factory.mktemp("traces") / "umi.npz"
    done = run_tandem("traces", "generate", "--scenario", "umi", "--edges", "3", "--users", "4", "--slots", "60",
                      "--seed", "3", "--quiet", "-o", str(path))
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="session")
def linkemu_links(umi_trace, tmp_path_factory):
    """``link_to(edge)``: a `linkemu serve` daemon in front of that edge, replaying the UMi trace 10x faster on
    the user-edge pair with the fewest outage slots (outages are waited through, up to 60 s)."""
    from tandem.trace_format import load_trace

    user, edge_index = load_trace(umi_trace).most_reliable_pair()
    started: dict[str, LinkEmuProcess] = {}

    def link_to(edge) -> LinkEmuProcess:
        if edge.address not in started:
            log = tmp_path_factory.mktemp("logs") / "linkemu.log"
            started[edge.address] = LinkEmuProcess(
                ["--trace", str(umi_trace), "--upstream", edge.address, "--user", str(user), "--edge",
                 str(edge_index), "--share", "0.5", "--base-delay-ms", "2", "--speedup", "10",
                 "--outage-limit", "60", "--metrics-port", "0"], log_path=log)
            started[edge.address].start()
        return started[edge.address]

    yield link_to
    for process in started.values():
        process.stop()


@pytest.fixture(scope="session")
def trained_policy(umi_trace, tmp_path_factory) -> Path:
    """A few iterations of `tandem train` (multi-agent PPO on RLlib) on the Sionna test trace: the policy folder it
    keeps."""
    folder = tmp_path_factory.mktemp("mappo")
    scenario = write_twin_scenario(folder, umi_trace)
    done = run_tandem("train", "--scenario", str(scenario), "--iterations", "3", "--eval-every", "3",
                      "--batch-size", "200", "--batch-envs", "4", "--minibatch-size", "128", "--max-users", "4",
                      "--episode-slots", "40",
                      "--energy-weights", "0", "0.5", "--out", str(folder / "run"), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run" / "best"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """A development CA and certificates (edge-0/1, linkemu, controller, admin, health, device-0..3) for the tests
    that run daemons over mutual TLS and leave the credentials as they are (test_rotation.py and test_security.py
    make their own)."""
    from toolbox.certs import init_certs

    folder = tmp_path_factory.mktemp("pki")
    init_certs(folder, edges=2, devices=4)
    return folder
