"""`tandem controller serve | status` and `tandem policy list | show | set`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from pathlib import Path

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, UsageError, fail
from tandem.config_files import YamlFileError, load_config, read_yaml
from tandem.tls import tls_overrides

PARAM = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
CALL_TIMEOUT_S = 10.0
SET_POLICY_TIMEOUT_S = 120.0  # the controller loads a learned policy's network (torch, RLlib) on the first swap


def _state_of(config_file: Path | None) -> Path | None:
    """The `state` a config file names (None without one; an unreadable file is reported by load_config)."""
    if config_file is None:
        return None
    try:
        data = read_yaml(config_file)
    except YamlFileError:
        return None
    return Path(data["state"]) if isinstance(data, dict) and isinstance(data.get("state"), str) else None


def run_serve(args: argparse.Namespace) -> int:
    from controller.config import ControllerConfig, PolicySpec
    from controller.policies import make_policy
    from controller.server import StartError, serve
    from controller.state import ControllerState, StateError
    from tandem.auth import TokenError
    from tandem.models import default_data_dir
    from tandem.tls import TlsError, load_transport

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        state_path = args.state or _state_of(args.config) or (args.data_dir or default_data_dir()) / "controller.sqlite"
        state = ControllerState(state_path)
        stored = state.load_topology()
        if args.config is None and stored is None:
            raise UsageError(f"no --config given and no topology stored in {state_path}")
        base = None if args.config else stored
        config = load_config(ControllerConfig, args.config, {
            **(base or {}), "listen": args.listen, "metrics_port": args.metrics_port, "linkemu": args.linkemu,
            "slot_s": args.slot, "state": state_path, "admin_token_file": args.admin_token_file,
            **tls_overrides(args)}, UsageError)
        transport = load_transport(config.tls, "controller")
        make_policy(config.policy.name, config.policy.seed, **config.policy.params)  # refuse an unknown one now
        if args.policy:
            spec = PolicySpec(name=args.policy, seed=config.policy.seed)
            make_policy(spec.name, spec.seed)  # refuse an unknown name now, not in the loop
            state.save_policy(spec)
        asyncio.run(serve(config, state, transport))
    except (UsageError, StateError, TokenError, StartError, TlsError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    except OSError as error:  # a port in use, a state directory that cannot be made
        return fail(f"cannot start the controller: {error}", EXIT_USAGE)
    return EXIT_OK


def _call(args: argparse.Namespace, method: str, request, admin: bool = False):
    """One unary call to the controller; (reply, None) or (None, exit code after printing the reason)."""
    import grpc  # noqa: F401  (its errors below)

    from tandem.auth import TokenError, client_token
    from tandem.rpc import bearer_metadata
    from tandem.tls import TlsError, transport_from_args
    from tandem.wire.v1 import control_pb2_grpc

    try:
        transport = transport_from_args(args, "admin")
        # Over TLS the admin certificate is the credential: a token is neither read nor sent.
        token = client_token(getattr(args, "admin_token_file", None)) if admin and not transport.secure else None
    except (TlsError, TokenError) as error:
        return None, fail(str(error), EXIT_USAGE)
    if admin and token is None and not transport.secure:
        return None, fail("no admin token: give --admin-token-file or set $TANDEM_ADMIN_TOKEN (or use an admin "
                          "certificate over TLS)", EXIT_USAGE)
    metadata = bearer_metadata(token)
    with transport.channel(args.controller, "controller") as channel:
        stub = (control_pb2_grpc.ControllerAdminStub if admin else control_pb2_grpc.ControllerStub)(channel)
        try:
            timeout = SET_POLICY_TIMEOUT_S if method == "SetPolicy" else CALL_TIMEOUT_S
            return getattr(stub, method)(request, timeout=timeout, metadata=metadata), None
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None, fail(f"cannot reach the controller at {args.controller} ({error.code().name}); is "
                                  f"`tandem controller serve` running?", EXIT_UNREACHABLE)
            code = EXIT_USAGE if error.code() == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
            return None, fail(f"the controller refused: {error.code().name}: {error.details()}", code)


def run_status(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from tandem.wire.v1 import control_pb2 as pb

    status, code = _call(args, "GetStatus", pb.StatusRequest())
    if status is None:
        return code
    if args.json:
        print(json.dumps(MessageToDict(status, preserving_proto_field_name=True)))
        return EXIT_OK
    age = f"{time.time() - status.decided_at:.1f} s ago" if status.decided_at else "none yet"
    params = " ".join(f"{k}={v}" for k, v in sorted(status.policy_params.items()))
    print(f"policy {status.policy} {params}".rstrip())
    print(f"decision version {status.version}, slot {status.slot}, {age}, policy time "
          f"{status.decision_seconds * 1000:.2f} ms, estimated mean latency {status.estimated_mean_latency_s:.3f} s")
    print(f"{'edge':>4}  {'address':<22} {'healthy':<8} {'sessions':>8} {'queue':>5} {'shares v':>8}")
    for e in status.edges:
        print(f"{e.edge:>4}  {e.address:<22} {'yes' if e.healthy else 'NO':<8} {e.sessions:>8} {e.queue_depth:>5} "
              f"{e.shares_version:>8}")
    print(f"{'user':>4}  {'edge':>4} {'bandwidth':>9} {'compute':>8} {'draft':>5}")
    for a in status.allocations:
        print(f"{a.user:>4}  {a.edge:>4} {a.bandwidth_share:>9.3f} {a.compute_share:>8.3f} {a.draft_length:>5}")
    return EXIT_OK


def run_policy_list(args: argparse.Namespace) -> int:
    from tandem.wire.v1 import control_pb2 as pb

    listing, code = _call(args, "ListPolicies", pb.ListPoliciesRequest(), admin=True)
    if listing is None:
        return code
    for policy in listing.policies:
        print(f"{'*' if policy.active else ' '} {policy.name:<16} {policy.description}")
    return EXIT_OK


def run_policy_show(args: argparse.Namespace) -> int:
    from tandem.wire.v1 import control_pb2 as pb

    info, code = _call(args, "GetPolicy", pb.GetPolicyRequest(), admin=True)
    if info is None:
        return code
    _print_policy(info)
    return EXIT_OK


def run_policy_set(args: argparse.Namespace) -> int:
    from tandem.wire.v1 import control_pb2 as pb

    params = {}
    for item in args.param:
        match = PARAM.match(item)
        if match is None:
            return fail(f"--param {item!r}: expected KEY=VALUE with KEY an identifier", EXIT_USAGE)
        params[match["key"]] = match["value"]
    info, code = _call(args, "SetPolicy", pb.SetPolicyRequest(name=args.name, checkpoint=args.checkpoint or "",
                                                               params=params), admin=True)
    if info is None:
        return code
    _print_policy(info)
    return EXIT_OK


def _print_policy(info) -> None:
    params = " ".join(f"{k}={v}" for k, v in sorted(info.params.items()))
    print(f"{info.name} {params}".rstrip())
    if info.description:
        print(f"  {info.description}", file=sys.stdout)
