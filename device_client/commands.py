"""`tandem generate` and `tandem devices run`: the device's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from device_client.decoding import MODES
from device_client.speculation import DEFAULT_PSD_VARIANT, IMPROVEMENTS
from tandem.commands import Commands, lazy_handler
from tandem.tls import add_tls_arguments


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the user's message (the chat template is applied); '-' reads stdin")
    target = parser.add_argument_group("where to decode", "one edge (--edge), or whichever edges the controller "
                                       "associates this user with (--controller and --user): the request moves "
                                       "between edges losslessly when the association changes or an edge fails")
    target.add_argument("--edge", help="edge server address HOST:PORT")
    target.add_argument("--edge-id", type=int, help="with --edge: the edge expected there; over TLS only the "
                        "certificate of that edge (edge-N) is accepted (default: any edge of the deployment)")
    target.add_argument("--controller", help="controller address HOST:PORT")
    target.add_argument("--user", type=int, help="this device's user id in the controller's topology")
    target.add_argument("--via", help="with --controller: reach every edge through this address (the device's "
                        "radio link, e.g. its port on `tandem linkemu serve`) instead of the edge's own")
    parser.add_argument("--mode", choices=MODES, default="psd",
                        help="psd: draft while verifying (default); sd: draft, then wait; edge-only: the edge "
                             "decodes alone")
    parser.add_argument("--psd-variant", default=DEFAULT_PSD_VARIANT,
                        help=f"with --mode psd: 'post' (draft ahead as if the block were fully accepted) or any of "
                        f"{', '.join(IMPROVEMENTS)} joined by '+': pre = a block whose drafts ahead failed is one "
                        "token sent at once, branch = draft ahead from the likeliest verdict, adaptive = each round's "
                        f"length from the acceptance and round trip observed (default {DEFAULT_PSD_VARIANT}, the "
                        "best measured: docs/benchmarks.md)")
    pacing = parser.add_argument_group(
        "hardware pacing", "against a paced edge (it says so) times are reported emulated, wall / D; give the "
        "profile to pace this device's drafting like its phone at the same D (docs/testbed.md)")
    pacing.add_argument("--profile", type=Path, help="hardware profile YAML whose device to emulate")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampler (default 0). Every answer is an exact sample of the target's "
                        "distribution. The same seed gives the same answer wherever the target engine computes the "
                        "same numbers; under load on CPUs whose kernels depend on the batch shape (vLLM bf16 on AMX) "
                        "it may part at a near-even decision and continue as another equally valid sample "
                        "(docs/design.md, Reproducibility)")
    parser.add_argument("--draft-length", type=int, default=4,
                        help="tokens per drafted block (default 4); with --controller the longest block, the "
                        "controller may ask for shorter ones")
    parser.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    parser.add_argument("--raw-prompt", action="store_true", help="send the prompt without the chat template")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the text and figures")
    parser.add_argument("--draft", type=Path, help="draft GGUF (default: the one `tandem models prepare` made)")
    parser.add_argument("--data-dir", type=Path, help="where prepared models live (default ~/.cache/tandem)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads for drafting (default 1)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the edge")
    link = parser.add_argument_group(
        "link emulation", "reach the edge through a trace-driven link emulator started for this request (`tandem "
        "linkemu serve` as a child process): rate = share x edge bandwidth x the trace's spectral efficiency, slot "
        "by slot")
    link.add_argument("--trace", type=Path, help="channel trace file (from `tandem traces generate`)")
    link.add_argument("--trace-user", type=int, default=0, help="the user in the trace (default 0)")
    link.add_argument("--trace-edge", type=int, default=0, help="the edge in the trace (default 0)")
    link.add_argument("--share", type=float, default=1.0, help="share of the edge's bandwidth (default 1)")
    link.add_argument("--base-delay-ms", type=float, default=5.0, help="one-way base delay (default 5)")
    link.add_argument("--speedup", type=float, default=1.0, help="play the trace faster (default 1)")
    add_tls_arguments(parser, "device-<user>, else device-0")


def add_fleet_commands(commands) -> None:
    devices = commands.add_parser("devices", help="emulated devices running a workload (the testbed's users)")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="run many emulated devices in one process, each a user with its own draft model, route and link",
        description="Every device follows the controller's allocation of its user, reaches the edges through its "
        "link (`via`, its port on the link emulator), drafts with its own llama.cpp context (paced like the "
        "profile's phone with pacing.dilation > 0) and sends the workload's requests (Poisson arrivals over the "
        "prompt set, seeded per user). Prints a TANDEM-READY line once every device has its allocation; with "
        "workload.until_s set it exits when the last request finished, printing a summary. Config: "
        "device_client/fleet.py (FleetConfig).")
    run.add_argument("--config", type=Path, required=True, help="fleet YAML (controller, users, workload, pacing)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any)")
    run.add_argument("--results", type=Path, help="append one JSON line per finished request here")
    add_tls_arguments(run, "device-<user> for each user")
    run.set_defaults(handler=lazy_handler("device_client.cli:run_fleet"))


def register(commands: Commands) -> None:
    generate = commands.add_parser(
        "generate",
        help="generate an answer through an edge server",
        description="Draft on this device, verify on the edge, stream the answer; ends with a summary "
        "(or one JSON object with --json). Exit codes: 2 bad arguments, 3 edge unreachable, 1 edge error.",
    )
    add_generate_arguments(generate)
    generate.set_defaults(handler=lazy_handler("device_client.cli:run_generate"))
    add_fleet_commands(commands)
