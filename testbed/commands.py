"""`tandem testbed up | status | down` and `tandem demo`: the testbed's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from tandem.commands import Commands, lazy_handler
from testbed.config import DEFAULT_CONFIG


def add_testbed_commands(commands: Commands) -> None:
    testbed = commands.add_parser("testbed", help="bring the whole system up as local processes, follow it, "
                                  "take it down (docs/testbed.md)")
    actions = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start edges, link emulator, controller and device fleets (detached)",
                            description="Starts the testbed of the config (default deploy/testbed.yaml): E edge "
                            "servers, the link emulator replaying the scenario's Sionna trace, the controller and "
                            "the devices running the workload, every part paced at dilation D. Logs, generated "
                            "configs and per-request results go to the run folder. A part that fails to start is "
                            "named and everything started is stopped.")
    up.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="testbed YAML (default deploy/testbed.yaml)")
    up.add_argument("--no-devices", action="store_true", help="start everything but the device fleets")
    up.set_defaults(handler=lazy_handler("testbed.cli:run_up"))
    status = actions.add_parser("status", help="processes, the association table, live per-user latency")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    status.set_defaults(handler=lazy_handler("testbed.cli:run_status"))
    down = actions.add_parser("down", help="stop every process of the testbed")
    down.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    down.set_defaults(handler=lazy_handler("testbed.cli:run_down"))


DEFAULT_POLICIES = ("max-sinr-hysteresis", "tma-equal:draft_lengths=tuned")  # the baseline first


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="testbed YAML (deploy/testbed.yaml)")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), metavar="NAME[:K=V,...]",
                        help="policies to compare, the baseline first, each with optional parameters "
                        f"(default {' '.join(DEFAULT_POLICIES)})")
    parser.add_argument("--phase-s", type=float, default=60.0, help="emulated seconds of arrivals per policy "
                        "(default 60, about 70 requests; real time is D times longer, about 5 minutes per policy "
                        "at D = 4)")


def register(commands: Commands) -> None:
    add_testbed_commands(commands)
    demo = commands.add_parser(
        "demo",
        help="end to end: the testbed up, one workload under the baseline and the best policy swapped live, the "
        "paired reduction of time in system beside the twin's prediction, everything torn down (~12 min)",
        description="The README's main job. Prepares the models, brings the testbed of --config up (paced edges, "
        "the link emulator, the controller), replays the same seeded workload from a fresh device fleet under each "
        "policy of --policies (swapped live through the admin CLI), prints a table per policy and the paired "
        "reduction of mean time in system with its 95% CI beside the twin's prediction, then tears it all down.",
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=lazy_handler("testbed.demo:run_demo"))
