"""The CLI: exit code 2 with the reason on bad arguments, a clear message when the edge is unreachable, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from device_client.speculation import DEFAULT_PSD_VARIANT
from harness.clients import free_port
from harness.paths import REPO
from harness.clients import run_tandem as tandem


# What a device or an operator's `tandem --help` must never pay for: the engines and the training stack.
HEAVY = ("torch", "ray", "vllm", "llama_cpp", "sionna", "tensorflow", "transformers", "matplotlib")


def test_help_lists_every_package_command_and_imports_no_engine_or_training_stack():
    probe = ("import sys\nfrom tandem.cli import build_parser\nhelp = build_parser().format_help()\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))\nprint(help)")
    done = subprocess.run([sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported, _, help_text = done.stdout.partition("\n")
    assert imported == "[]", f"`tandem --help` imported {imported}"
    for command in ("models", "certs", "traces", "profile", "health", "edge", "generate", "devices", "linkemu",
                    "controller", "policy", "twin", "train", "train-curves", "evaluate", "testbed", "demo"):
        assert f"    {command} " in help_text or f"    {command}\n" in help_text, command


@pytest.mark.parametrize("module, usage", [("edge_server", "--engine"), ("controller", "--state"),
                                           ("linkemu", "--trace"), ("device_client", "--edge")])
def test_each_daemon_runs_as_its_own_module(module, usage):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} ") and usage in done.stdout


@pytest.mark.parametrize("args, reason", [
    (["generate", "--edge", "localhost:1", "--max-tokens", "0", "hi"], "--max-tokens"),
    (["generate", "--edge", "localhost:1", "--temperature", "-1", "hi"], "--temperature"),
    (["generate", "--edge", "localhost:1", "--top-p", "1.5", "hi"], "--top-p"),
    (["generate", "--edge", "not an address", "hi"], "--edge"),
    (["generate", "--edge", "localhost:1", "--draft-length", "0", "hi"], "--draft-length"),
    (["generate", "--edge", "localhost:1", "--mode", "warp", "hi"], "invalid choice"),
    (["generate", "--edge", "localhost:1", "--psd-variant", "pre+warp", "hi"], "--psd-variant"),
    (["generate", "hi"], "--edge"),
    (["edge", "serve", "--port", "70000"], "port"),
    (["edge", "serve", "--max-sessions", "0"], "max_sessions"),
    (["edge", "serve", "--model", "/no/such/model"], "model not found"),
    (["models", "prepare", "--draft-quant", "q2"], "unknown draft quantisation"),
    (["models", "prepare", "--source-gguf", "/no/such.gguf"], "not found"),
    (["generate", "--edge", "localhost:1", "--trace", "/no/such.npz", "hi"], "trace file not found"),
    (["linkemu", "serve", "--trace", "/no/such.npz", "--upstream", "localhost:1"], "trace file not found"),
    (["linkemu", "serve", "--config", "/no/such.yaml"], "cannot read config file"),
    (["traces", "show", "/no/such.npz"], "trace file not found"),
])
def test_bad_arguments_exit_2_with_reason(args, reason, prepared):
    result = tandem(*args)
    assert result.returncode == 2, result
    assert reason in result.stderr, result.stderr


def test_unreachable_edge_exits_3_with_message(prepared):
    port = free_port()
    result = tandem("generate", "--edge", f"127.0.0.1:{port}", "--connect-timeout", "1", "hi")
    assert result.returncode == 3
    assert f"cannot reach an edge server at 127.0.0.1:{port}" in result.stderr


def test_sampling_beyond_edge_bound_exits_2(vllm_edge):
    result = tandem("generate", "--edge", vllm_edge.address, "--temperature", "1", "hi")
    assert result.returncode == 2
    assert "top_k" in result.stderr


PHONE_PROFILE = REPO / "profiles" / "phone-1b-gpu-8b.yaml"


def test_generate_json_has_every_figure(llamacpp_edge):
    result = tandem("generate", "--edge", llamacpp_edge.address, "--max-tokens", "12", "--json", "Say hello.")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("text", "token_ids", "tokens_per_s", "ttft_s", "acceptance_rate", "mean_accepted_length", "rounds",
                "bytes_up", "bytes_down", "draft_hidden_fraction", "efficiency", "bound_s_per_token", "breakdown_s"):
        assert key in summary
    assert len(summary["token_ids"]) <= 12 and summary["rounds"] >= 1 and summary["bytes_up"] > 0
    assert summary["clock"] == "wall" and summary["psd_variant"] == DEFAULT_PSD_VARIANT  # the edge is not paced
    assert summary["efficiency"] > 0  # at most 1 when paced (test_pacing.py); here draft steps vary about the median
    assert sum(summary["breakdown_s"].values()) == pytest.approx(summary["elapsed_s"])


def test_profile_pacing_needs_a_paced_edge(llamacpp_edge):
    result = tandem("generate", "--edge", llamacpp_edge.address, "--profile", str(PHONE_PROFILE), "hi")
    assert result.returncode == 2 and "the edge is not paced" in result.stderr


def test_generate_streams_text_and_summary(llamacpp_edge):
    result = tandem("generate", "--edge", llamacpp_edge.address, "--mode", "sd", "--max-tokens", "8", "-",
                    stdin="Say hello.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "[sd]" in result.stderr and "acceptance" in result.stderr


def test_help_explains_every_command():
    for args in (["--help"], ["generate", "--help"], ["edge", "serve", "--help"], ["models", "prepare", "--help"],
                 ["demo", "--help"], ["traces", "generate", "--help"], ["traces", "show", "--help"],
                 ["traces", "plot", "--help"], ["traces", "export-mahimahi", "--help"], ["linkemu", "serve", "--help"]):
        result = tandem(*args)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_generate_through_a_trace_driven_link(llamacpp_edge, umi_trace):
    from tandem.trace_format import load_trace

    trace = load_trace(umi_trace)
    user, edge = trace.most_reliable_pair()
    args = ["generate", "--edge", llamacpp_edge.address, "--max-tokens", "12", "--json", "Say hello."]
    direct = tandem(*args)
    shaped = tandem(*args, "--trace", str(umi_trace), "--trace-user", str(user), "--trace-edge", str(edge),
                    "--share", "0.3", "--base-delay-ms", "20", "--speedup", "10")
    assert direct.returncode == 0 and shaped.returncode == 0, shaped.stderr
    assert json.loads(shaped.stdout)["token_ids"] == json.loads(direct.stdout)["token_ids"]
    assert json.loads(shaped.stdout)["ttft_s"] >= 0.04  # the first round trip crossed the emulated link
    bad_share = tandem(*args, "--trace", str(umi_trace), "--share", "1.5")
    assert bad_share.returncode == 2 and "share" in bad_share.stderr
