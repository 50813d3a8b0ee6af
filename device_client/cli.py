"""`tandem generate`: send one prompt through an edge and stream the answer."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_client.draft import DraftEngine
from device_client.edge_handle import EdgeError, EdgeUnreachable
from device_client.generate import GenerationRequest, IncompatibleEdge, generate
from device_client.grpc_edge import EdgeConnection
from device_client.routing import ControllerRefused, ControllerUnreachable, FixedRoute, Route
from device_client.speculation import PsdVariant, VariantError
from tandem.addresses import ADDRESS_PATTERN
from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, UsageError, fail
from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, load_prepared
from tandem.processes import DaemonFailed, LinkEmuProcess
from tandem.sampling import SamplingConfig
from tandem.tls import TlsError, tls_overrides, transport_from_args


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
    try:
        variant = PsdVariant.parse(args.psd_variant)
    except VariantError as error:
        return fail(f"--psd-variant: {error}", EXIT_USAGE)
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
        psd_variant=variant,
    )
    try:
        transport = transport_from_args(args, f"device-{checked.user or 0}")
    except (ValueError, TlsError) as error:
        return fail(str(error), EXIT_USAGE)
    try:
        if checked.controller is not None:
            from device_client.routing import ControllerRoute

            route = ControllerRoute(checked.controller, checked.user, checked.via, args.connect_timeout,
                                    transport=transport)
            return _run(args, request, draft_path, checked.threads, route, checked.user)
        link = _trace_link(args, checked.edge)
        with link or nullcontext():  # the emulated link's port is known once it started
            address = checked.edge if link is None else link.address
            return _run(args, request, draft_path, checked.threads,
                        EdgeConnection(address, args.connect_timeout, transport=transport,
                                       edge_id=checked.edge_id))
    except DaemonFailed as error:
        return fail(_why_not_started(error), EXIT_USAGE)
    except ControllerUnreachable as error:
        return fail(str(error), EXIT_UNREACHABLE)
    except ControllerRefused as error:
        return fail(str(error), EXIT_USAGE)


def _trace_link(args: argparse.Namespace, edge: str) -> LinkEmuProcess | None:
    """The link emulator for --trace (`tandem linkemu serve` carrying this request's one link, as a child process:
    the device reaches it over its socket, as it would any other), not started; None without --trace."""
    if args.trace is None:
        return None
    return LinkEmuProcess(["--trace", str(args.trace), "--upstream", edge, "--user", str(args.trace_user),
                           "--edge", str(args.trace_edge), "--share", repr(args.share),
                           "--base-delay-ms", repr(args.base_delay_ms), "--speedup", repr(args.speedup)],
                          start_timeout=120)


def _why_not_started(error: DaemonFailed) -> str:
    """The emulator's own reason (its last "error:" line, e.g. a missing trace file), else the whole failure."""
    reasons = [line.split("error: ", 1)[1] for line in str(error).splitlines() if "error: " in line]
    return f"the link emulator did not start: {reasons[-1] if reasons else error}"


def _run(args: argparse.Namespace, request: GenerationRequest, draft_path: Path, threads: int,
         target: EdgeConnection | Route, user: int | None = None) -> int:
    from device_client.draft import LlamaCppDraftEngine

    route = target if isinstance(target, Route) else FixedRoute(target)
    try:
        info = route.current().info()
        draft = _paced(LlamaCppDraftEngine(draft_path, n_threads=threads), args.profile, info.dilation, args.json)
        on_text = None if args.json else (lambda text: print(text, end="", flush=True))
        result, summary = generate(route, draft, request, on_text, info, user)
    except EdgeUnreachable as error:
        return fail(str(error), EXIT_UNREACHABLE)
    except (IncompatibleEdge, UsageError) as error:
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


def _paced(draft: DraftEngine, profile_path: Path | None, dilation: float, quiet: bool) -> DraftEngine:
    """The draft paced like the profile's phone at the edge's dilation, so that emulated times mean that phone."""
    from device_client.pacing import PacedDraftEngine
    from tandem.pacing import Pacer
    from tandem.profiles import ProfileError, load_profile

    if profile_path is None:
        if dilation > 0 and not quiet:
            print(f"note: the edge is paced (D={dilation:g}): times are emulated, but this device drafts at its own "
                  "speed; give --profile to pace it like the profile's phone", file=sys.stderr)
        return draft
    if dilation == 0:
        raise UsageError("--profile paces drafting at the edge's dilation, but the edge is not paced")
    try:
        profile = load_profile(profile_path)
    except ProfileError as error:
        raise UsageError(str(error)) from None
    return PacedDraftEngine(draft, profile.device, Pacer(dilation))


def _summary_line(s: dict) -> str:
    clock = "" if s["clock"] == "wall" else f" {s['clock']}"
    parts = [f"{s['generated_tokens']} tokens in {s['elapsed_s']:.2f} s{clock} ({s['tokens_per_s']:.1f} tok/s)",
             f"ttft {s['ttft_s']:.3f} s" if s["ttft_s"] is not None else "no tokens"]
    if s["rounds"]:
        parts += [f"{s['rounds']} rounds", f"acceptance {s['acceptance_rate']:.2f}",
                  f"accepted/block {s['mean_accepted_length']:.2f}"]
    if s["draft_hidden_fraction"] is not None:
        parts.append(f"draft hidden {s['draft_hidden_fraction']:.0%}")
    if s["efficiency"] is not None:
        parts.append(f"efficiency {s['efficiency']:.2f} of the bound "
                     + "/".join(f"{part} {seconds:.2f}" for part, seconds in s["breakdown_s"].items()) + " s")
    if s["migrations"]:
        parts.append(f"{s['migrations']} migrations over {len(set(s['edges']))} edges")
    parts.append(f"{s['bytes_up']} B up / {s['bytes_down']} B down")
    mode = s["mode"] if s["psd_variant"] is None else f"{s['mode']} {s['psd_variant']}"
    return f"[{mode}] " + ", ".join(parts)


def run_fleet(args: argparse.Namespace) -> int:
    import logging
    import signal

    from device_client.fleet import Fleet, FleetConfig
    from device_client.workload import WorkloadError
    from tandem.cli_support import UsageError
    from tandem.config_files import load_config
    from tandem.profiles import ProfileError, load_profile
    from tandem.readiness import announce_ready

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(FleetConfig, args.config, {"metrics_port": args.metrics_port, "results": args.results,
                                                        **tls_overrides(args)}, UsageError)
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
