"""`tandem edge serve`: the edge server's command."""

from __future__ import annotations

import argparse
from pathlib import Path

from tandem.commands import Commands, lazy_handler
from tandem.tls import add_tls_arguments


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file with EdgeConfig fields; flags override it")
    parser.add_argument("--engine", choices=["vllm", "llamacpp"], help="target engine (default llamacpp)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any)")
    parser.add_argument("--model", type=Path, help="HF checkpoint dir (vllm) or GGUF file (llamacpp); "
                        "default: the target prepared by `tandem models prepare`")
    parser.add_argument("--data-dir", type=Path, help="where prepared models live (default ~/.cache/tandem)")
    parser.add_argument("--max-sessions", type=int, help="concurrent sessions (default 8)")
    parser.add_argument("--max-sessions-per-identity", type=int, help="sessions and Score calls one client "
                        "certificate may hold at once (default 4)")
    parser.add_argument("--open-rate", type=float, help="sessions one identity may open per second (default 2)")
    parser.add_argument("--max-request-tokens", type=int, help="longest Score accepted, in tokens (default 1024)")
    parser.add_argument("--drain", type=float, help="on SIGTERM, seconds blocks in flight may take (default 10)")
    parser.add_argument("--max-context", type=int, help="tokens per session, prompt included (default 2048)")
    parser.add_argument("--max-draft-length", type=int, help="longest draft block accepted (default 16)")
    parser.add_argument("--idle-timeout", type=float, help="seconds a detached session waits for its device to "
                        "attach again (default 60)")
    parser.add_argument("--commit-idle", type=float, help="seconds an attached session may commit nothing before it "
                        "is closed, freeing its slot (default 30)")
    parser.add_argument("--max-message-bytes", type=int, help="largest gRPC message accepted (default 4 MiB)")
    parser.add_argument("--batch-window", type=float, help="seconds to wait for other sessions' blocks (0.002)")
    parser.add_argument("--step-tokens", type=int, help="target work in tokens one engine step may batch; "
                        "compute shares are enforced step by step (default 64 on vllm, 1 on llamacpp)")
    parser.add_argument("--edge-id", type=int, help="this edge's index in the controller's topology (reported "
                        "to devices in GetInfo)")
    parser.add_argument("--verification-log", type=Path, metavar="FILE",
                        help="append one JSON line per verified block: drafts, draft and target probabilities, "
                        "verdict (to replay decisions and compare runs; off by default)")
    vllm = parser.add_argument_group("vllm engine")
    vllm.add_argument("--top-n", type=int, help="candidates per position; sampling needs top_k <= top_n (64)")
    vllm.add_argument("--block-size", type=int, help="KV block size, multiple of 32 on CPU (default 32)")
    vllm.add_argument("--compile", action="store_true", default=None,
                      help="let vLLM torch.compile the model: slower start (~100 s), faster decode")
    vllm.add_argument("--kv-cache-gib", type=int, help="KV cache size in GiB (default 1)")
    llama = parser.add_argument_group("llamacpp engine")
    llama.add_argument("--threads", type=int, help="llama.cpp threads (default 1)")
    llama.add_argument("--slots", type=int, help="warm contexts, one per concurrent session (default 4)")
    pacing = parser.add_argument_group("hardware pacing", "emulate a faster edge with time dilation: each engine "
                                       "step is held until the profile's time x D has passed (docs/testbed.md)")
    pacing.add_argument("--profile", type=Path, help="hardware profile YAML whose edge to emulate")
    pacing.add_argument("--dilation", type=float, help="time dilation factor D (0 = off, the default; else >= 1)")
    pacing.add_argument("--compute-scale", type=float, help="this edge's compute relative to the profiled edge "
                        "(default 1)")
    add_tls_arguments(parser, "edge-<edge-id>")


def register(commands: Commands) -> None:
    edge = commands.add_parser("edge", help="edge server").add_subparsers(
        dest="edge_command", metavar="ACTION", required=True
    )
    serve = edge.add_parser(
        "serve",
        help="serve a target model to devices over gRPC",
        description="Run an edge server: the target model verifies drafted blocks (and decodes alone in "
        "edge-only mode) for device sessions. Also serves gRPC health and reflection, and Prometheus metrics.",
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=lazy_handler("edge_server.cli:run_serve"))
