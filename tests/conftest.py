"""Session-scoped daemons: each target engine starts once per test run (vLLM takes ~30-60 s on CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tandem.edge_model import DEFAULT_STEP_TOKENS, EdgeTiming
from tandem.models import default_data_dir, prepare_models
from tandem.profiles import SHIPPED_PROFILE, load_profile
from tandem.rpc import bearer_metadata
from testbed.processes import EdgeProcess, LinkEmuProcess, vllm_cores

ROOT = Path(__file__).resolve().parents[1]
# The shared daemons and clients of the tests talk plaintext over loopback, asked for explicitly (each daemon logs it
# as a warning); tests/test_security.py starts its own daemons with mutual TLS, and the testbed runs TLS throughout.
os.environ["TANDEM_INSECURE"] = "1"
# In plaintext, admin-only services (EdgeControl, LinkControl, ControllerAdmin) answer only the daemon's admin token
# (without one they refuse every call): every daemon a test starts takes this one from the environment, and tests
# calling those services send it (ADMIN_AUTH, with_admin_token).
ADMIN_TOKEN = "tests-plaintext-admin-token"
os.environ["TANDEM_ADMIN_TOKEN"] = ADMIN_TOKEN
ADMIN_AUTH = bearer_metadata(ADMIN_TOKEN)
RESULTS = ROOT / "results"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
GPU_EDGE = load_profile(SHIPPED_PROFILE).edge  # the paper's edge: an 8B target on an H100, 7.25 ms per k=4 block


def edge_timing(compute_scale: float = 1.0, step_tokens: int = DEFAULT_STEP_TOKENS) -> EdgeTiming:
    """An edge of the shipped profile at this share of its GPU, for observations built by hand."""
    return EdgeTiming(GPU_EDGE, compute_scale, step_tokens)


REPORT: dict[str, dict] = {}  # figures the tests measured (near-ties, ...), printed at the end and saved


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


def _edge(engine: str, data_dir: Path, tmp_path_factory, extra: list[str] = ()) -> EdgeProcess:
    logs = tmp_path_factory.mktemp("logs")
    env = {"VLLM_CPU_OMP_THREADS_BIND": vllm_cores(), "OMP_NUM_THREADS": "1"} if engine == "vllm" else {}
    verification_log = logs / f"verification-{engine}.jsonl"
    args = ["--engine", engine, "--data-dir", str(data_dir), "--metrics-port", "0", "--idle-timeout", "30",
            "--max-sessions", "64", "--verification-log", str(verification_log), *extra]
    return EdgeProcess(args, log_path=logs / f"edge-{engine}.log", env=env)



@pytest.fixture(scope="session")
def llamacpp_edge(prepared, data_dir, tmp_path_factory):
    with _edge("llamacpp", data_dir, tmp_path_factory) as edge:
        yield edge


@pytest.fixture(scope="session")
def vllm_edge(prepared, data_dir, tmp_path_factory):
    if not HAVE_VLLM:
        pytest.skip("vllm is not installed")
    with _edge("vllm", data_dir, tmp_path_factory) as edge:
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
    from device_client.link import EdgeConnection

    conn = EdgeConnection(edge.address)
    yield conn
    conn.close()


class _AdminToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the tests' admin token to every call (one method: the four kinds share its signature)."""

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details._replace(metadata=(*(details.metadata or ()), *ADMIN_AUTH)), request)

    intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = intercept_unary_unary


def with_admin_token(channel: grpc.Channel) -> grpc.Channel:
    """``channel``, its calls carrying the tests' admin token (for plaintext EdgeControl and LinkControl stubs)."""
    return grpc.intercept_channel(channel, _AdminToken())


def run_tandem(*args: str, stdin: str | None = None, timeout: float = 600,
               env_token: str | None = None) -> subprocess.CompletedProcess:
    """The `tandem` CLI in a child process (``env_token``: its $TANDEM_ADMIN_TOKEN)."""
    env = {**os.environ, "TANDEM_ADMIN_TOKEN": env_token} if env_token is not None else None
    return subprocess.run([sys.executable, "-m", "tandem", *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, env=env)


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
    from tandem.traces.format import load_trace

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


REPO = Path(__file__).resolve().parents[1]


def write_twin_scenario(folder: Path, trace: Path, users: int = 4, capacity: int = 4, slots: int = 60) -> Path:
    """A scenario on ``trace`` with the shipped phone/GPU profile, 3 edges and a busy Poisson workload."""
    import yaml

    path = folder / f"scenario-{users}-{capacity}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "test", "trace": str(trace), "profile": str(REPO / "profiles" / "phone-1b-gpu-8b.yaml"),
        "users": users, "edges": [{"id": e, "capacity": capacity, "compute_scale": 0.1} for e in range(3)],
        "duration_slots": slots, "arrivals": {"kind": "poisson", "rate_per_user_s": 0.5},
        "prompt_tokens": {"kind": "uniform", "low": 32, "high": 128},
        "answer_tokens": {"kind": "uniform", "low": 16, "high": 64}}))
    return path


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
    that run daemons over mutual TLS and leave the credentials as they are (tests/test_rotation.py and
    tests/test_security.py make their own)."""
    from tandem.certs import init_certs

    folder = tmp_path_factory.mktemp("pki")
    init_certs(folder, edges=2, devices=4)
    return folder


def creds(pki: Path, name: str):
    """The Transport of identity ``name`` from a folder made by `tandem certs init`."""
    from tandem.tls import TlsSettings, load_transport

    return load_transport(TlsSettings(dir=pki, name=name), name)
