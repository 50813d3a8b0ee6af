"""`tandem edge serve`: command-line front of the edge server."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, fail
from tandem.config_files import load_config
from tandem.models import ModelError
from tandem.profiles import ProfileError, load_profile
from tandem.tls import TlsError, load_transport, tls_overrides


def run_serve(args: argparse.Namespace) -> int:
    from edge_server.config import EdgeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(EdgeConfig, args.config, {
            "engine": args.engine, "host": args.host, "port": args.port, "metrics_port": args.metrics_port,
            "model": args.model, "data_dir": args.data_dir, "max_sessions": args.max_sessions,
            "max_context": args.max_context, "max_draft_length": args.max_draft_length,
            "idle_timeout_s": args.idle_timeout, "commit_idle_s": args.commit_idle,
            "max_message_bytes": args.max_message_bytes,
            "batch_window_s": args.batch_window, "step_tokens": args.step_tokens, "edge_id": args.edge_id,
            "verification_log": args.verification_log,
            "vllm.top_n": args.top_n, "vllm.block_size": args.block_size,
            "vllm.enforce_eager": None if args.compile is None else not args.compile,
            "vllm.kv_cache_gib": args.kv_cache_gib, "llamacpp.threads": args.threads,
            "llamacpp.slots": args.slots, "pacing.profile": args.profile, "pacing.dilation": args.dilation,
            "pacing.compute_scale": args.compute_scale, "max_sessions_per_identity": args.max_sessions_per_identity,
            "open_rate_per_s": args.open_rate, "max_request_tokens": args.max_request_tokens,
            "drain_s": args.drain, **tls_overrides(args),
        }, UsageError)
        if config.model is not None and not config.model.exists():
            raise UsageError(f"model not found: {config.model}")
        if config.pacing.profile is not None:
            load_profile(config.pacing.profile)  # a bad profile is refused now, not after the engine started
        transport = load_transport(config.tls, f"edge-{config.edge_id or 0}")
        from edge_server.server import serve

        asyncio.run(serve(config, transport))
    except (UsageError, ModelError, ProfileError, TlsError) as error:
        return fail(str(error), EXIT_USAGE)
    except OSError as error:  # the port is taken, ...
        return fail(str(error), EXIT_FAILED)
    return EXIT_OK
