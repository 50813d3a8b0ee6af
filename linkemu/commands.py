"""`tandem linkemu serve`: the link emulator's command."""

from __future__ import annotations

from pathlib import Path

from tandem.commands import Commands, lazy_handler
from tandem.tls import add_tls_arguments


def register(commands: Commands) -> None:
    linkemu = commands.add_parser("linkemu", help="trace-driven link emulator between devices and edges")
    actions = linkemu.add_subparsers(dest="linkemu_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve", help="run shaping proxies, one per user, rates replayed from a channel trace",
        description="A user-space proxy per user between its device and its edge server, shaping both directions "
        "independently: rate = share x edge bandwidth x spectral efficiency of the current trace slot, plus a "
        "base one-way delay; bytes wait through outages (SE = 0), and the connection breaks only when an outage "
        "outlasts --outage-limit. Either --config FILE (several users; YAML, see docs/linkemu.md) or one link "
        "from flags. With --control-listen, a controller watches per-pair SINR reports and sets associations and "
        "shares at run time (LinkControl, proto/tandem/wire/v1/linkemu.proto). Prints 'linkemu control on "
        "HOST:PORT' if enabled, then one 'linkemu ready' line per user, and serves until SIGINT/SIGTERM.")
    serve.add_argument("--config", type=Path, help="YAML config (trace, edges, users with listen/edge/share)")
    serve.add_argument("--trace", type=Path, help="channel trace file (from `tandem traces generate`)")
    serve.add_argument("--user", type=int, help="single link: the user's index in the trace (default 0)")
    serve.add_argument("--edge", type=int, help="single link: the edge's index in the trace (default 0)")
    serve.add_argument("--upstream", help="single link: the edge server's address HOST:PORT")
    serve.add_argument("--listen", help="single link: where devices connect (default 127.0.0.1:0 = free port)")
    serve.add_argument("--share", type=float, help="single link: share of the edge's bandwidth, at least 1e-4 "
                                                   "(default 1)")
    serve.add_argument("--base-delay-ms", type=float, help="one-way base delay (default 5)")
    serve.add_argument("--outage-limit", type=float, help="seconds of outage before a connection breaks "
                                                          "(default 10)")
    serve.add_argument("--speedup", type=float, help="play the trace this many times faster (default 1)")
    serve.add_argument("--dilation", type=float, help="time dilation D for hardware pacing: rates / D, delays and "
                       "slot lengths x D (0 = off, the default; docs/testbed.md)")
    serve.add_argument("--start-slot", type=int, help="trace slot to start at (default 0)")
    serve.add_argument("--no-loop", action="store_true", help="hold the last slot instead of replaying the trace")
    serve.add_argument("--max-connections", type=int, help="concurrent TCP connections per user port, each "
                       "buffering up to 1 MiB per direction; more are closed at once (default 8)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = any; default off)")
    serve.add_argument("--control-listen", metavar="HOST:PORT",
                       help="serve the LinkControl gRPC service here (measurement reports every slot, assignments "
                            "from the controller; port 0 = any free port; default off)")
    serve.add_argument("--admin-token-file", type=Path, help="the admin token, which lets a caller without an "
                       "admin certificate call Assign (else $TANDEM_ADMIN_TOKEN; in plaintext without one, the "
                       "control service is open)")
    add_tls_arguments(serve, "linkemu")
    serve.set_defaults(handler=lazy_handler("linkemu.cli:run_serve"))
