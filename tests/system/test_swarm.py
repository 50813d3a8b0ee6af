"""The testbed on Docker Swarm (deploy/stack.yml, deploy/swarm.sh) on a single-node swarm on loopback: the stack
comes up from the same images with every key a Docker secret, a prompt through the controller and the link
emulator comes back lossless, the admin identity (a one-shot task holding the admin key) swaps the policy while a
device cannot, and then the stack is removed and the swarm left again.

Needs dockerd and the images (scripts/setup-docker.sh, deploy/build-images.sh: `make test` runs both); skipped,
saying why, where docker is not available or this node is already in a swarm (it is never left then).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from harness.clients import free_port
from harness.containers import (STACK_IMAGES, assert_target_argmax, docker_ready, edge_address, ensure_trace,
                                teacher_forcing_command)
from harness.paths import REPO

STACK = "tandemtest"
PROMPT = "Give three tips for learning a new language."
SWARM = REPO / "deploy" / "swarm.sh"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def swarm_script(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SWARM), *args], capture_output=True, text=True, timeout=timeout, env=env)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def task_container(service: str) -> str | None:
    """The running container of a service of the stack (on this node)."""
    ids = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}").stdout.split()
    return ids[0] if ids else None


def in_devices(*command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    container = task_container("devices")
    assert container, "the devices service has no running task"
    return docker("exec", container, *command, timeout=timeout)


def generate(mode: str) -> dict:
    done = in_devices("tandem", "generate", "--controller", "controller:50070", "--user", "3", "--via",
                      "linkemu:6003", "--mode", mode, "--max-tokens", "16", "--connect-timeout", "60", "--json",
                      PROMPT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if (why := docker_ready(STACK_IMAGES, needs_compose=False)) is not None:
        pytest.skip(why)
    if swarm_state() != "inactive":
        pytest.skip(f"this node is already in a swarm ({swarm_state()}): the test would have to leave it")
    ensure_trace()
    env = {**os.environ, "TANDEM_STACK": STACK, "TANDEM_PROMETHEUS_PORT": str(free_port())}
    credentials = tmp_path_factory.mktemp("swarm-ca")
    init = docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    assert init.returncode == 0, init.stderr
    try:
        for step in (["certs", str(credentials)], ["secrets", str(credentials)], ["up"]):
            done = swarm_script(*step, env=env)
            assert done.returncode == 0, (step, done.stdout[-2000:], done.stderr[-3000:])
        deadline, probe = time.monotonic() + 600, None
        while True:  # up: the controller answers a device, through the overlay network's service names
            if container := task_container("devices"):
                probe = docker("exec", container, "tandem", "health", "controller:50070", "--role", "controller",
                               "--tls-name", "device-3")
                if probe.returncode == 0:
                    break
            if time.monotonic() > deadline:
                services = docker("service", "ls").stdout
                raise AssertionError(f"the stack did not come up:\n{services}\n{probe and probe.stderr[-2000:]}")
            time.sleep(3)
        yield env
    finally:
        print(docker("service", "ls").stdout)
        down = swarm_script("down", env=env)
        left = docker("swarm", "leave", "--force")
        assert down.returncode == 0, down.stderr[-2000:]
        assert left.returncode == 0, left.stderr
        assert swarm_state() == "inactive"


def test_a_prompt_through_the_stack_is_lossless(stack):
    psd, edge_only = generate("psd"), generate("edge-only")
    assert len(psd["token_ids"]) == 16 and psd["text"].strip()
    edge = edge_address(psd["edges"][-1])
    forced = in_devices(*teacher_forcing_command(edge, PROMPT, psd["token_ids"], "/run/secrets"))
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert_target_argmax(forced.stdout, psd["token_ids"])
    if edge_only["edges"] == psd["edges"]:  # one edge's engine: its own decoding gives the very same tokens
        assert edge_only["token_ids"] == psd["token_ids"]


def test_the_admin_swaps_the_policy_and_a_device_cannot(stack):
    env = stack
    swapped = swarm_script("admin", "policy", "set", "tma-equal", env=env)
    assert swapped.returncode == 0, (swapped.stdout[-2000:], swapped.stderr[-2000:])
    shown = swarm_script("admin", "policy", "show", env=env)
    assert shown.returncode == 0 and "tma-equal" in shown.stdout, (shown.stdout[-2000:], shown.stderr[-2000:])
    refused = in_devices("tandem", "policy", "set", "random", "--controller", "controller:50070", "--tls-name",
                         "device-3")
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr[-1000:]


def test_each_service_holds_only_its_own_secrets(stack):
    """Keys are Docker secrets in memory (/run/secrets), owned by the image's user, 0400; a device holds the
    devices' keys and the CA certificate, no admin, daemon or CA key."""
    listing = in_devices("sh", "-c", "id -u; stat -c '%n %a %U' /run/secrets/*")
    assert listing.returncode == 0, listing.stderr
    uid, *files = listing.stdout.splitlines()
    devices = [f"device-{i}" for i in range(4)]
    assert uid == "10001"
    assert set(files) == {"/run/secrets/ca.pem 444 tandem"} \
        | {f"/run/secrets/{name}.pem 444 tandem" for name in devices} \
        | {f"/run/secrets/{name}.key 400 tandem" for name in devices}
    mounts = in_devices("sh", "-c", "grep /run/secrets /proc/mounts")
    assert "tmpfs" in mounts.stdout, mounts.stdout
