"""The compose testbed under a real dockerd: every image built from the repo's Dockerfiles (deploy/), the
services up with docker-compose and the vLLM override (deploy/compose.vllm.yml: edge1 runs the target under vLLM,
edge0 under llama.cpp), prompts sent through the client CLI inside it and served by the vLLM edge, checked against
teacher forcing through that edge's Score, Prometheus scraping every daemon (the vLLM edge included),
every Grafana panel's PromQL answered, per-service credentials (a container holds only its own key, the CA key none,
and a device cannot administer) — then everything down.

Needs dockerd, docker-compose and the images (scripts/setup-docker.sh and deploy/build-images.sh: `make test`
runs both); skipped, saying why, where docker is not available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from harness.clients import free_port
from harness.containers import (COMPOSE_IMAGES, assert_target_argmax, docker_ready, edge_address, ensure_trace,
                                teacher_forcing_command)
from harness.paths import REPO

PROJECT = "tandemtest"
JOBS = {"edge", "linkemu", "controller", "devices"}
PROMPT = "Give three tips for learning a new language."
ONE_SHOT = {"models", "certs", "admin"}
CONTAINER_UID = "10001"  # the image's user (deploy/Dockerfile)
# What each service finds in /tls: the CA certificate and its own identities' certificates and keys, nothing else.
CREDENTIALS = {"edge0": ["edge-0", "health"], "edge1": ["edge-1", "health"], "linkemu": ["linkemu", "health"],
               "controller": ["controller"], "devices": ["device-0", "device-1", "device-2", "device-3"]}


def exited_services() -> dict[str, str]:
    """Long-running services of the project that stopped, with their last log lines (the one-shot `models`,
    `certs` and `admin` may)."""
    names = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                            "--filter", "status=exited", "--format", '{{.Label "com.docker.compose.service"}}'],
                           capture_output=True, text=True).stdout.split()
    return {name: subprocess.run(["docker", "logs", "--tail", "5", f"{PROJECT}_{name}_1"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True).stdout[-1000:]
            for name in names if name not in ONE_SHOT}


FILES = ["-f", "docker-compose.yml", "-f", "deploy/compose.vllm.yml"]  # edge1 on vLLM
VLLM_EDGE = "edge 1 (edge1:50051)"


def compose(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-p", PROJECT, *FILES, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/"

    def query(self, expr: str) -> list[dict]:
        url = self.base + "query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            reply = json.load(response)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def wait_for(self, expr: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            if exited := exited_services():
                raise AssertionError(f"services exited: {exited}")
            try:
                if result := self.query(expr):
                    return result
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} within {timeout:g} s")
            time.sleep(2)


@pytest.fixture(scope="module")
def testbed():
    if (why := docker_ready(COMPOSE_IMAGES)) is not None:
        pytest.skip(why)
    ensure_trace()
    port = free_port()
    env = {**os.environ, "TANDEM_PROMETHEUS_PORT": str(port)}
    compose("down", "-v", env=env)
    up = compose("up", "-d", env=env, timeout=900)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        prometheus = Prometheus(port)
        # The devices' first requests end (paced at D = 8, a few tens of seconds) and every job is scraped.
        prometheus.wait_for("sum(tandem_device_requests_total) > 0", timeout=600)
        prometheus.wait_for('count(count by (job) ({__name__=~"tandem_.+"})) >= 4', timeout=60)
        yield env, prometheus
    finally:
        logs = compose("logs", "--no-color", "--tail", "30", env=env)
        print(logs.stdout[-8000:])
        down = compose("down", "-v", env=env)
        assert down.returncode == 0, down.stderr


def test_prompts_through_the_client_cli_are_lossless(testbed):
    """Through the controller and the link emulator to the vLLM edge: PSD's answer is the target's own (every token
    its argmax under teacher forcing, up to near-ties), and the same as the edge decoding alone."""
    env, _ = testbed
    answers = {}
    for mode in ("psd", "edge-only"):
        done = compose("exec", "-T", "devices", "tandem", "generate", "--controller", "controller:50070", "--user",
                       "3", "--via", "linkemu:6003", "--mode", mode, "--max-tokens", "16", "--connect-timeout", "60",
                       "--json", PROMPT, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        answers[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    psd = answers["psd"]
    assert len(psd["token_ids"]) == 16 and psd["text"].strip()
    assert psd["edges"] == [VLLM_EDGE] == answers["edge-only"]["edges"], (psd["edges"], answers["edge-only"]["edges"])
    forced = compose("exec", "-T", "devices", *teacher_forcing_command(edge_address(VLLM_EDGE), PROMPT,
                                                                       psd["token_ids"], "/tls"), env=env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert_target_argmax(forced.stdout, psd["token_ids"])
    # Greedy PSD emits exactly the target's own tokens: what the edge decodes alone.
    assert psd["token_ids"] == answers["edge-only"]["token_ids"]


def test_the_deployment_speaks_mutual_tls_only(testbed):
    """Every daemon took its certificate from the `certs` service's CA: a plaintext client is refused, a device
    certificate of the deployment is served (health is open to any identity)."""
    env, _ = testbed
    for address, role in (("edge0:50051", "edge"), ("linkemu:9201", "linkemu"), ("controller:50070", "controller")):
        plain = compose("exec", "-T", "devices", "tandem", "health", address, "--role", role, "--insecure", env=env)
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr, (address, plain.stderr[-500:])
        secure = compose("exec", "-T", "devices", "tandem", "health", address, "--role", role, "--tls-name",
                         "device-3", env=env)
        assert secure.returncode == 0 and "SERVING" in secure.stdout, (address, secure.stderr[-500:])


def test_each_service_holds_only_its_own_credentials_as_a_non_root_user(testbed):
    """Every daemon runs as the image's user, and its /tls holds the CA certificate and its own identities' files
    (keys 0600, owned by that user) and nothing else: no admin or other identity's key, no CA key anywhere."""
    env, _ = testbed
    for service, names in CREDENTIALS.items():
        listing = compose("exec", "-T", service, "sh", "-c", "id -u; stat -c '%n %a %U' /tls/*", env=env)
        assert listing.returncode == 0, (service, listing.stderr[-500:])
        uid, *files = listing.stdout.splitlines()
        assert uid == CONTAINER_UID, service
        expected = {"/tls/ca.pem 644 tandem"} | {f"/tls/{name}.pem 644 tandem" for name in names} \
            | {f"/tls/{name}.key 600 tandem" for name in names}
        assert set(files) == expected, (service, files)
        # As root, so that no folder is out of sight: the CA key is nowhere in a running service.
        found = compose("exec", "-T", "-u", "root", service, "find", "/", "(", "-path", "/proc", "-o", "-path",
                        "/sys", ")", "-prune", "-o", "-name", "ca.key", "-print", env=env)
        assert found.returncode == 0 and not found.stdout.strip(), (service, found.stdout, found.stderr[-500:])
    for key in ("admin.key", "controller.key", "edge-0.key", "ca.key"):
        done = compose("exec", "-T", "devices", "cat", f"/tls/{key}", env=env)
        assert done.returncode != 0 and "No such file" in done.stderr + done.stdout, key


