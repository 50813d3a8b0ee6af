"""`tandem linkemu serve`: the trace-driven link emulator as a daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from tandem.cli_support import EXIT_OK, EXIT_USAGE, UsageError, fail
from tandem.config_files import load_config
from tandem.readiness import announce_ready
from tandem.tls import TlsError, add_tls_arguments, load_transport, reload_certificates_on_sighup, tls_overrides


def add_linkemu_commands(commands: argparse._SubParsersAction) -> None:
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
    serve.set_defaults(handler=run_serve)


def _config_from(args: argparse.Namespace):
    from linkemu.config import LinkEmuConfig

    single = {name: getattr(args, name) for name in ("user", "edge", "upstream", "listen", "share")}
    overrides = {"trace": args.trace, "base_delay_ms": args.base_delay_ms, "outage_limit_s": args.outage_limit,
                 "speedup": args.speedup, "start_slot": args.start_slot, "metrics_port": args.metrics_port,
                 "control_listen": args.control_listen, "dilation": args.dilation,
                 "max_connections": args.max_connections,
                 "loop": False if args.no_loop else None, **tls_overrides(args)}
    if args.config is None:
        if args.upstream is None:
            raise UsageError("give --config FILE, or --trace and --upstream (plus --user/--edge/--share) for "
                             "one link")
        user, edge = single["user"] or 0, single["edge"] or 0
        link = {"user": user, "edge": edge, "share": 1.0 if single["share"] is None else single["share"]}
        if single["listen"]:
            link["listen"] = single["listen"]
        overrides.update(edges=[{"index": edge, "address": single["upstream"]}], users=[link])
    elif any(value is not None for value in single.values()):
        raise UsageError("--user/--edge/--upstream/--listen/--share describe a single link; with --config, set "
                         "them in the file")
    return load_config(LinkEmuConfig, args.config, overrides, UsageError)


def run_serve(args: argparse.Namespace) -> int:
    from tandem.auth import TokenError, client_token
    from tandem.traces.format import TraceError, load_trace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = _config_from(args)
        # Credentials are needed only by the control service: the proxies carry TLS bytes without reading them.
        transport = load_transport(config.tls, "linkemu") if config.control_listen is not None else None
        admin_token = client_token(args.admin_token_file)
        trace = load_trace(config.trace)
        from linkemu.emulator import LinkEmulator

        emulator = LinkEmulator(config, trace)
    except (UsageError, TraceError, ValueError, TlsError, TokenError) as error:
        return fail(str(error), EXIT_USAGE)
    try:
        asyncio.run(_serve(emulator, transport, admin_token))
    except OSError as error:  # e.g. the listen address is taken
        return fail(f"cannot listen: {error}", EXIT_USAGE)
    return EXIT_OK


async def _serve(emulator, transport, admin_token: str | None) -> None:
    from prometheus_client import start_http_server

    from linkemu.config import split_address
    from linkemu.control import start_control

    listening = await emulator.start()
    control_server, control_address = None, None
    if emulator.config.control_listen is not None:
        host, port = split_address(emulator.config.control_listen)
        control_server, port = await start_control(emulator, host, port, transport, admin_token)
        control_address = f"{host}:{port}"
        print(f"linkemu control on {control_address}", flush=True)
    metrics_note, metrics_port = "", None
    http_server = None
    if emulator.config.metrics_port is not None:
        metrics_host = emulator.config.metrics_host
        http_server, _ = start_http_server(emulator.config.metrics_port, addr=metrics_host,
                                           registry=emulator.metrics.registry)
        metrics_port = http_server.server_port
        metrics_note = f" (metrics on http://{metrics_host}:{metrics_port}/metrics)"
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    reload_certificates_on_sighup()
    for user, address in listening.items():
        assignment = emulator.assignments.get(user)
        host, port = emulator.addresses[assignment.edge]
        print(f"linkemu ready: user {user} on {address} -> edge {assignment.edge} at {host}:{port}, share "
              f"{assignment.share:g}{metrics_note}", flush=True)
    announce_ready("linkemu", control=control_address, metrics_port=metrics_port,
                   users={str(user): address for user, address in listening.items()})
    await stop.wait()
    if control_server is not None:
        await control_server.stop(grace=1.0)
    await emulator.stop()
    if http_server is not None:
        http_server.shutdown()
