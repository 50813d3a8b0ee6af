"""`tandem generate`: send one prompt through an edge and stream the answer."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_client.decoding import MODES
from device_client.edge_handle import EdgeError, EdgeUnreachable
from device_client.generate import GenerationRequest, IncompatibleEdge, generate
from device_client.grpc_edge import EdgeConnection
from device_client.routing import ControllerRefused, ControllerUnreachable, FixedRoute, Route
from tandem.addresses import ADDRESS_PATTERN
from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail
from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, load_prepared
from tandem.sampling import SamplingConfig
from tandem.tls import TlsError, add_tls_arguments, tls_overrides, transport_from_args


class GenerateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edge: str | None = Field(default=None, pattern=ADDRESS_PATTERN)
    controller: str | None = Field(default=None, pattern=ADDRESS_PATTERN)
    via: str | None = Field(default=None, pattern=ADDRESS_PATTERN)
    edge_id: int | None = Field(default=None, ge=0, lt=1 << 32)
    user: int | None = Field(default=None, ge=0, lt=1 << 32)
    mode: str
    max_tokens: int = Field(ge=1, le=1 << 20)
    temperature: float = Field(ge=0, le=100, allow_inf_nan=False)
    top_k: int = Field(ge=0)
    top_p: float = Field(ge=0, le=1, allow_inf_nan=False)
    seed: int = Field(ge=0, lt=1 << 64)
    draft_length: int = Field(ge=1, le=256)
    threads: int = Field(ge=1, le=256)
    prompt: str = Field(min_length=1)


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
        "link emulation", "reach the edge through an in-process trace-driven link emulator (see `tandem linkemu "
        "serve`): rate = share x edge bandwidth x the trace's spectral efficiency, slot by slot")
    link.add_argument("--trace", type=Path, help="channel trace file (from `tandem traces generate`)")
    link.add_argument("--trace-user", type=int, default=0, help="the user in the trace (default 0)")
    link.add_argument("--trace-edge", type=int, default=0, help="the edge in the trace (default 0)")
    link.add_argument("--share", type=float, default=1.0, help="share of the edge's bandwidth (default 1)")
    link.add_argument("--base-delay-ms", type=float, default=5.0, help="one-way base delay (default 5)")
    link.add_argument("--speedup", type=float, default=1.0, help="play the trace faster (default 1)")
    add_tls_arguments(parser, "device-<user>, else device-0")


def run_generate(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        checked = GenerateArgs(
            edge=args.edge, edge_id=args.edge_id, controller=args.controller, via=args.via, user=args.user,
            mode=args.mode,
            max_tokens=args.max_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, seed=args.seed, draft_length=args.draft_length,
            threads=args.threads, prompt=prompt,
        )
    except ValidationError as error:
        return fail("; ".join(f"--{e['loc'][0].replace('_', '-')}: {e['msg']}" for e in error.errors()), EXIT_USAGE)
    if (checked.edge is None) == (checked.controller is None):
        return fail("give either --edge or --controller (with --user)", EXIT_USAGE)
    if checked.controller is not None and checked.user is None:
        return fail("--controller needs --user (this device's id in the topology)", EXIT_USAGE)
    if checked.controller is None and (checked.user is not None or checked.via is not None):
        return fail("--user and --via go with --controller", EXIT_USAGE)
    if checked.edge is None and checked.edge_id is not None:
        return fail("--edge-id goes with --edge (the controller names the edge itself)", EXIT_USAGE)
    if checked.controller is not None and args.trace is not None:
        return fail("--trace emulates one fixed link; with --controller use `tandem linkemu serve` and --via",
                    EXIT_USAGE)
    try:
        draft_path = args.draft or load_prepared(
            (args.data_dir or default_data_dir()) / "models" / DEFAULT_MODEL_NAME
        ).draft_gguf
        if not draft_path.is_file():
            raise ModelError(f"draft model not found: {draft_path}")
    except ModelError as error:
        return fail(str(error), EXIT_USAGE)

    request = GenerationRequest(
        prompt=checked.prompt, mode=checked.mode, max_tokens=checked.max_tokens,
        sampling=SamplingConfig(checked.temperature, checked.top_k, checked.top_p, checked.seed),
        draft_length=checked.draft_length, ignore_eos=args.ignore_eos, raw_prompt=args.raw_prompt,
    )
    try:
        link = _trace_link(args, checked.edge)
        transport = transport_from_args(args, f"device-{checked.user or 0}")
    except (ValueError, TlsError) as error:
        return fail(str(error), EXIT_USAGE)
    try:
        if checked.controller is not None:
            from device_client.routing import ControllerRoute

            route = ControllerRoute(checked.controller, checked.user, checked.via, args.connect_timeout,
                                    transport=transport)
            return _run(args, request, draft_path, checked.threads, route, checked.user)
        with link or nullcontext():  # the emulated link's port is known once it started
            address = checked.edge if link is None else link.address
            return _run(args, request, draft_path, checked.threads,
                        EdgeConnection(address, args.connect_timeout, transport=transport,
                                       edge_id=checked.edge_id))
    except ControllerUnreachable as error:
        return fail(str(error), EXIT_UNREACHABLE)
    except ControllerRefused as error:
        return fail(str(error), EXIT_USAGE)


def _trace_link(args: argparse.Namespace, edge: str):
    """A ProxyThread carrying the session through the trace-driven emulator, or None without --trace."""
    if args.trace is None:
        return None
    from linkemu.emulator import LinkEmulator
    from linkemu.proxy import ProxyThread
    from tandem.traces.format import load_trace

    emulator = LinkEmulator.single_link(load_trace(args.trace), args.trace, edge, args.trace_user, args.trace_edge,
                                        args.share, args.base_delay_ms, args.speedup)
    return ProxyThread(*emulator.proxies.values())


def _run(args: argparse.Namespace, request: GenerationRequest, draft_path: Path, threads: int,
         target: EdgeConnection | Route, user: int | None = None) -> int:
    from device_client.draft import LlamaCppDraftEngine

    route = target if isinstance(target, Route) else FixedRoute(target)
    try:
        info = route.current().info()
        draft = LlamaCppDraftEngine(draft_path, n_threads=threads)
        on_text = None if args.json else (lambda text: print(text, end="", flush=True))
        result, summary = generate(route, draft, request, on_text, info, user)
    except EdgeUnreachable as error:
        return fail(str(error), EXIT_UNREACHABLE)
    except IncompatibleEdge as error:
        return fail(str(error), EXIT_USAGE)
    except EdgeError as error:
        return fail(f"the edge refused the session: {error}", EXIT_FAILED)
    finally:
        route.close()
    if args.json:
        print(json.dumps(summary))
    else:
        print()
        print(_summary_line(summary), file=sys.stderr)
    return EXIT_OK


def _summary_line(s: dict) -> str:
    parts = [f"{s['generated_tokens']} tokens in {s['elapsed_s']:.2f} s ({s['tokens_per_s']:.1f} tok/s)",
             f"ttft {s['ttft_s']:.3f} s" if s["ttft_s"] is not None else "no tokens"]
    if s["rounds"]:
        parts += [f"{s['rounds']} rounds", f"acceptance {s['acceptance_rate']:.2f}",
                  f"accepted/block {s['mean_accepted_length']:.2f}"]
    if s["draft_hidden_fraction"] is not None:
        parts.append(f"draft hidden {s['draft_hidden_fraction']:.0%}")
    if s["migrations"]:
        parts.append(f"{s['migrations']} migrations over {len(set(s['edges']))} edges")
    parts.append(f"{s['bytes_up']} B up / {s['bytes_down']} B down")
    return f"[{s['mode']}] " + ", ".join(parts)


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
    run.set_defaults(handler=run_fleet)


def run_fleet(args: argparse.Namespace) -> int:
    import logging
    import signal

    from device_client.fleet import Fleet, FleetConfig
    from device_client.workload import WorkloadError
    from tandem.cli_support import UsageError, build_config
    from tandem.profiles import ProfileError, load_profile
    from tandem.readiness import announce_ready

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = build_config(FleetConfig, args.config, {"metrics_port": args.metrics_port, "results": args.results,
                                                         **tls_overrides(args)})
        profile = load_profile(config.pacing.profile) if config.pacing.profile else None
        config.workload.load_prompts()
        draft_path = config.draft or load_prepared(
            (config.data_dir or default_data_dir()) / "models" / DEFAULT_MODEL_NAME).draft_gguf
        if not draft_path.is_file():
            raise ModelError(f"draft model not found: {draft_path}")
    except (UsageError, ProfileError, WorkloadError, ModelError) as error:
        return fail(str(error), EXIT_USAGE)
    try:
        fleet = Fleet(config, draft_path, profile)
    except TlsError as error:
        return fail(str(error), EXIT_USAGE)
    except ControllerUnreachable as error:
        return fail(str(error), EXIT_UNREACHABLE)
    except ControllerRefused as error:
        return fail(str(error), EXIT_USAGE)
    metrics_port = None
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        http_server, _ = start_http_server(config.metrics_port, addr=config.metrics_host,
                                           registry=fleet.metrics.registry)
        metrics_port = http_server.server_port
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: fleet.stop())
    fleet.start()
    print(f"devices ready: {len(config.users)} users", flush=True)
    announce_ready("devices", users=[user.id for user in config.users], metrics_port=metrics_port)
    fleet.join()
    fleet.close()
    print(json.dumps({"completed": fleet.completed, "failed": fleet.failed, "pacing": fleet.pacing_summary()}),
          flush=True)
    return EXIT_OK
