"""`tandem controller serve | status` and `tandem policy list | show | set`: the controller's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from tandem.commands import Commands, lazy_handler
from tandem.tls import add_tls_arguments

DEFAULT_CONTROLLER = "127.0.0.1:50070"


def add_controller_commands(commands: Commands) -> None:
    controller = commands.add_parser("controller", help="the control plane: user association and resource "
                                     "allocation every slot")
    actions = controller.add_subparsers(dest="controller_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve", help="run the controller daemon",
        description="Every slot, gather SINR/spectral efficiency per user-edge pair (from the link emulator), edge "
        "load and device reports; run the active policy; push the versioned decision: association and bandwidth "
        "share to the link emulator, compute shares to each edge, allocations to the devices. The topology comes "
        "from --config (YAML, docs/controller.md); topology, active policy and the latest decision persist in "
        "--state and a restart resumes from them. Prints 'controller ready on HOST:PORT' and serves until "
        "SIGINT/SIGTERM.")
    serve.add_argument("--config", type=Path, help="topology and settings (YAML); without it the topology stored "
                       "in --state is used")
    serve.add_argument("--state", type=Path, help="SQLite state file (default <data-dir>/controller.sqlite)")
    serve.add_argument("--data-dir", type=Path, help="default $TANDEM_DATA_DIR or ~/.cache/tandem")
    serve.add_argument("--listen", help=f"gRPC address HOST:PORT (default {DEFAULT_CONTROLLER}; port 0 = any)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = any; default off)")
    serve.add_argument("--linkemu", metavar="HOST:PORT", help="the link emulator's control address")
    serve.add_argument("--slot", type=float, help="seconds between decisions (default 1)")
    serve.add_argument("--policy", help="start with this policy (default: the stored one, else the config's, "
                       "else tma-equal)")
    serve.add_argument("--admin-token-file", type=Path, help="plaintext only: file holding the admin token (else "
                       "$TANDEM_ADMIN_TOKEN, else one is made beside the state file); over TLS the admin "
                       "certificate administers")
    add_tls_arguments(serve, "controller")
    serve.set_defaults(handler=lazy_handler("controller.cli:run_serve"))

    status = actions.add_parser("status", help="association table, shares, policy, last decision")
    _add_address(status)
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    add_tls_arguments(status, "admin")
    status.set_defaults(handler=lazy_handler("controller.cli:run_status"))


def add_policy_commands(commands: Commands) -> None:
    policy = commands.add_parser("policy", help="list, show and swap the controller's policy (as admin)")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the policies installed on the controller")
    show = actions.add_parser("show", help="the active policy and its parameters")
    swap = actions.add_parser("set", help="make NAME the active policy from the next slot on",
                              description="Swap the controller's policy at run time; sessions keep running. "
                              "Over TLS as the admin identity (--tls-name admin, the default); in plaintext with "
                              "the token from --admin-token-file or $TANDEM_ADMIN_TOKEN.")
    swap.add_argument("name", help="policy name (see `tandem policy list`)")
    swap.add_argument("--checkpoint", metavar="NAME", help="a learned policy's checkpoint: the name of its folder "
                      "in the controller's policy directory (its config's policy_dir), never a path")
    swap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="a parameter of the policy (repeatable; numbers and true/false are parsed)")
    for parser, action in ((listing, "list"), (show, "show"), (swap, "set")):
        _add_address(parser)
        parser.add_argument("--admin-token-file", type=Path, help="file holding the admin token "
                            "(default $TANDEM_ADMIN_TOKEN; not needed with an admin certificate over TLS)")
        add_tls_arguments(parser, "admin")
        parser.set_defaults(handler=lazy_handler(f"controller.cli:run_policy_{action}"))


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", default=DEFAULT_CONTROLLER,
                        help=f"controller address HOST:PORT (default {DEFAULT_CONTROLLER})")


def register(commands: Commands) -> None:
    add_controller_commands(commands)
    add_policy_commands(commands)
