"""How tests and benchmarks reach the daemons they start: the `tandem` CLI in a child process, the plaintext admin
token, and the mutual-TLS credentials of an identity."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc

from tandem.rpc import bearer_metadata

# In plaintext, admin-only services (EdgeControl, LinkControl, ControllerAdmin) answer only the daemon's admin token
# (without one they refuse every call): tests/conftest.py gives every daemon a test starts this one through the
# environment, and tests calling those services send it (ADMIN_AUTH, with_admin_token).
ADMIN_TOKEN = "tests-plaintext-admin-token"
ADMIN_AUTH = bearer_metadata(ADMIN_TOKEN)


class _AdminToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the admin token to every call (one method: the four kinds share its signature)."""

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details._replace(metadata=(*(details.metadata or ()), *ADMIN_AUTH)), request)

    intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = intercept_unary_unary


def with_admin_token(channel: grpc.Channel) -> grpc.Channel:
    """``channel``, its calls carrying the admin token (for plaintext EdgeControl and LinkControl stubs)."""
    return grpc.intercept_channel(channel, _AdminToken())


def run_tandem(*args: str, stdin: str | None = None, timeout: float = 600,
               env_token: str | None = None) -> subprocess.CompletedProcess:
    """The `tandem` CLI in a child process (``env_token``: its $TANDEM_ADMIN_TOKEN)."""
    env = {**os.environ, "TANDEM_ADMIN_TOKEN": env_token} if env_token is not None else None
    return subprocess.run([sys.executable, "-m", "tandem", *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, env=env)


def creds(pki: Path, name: str):
    """The Transport of identity ``name`` from a folder made by `tandem certs init`."""
    from tandem.tls import TlsSettings, load_transport

    return load_transport(TlsSettings(dir=pki, name=name), name)


def free_port() -> int:
    """A TCP port nothing on loopback listens on right now (for a daemon given a fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
