"""What the container tests (docker-compose, Docker Swarm) share: whether Docker can run them here, the trace the
link emulator replays, and teacher forcing run inside a device container."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from harness.clients import run_tandem
from harness.paths import REPO
from harness.teacher_forcing import NEAR_TIE_EPSILON

TRACE = REPO / "traces" / "umi-3x8-s0.npz"  # deploy/compose/linkemu.yaml replays it
COMPOSE_IMAGES = ("tandem:latest", "tandem-vllm:latest", "tandem-prometheus:latest")  # with deploy/compose.vllm.yml
STACK_IMAGES = ("tandem:latest", "tandem-prometheus:latest")  # deploy/stack.yml


def docker_ready(images: tuple[str, ...], needs_compose: bool = True) -> str | None:
    """Why a container testbed of ``images`` cannot run here, or None."""
    tools = ("docker", "docker-compose") if needs_compose else ("docker",)
    if missing := [tool for tool in tools if shutil.which(tool) is None]:
        return f"{', '.join(missing)} not installed (scripts/setup-docker.sh)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "dockerd is not running (scripts/setup-docker.sh)"
    for image in images:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            return f"image {image} is not built (deploy/build-images.sh)"
    return None


def ensure_trace() -> Path:
    if not TRACE.exists():
        done = run_tandem("traces", "generate", "--scenario", "umi", "--edges", "3", "--users", "8", "--slots",
                          "600", "--seed", "0", "--quiet", "-o", str(TRACE))
        assert done.returncode == 0, done.stderr
    return TRACE


# Run with `python3 -c` in a device container, as device-3: the answer's tokens scored by an edge (Score), each
# with the target's argmax and the top-2 log-probability gap.  Arguments: edge address, prompt, token ids (JSON).
TEACHER_FORCING = """
import json, sys
from device_client.draft import LlamaCppDraftEngine
from device_client.grpc_edge import EdgeConnection
from tandem.models import DEFAULT_MODEL_NAME, default_data_dir, load_prepared
from tandem.tls import TlsSettings, load_transport
address, prompt_text, answer = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
draft = LlamaCppDraftEngine(load_prepared(default_data_dir() / "models" / DEFAULT_MODEL_NAME).draft_gguf, n_ctx=1024)
prompt = draft.encode_chat(prompt_text)
identity = load_transport(TlsSettings(dir=sys.argv[4], name="device-3"), "device-3")
scored = EdgeConnection(address, transport=identity).score(prompt + answer, len(prompt), 2).positions
print(json.dumps([[p.token_id, p.top_ids[0], p.top_logprobs[0] - p.token_logprob] for p in scored]))
"""


def teacher_forcing_command(address: str, prompt: str, token_ids: list[int], tls_dir: str) -> list[str]:
    return ["python3", "-c", TEACHER_FORCING, address, prompt, json.dumps(token_ids), tls_dir]


def assert_target_argmax(scored_output: str, token_ids: list[int]) -> None:
    """Every token of the answer is the target's argmax at its position, up to near-ties."""
    scored = json.loads(scored_output.strip().splitlines()[-1])
    assert [token for token, _, _ in scored] == token_ids
    wrong = [(i, token, top, gap) for i, (token, top, gap) in enumerate(scored)
             if token != top and gap > NEAR_TIE_EPSILON]
    assert not wrong, f"tokens that are not the target's argmax (position, token, argmax, gap): {wrong}"


def edge_address(edge_label: str) -> str:
    """'edge 1 (edge1:50051)' -> 'edge1:50051' (a result's `edges`)."""
    return edge_label.split("(", 1)[1].rstrip(")")
