"""`tandem health HOST:PORT`: is a daemon serving? (grpc.health.v1, which every Tandem gRPC daemon serves.)

Exit 0 when the service reports SERVING, 1 otherwise: what a container health check or a script waits on.  Health
is open to any identity the daemon's TLS admits, so a check needs no admin credential: it presents the identity
``--tls-name`` names (default admin, the operator's), e.g. a container's own (``controller``), or ``health``, a client
identity granted nothing else, where the daemon's own certificate may only serve (edges, the link emulator).
"""

from __future__ import annotations

import argparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tandem.addresses import ADDRESS_PATTERN
from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from tandem.tls import TlsError, transport_from_args


def run_health(args: argparse.Namespace) -> int:
    import re

    if not re.match(ADDRESS_PATTERN, args.address):
        return fail(f"address {args.address!r} is not HOST:PORT", EXIT_USAGE)
    if args.edge_id is not None and (args.role != "edge" or args.edge_id < 0):
        return fail("--edge-id names an edge: a number >= 0, with --role edge", EXIT_USAGE)
    try:
        transport = transport_from_args(args, "admin")
    except TlsError as error:
        return fail(f"{error} (--tls-name picks another identity)", EXIT_USAGE)
    with transport.channel(args.address, args.role, edge_id=args.edge_id) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service),
                                                              timeout=args.timeout)
        except grpc.RpcError as error:
            return fail(f"{args.address}: {error.code().name}", EXIT_FAILED)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILED
