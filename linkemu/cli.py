"""`tandem linkemu serve`: the trace-driven link emulator as a daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tandem.cli_support import EXIT_OK, EXIT_USAGE, UsageError, fail
from tandem.config_files import load_config
from tandem.tls import TlsError, load_transport, tls_overrides


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
    from tandem.trace_format import TraceError, load_trace

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
    from linkemu.config import split_address
    from linkemu.control import SERVICE_NAME, control_server
    from tandem.daemon import Daemon

    config = emulator.config
    listening = await emulator.start()
    async with Daemon("linkemu") as daemon:
        ready, control_address = [], None
        if config.control_listen is not None:
            host, port = split_address(config.control_listen)
            try:
                port = daemon.listen(control_server(emulator, transport, admin_token), transport, f"{host}:{port}",
                                     [SERVICE_NAME], "the link emulator's control service")
            except OSError as error:
                raise OSError(f"control service {error}") from None
            control_address = f"{host}:{port}"
            ready.append(f"linkemu control on {control_address}")
        daemon.serve_metrics(emulator.metrics.registry, config.metrics_host, config.metrics_port)
        metrics_note = f" (metrics on {daemon.metrics_url})" if daemon.metrics_url else ""
        for user, address in listening.items():
            assignment = emulator.assignments.get(user)
            host, port = emulator.addresses[assignment.edge]
            ready.append(f"linkemu ready: user {user} on {address} -> edge {assignment.edge} at {host}:{port}, share "
                         f"{assignment.share:g}{metrics_note}")
        await daemon.run(ready, {"control": control_address,
                                 "users": {str(user): address for user, address in listening.items()}})
    await emulator.stop()