# A raw ControllerAdmin call as device-3 with a bearer token: over TLS a token grants no role.
_ADMIN_CALL_WITH_TOKEN = """
import grpc, sys
from tandem.tls import TlsSettings, load_transport
from tandem.wire.v1 import control_pb2 as pb, control_pb2_grpc
transport = load_transport(TlsSettings(dir="/tls", name="device-3"), "device-3")
with transport.channel("controller:50070", "controller") as channel:
    try:
        control_pb2_grpc.ControllerAdminStub(channel).ListPolicies(
            pb.ListPoliciesRequest(), metadata=(("authorization", "Bearer " + sys.argv[1]),), timeout=10)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name)
"""


def test_a_device_cannot_administer_even_with_a_token(testbed):
    """device-3's certificate is refused policy calls through the CLI, and over raw gRPC also when it presents a
    bearer token (over TLS the controller makes no token and accepts none); the `admin` service's certificate is
    the admin."""
    env, _ = testbed
    made = compose("exec", "-T", "controller", "ls", "/tmp/controller.sqlite.admin-token", env=env)
    assert made.returncode != 0, "the controller made an admin token over TLS"
    for command in (["list"], ["set", "random"]):
        done = compose("exec", "-T", "devices", "tandem", "policy", *command, "--controller", "controller:50070",
                       "--tls-name", "device-3", env=env)
        assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr, (command, done.stderr)
    raw = compose("exec", "-T", "devices", "python3", "-c", _ADMIN_CALL_WITH_TOKEN, "any-token-0123456789abcdef",
                  env=env)
    assert raw.stdout.strip().splitlines()[-1:] == ["PERMISSION_DENIED"], (raw.stdout, raw.stderr[-1000:])
    admin = compose("run", "--rm", "-T", "admin", "policy", "show", "--controller", "controller:50070", env=env)
    assert admin.returncode == 0 and "tma-opt" in admin.stdout, admin.stderr[-1000:]


def test_prometheus_scrapes_tandem_series_from_every_daemon(testbed):
    _, prometheus = testbed
    up = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in prometheus.query("up")}
    assert {job for job, _ in up} == JOBS and all(value == "1" for value in up.values()), up
    assert ("edge", "edge1:9100") in up  # the vLLM edge
    # ... and it verified blocks (the devices' workload and the prompts above).
    assert prometheus.wait_for('sum(tandem_edge_drafted_tokens_total{instance="edge1:9100"}) > 0', timeout=120)
    series = prometheus.query('count by (job, instance) ({__name__=~"tandem_.+"})')
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in series} == set(up)


def test_every_dashboard_panel_returns_data(testbed):
    _, prometheus = testbed
    dashboard = json.loads((REPO / "deploy" / "grafana" / "tandem.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    empty = [expr for expr in expressions if not prometheus.query(expr)]
    assert not empty, f"panels without data: {empty}"


def test_the_gpu_override_reserves_a_gpu_for_the_vllm_edge():
    """deploy/compose.cuda.yml cannot run here (no GPU, no registry for its CUDA base): docker-compose accepts it
    on top of the testbed and it asks for an NVIDIA GPU for edge1's vLLM engine."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/setup-docker.sh)")
    done = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "-f", "deploy/compose.cuda.yml", "config"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    edge = yaml.safe_load(done.stdout)["services"]["edge1"]
    assert edge["image"] == "tandem-cuda:latest" and "vllm" in edge["command"]
    assert edge["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
