"""What every Tandem gRPC server does before a servicer sees a call: who is calling, may they, is it protobuf.

One interceptor (``Guard``) wraps every method of a server:

* **Malformed bytes** — a request that does not parse as its message type — are refused with INVALID_ARGUMENT
  and one log line per method and minute (``QuietLog``), instead of gRPC's INTERNAL/UNKNOWN and a traceback per
  message.  Servicers therefore only ever see parsed messages.
* **Access** — each service (or method) names the roles that may call it (``Access``); a caller's roles come from
  its client certificate (mutual TLS: the common name is the identity, tandem/certs.py ``role_of``) and from the
  admin bearer token (``authorization: Bearer TOKEN``), which grants "admin".  Over TLS a call without a role the
  method needs is refused (UNAUTHENTICATED without any identity, PERMISSION_DENIED with the wrong one).  In
  plaintext (``--insecure``) nobody has an identity: calls are open, except that a configured admin token is still
  required for admin methods.

Servicers read the caller's identity with ``caller_of(context)`` (the edge binds sessions to it).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from tandem.certs import ADMIN_ROLES, role_of
from tandem.tls import SERVER_KEEPALIVE, Transport

log = logging.getLogger(__name__)
Roles = frozenset[str]
DEVICES: Roles = frozenset({"device"})
ADMINS: Roles = frozenset(ADMIN_ROLES)
ANYONE = None  # health checks, reflection: any caller the transport let in
MAX_ECHO = 64  # longest caller-supplied text echoed back in an error message
MAX_STREAMS_PER_CONNECTION = 256  # calls one connection may have open at once


def echo(text: str) -> str:
    """Caller-supplied text as an error message may quote it: bounded, so errors never amplify input."""
    return repr(text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "…")


@dataclass(frozen=True)
class Caller:
    identity: str | None  # the certificate's common name (None in plaintext or without a certificate)
    roles: Roles

    def user_index(self) -> int | None:
        """The user a device certificate speaks for ("device-3" -> 3), else None."""
        if self.identity and self.identity.startswith("device-") and self.identity[7:].isdigit():
            return int(self.identity[7:])
        return None

    def may_act_for(self, user: int | None) -> bool:
        """A device certificate acts only for its own user ("device-3": user 3; a device name without a number:
        no user at all); other identities (plaintext: none) are not bound to a user."""
        if "device" not in self.roles:
            return True
        return user is None or user == self.user_index()


def _bearer(context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, given = value.partition(" ")
            return given.strip() if scheme.lower() == "bearer" else ""
    return None


def caller_of(context, admin_token: str | None = None) -> Caller:
    identity = None
    names = (context.auth_context() or {}).get("x509_common_name")
    roles: set[str] = set()
    if names:
        identity = names[0].decode(errors="replace")
        try:
            roles.add(role_of(identity))
        except ValueError:
            pass  # a certificate of this CA with a name outside the convention grants nothing
    token = _bearer(context)
    if admin_token and token and hmac.compare_digest(token.encode(), admin_token.encode()):
        roles.add("admin")
    return Caller(identity, frozenset(roles))


class QuietLog:
    """At most one warning per key and ``every_s``; the next one says how many were suppressed."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-float("inf"), 0))
        if now - last < self.every_s:
            self._last[key] = (last, suppressed + 1)
            return
        note = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("%s%s", message, note)
        self._last[key] = (now, 0)


class _Malformed:
    """Stands in for a request that did not parse (the servicer never sees it)."""


MALFORMED = _Malformed()


@dataclass(frozen=True)
class Access:
    """Roles allowed per service ("pkg.Service") or method ("/pkg.Service/Method"); unlisted: ANYONE."""

    rules: Mapping[str, Roles | None]

    def required(self, method: str) -> Roles | None:
        if method in self.rules:
            return self.rules[method]
        return self.rules.get(method.lstrip("/").partition("/")[0], ANYONE)


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, access: Access, secure: bool, admin_token: str | None = None,
                 quiet: QuietLog | None = None) -> None:
        self.access, self.secure, self.admin_token = access, secure, admin_token
        self.quiet = quiet or QuietLog()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method, required = details.method, self.access.required(details.method)
        parse = handler.request_deserializer

        def deserialize(data: bytes):
            try:
                return parse(data) if parse else data
            except Exception:  # any parser failure is the caller's malformed bytes
                return MALFORMED

        async def admit(request, context) -> None:
            refusal = self._refusal(required, context)
            if refusal is not None:
                await context.abort(*refusal)
            if request is MALFORMED:
                await self._malformed(method, context)

        if handler.request_streaming:
            def checked(requests, context):
                async def messages():
                    async for request in requests:
                        if request is MALFORMED:
                            await self._malformed(method, context)
                        yield request
                return messages()
        if not handler.request_streaming and not handler.response_streaming:
            inner = handler.unary_unary

            async def behaviour(request, context):
                await admit(request, context)
                return await inner(request, context)
            return grpc.unary_unary_rpc_method_handler(behaviour, deserialize, handler.response_serializer)
        if not handler.request_streaming:
            inner = handler.unary_stream

            async def behaviour(request, context):
                await admit(request, context)
                async for reply in inner(request, context):
                    yield reply
            return grpc.unary_stream_rpc_method_handler(behaviour, deserialize, handler.response_serializer)
        if not handler.response_streaming:
            inner = handler.stream_unary

            async def behaviour(requests, context):
                await admit(None, context)
                return await inner(checked(requests, context), context)
            return grpc.stream_unary_rpc_method_handler(behaviour, deserialize, handler.response_serializer)
        inner = handler.stream_stream

        async def behaviour(requests, context):
            await admit(None, context)
            async for reply in inner(checked(requests, context), context):
                yield reply
        return grpc.stream_stream_rpc_method_handler(behaviour, deserialize, handler.response_serializer)

    def _refusal(self, required: Roles | None, context) -> tuple[grpc.StatusCode, str] | None:
        if required is None:
            return None
        caller = caller_of(context, self.admin_token)
        if caller.roles & required:
            return None
        if not self.secure:
            if not required <= ADMINS or not self.admin_token:
                return None  # plaintext: nobody has an identity; a configured admin token guards admin-only calls
            if _bearer(context) is None:
                return grpc.StatusCode.UNAUTHENTICATED, "this call needs the admin token (authorization: Bearer)"
            return grpc.StatusCode.PERMISSION_DENIED, "the admin token is wrong"
        if caller.identity is None and _bearer(context) is None:
            return grpc.StatusCode.UNAUTHENTICATED, "this call needs a client certificate or the admin token"
        who = echo(caller.identity) if caller.identity else "this caller"
        return grpc.StatusCode.PERMISSION_DENIED, f"{who} may not call this (needs {' or '.join(sorted(required))})"

    async def _malformed(self, method: str, context) -> None:
        self.quiet.warning(f"malformed:{method}", f"refused a malformed request to {method} (not a valid message)")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message of "
                            "this method's type")


def make_server(transport: Transport, access: Access, admin_token: str | None = None,
                max_message_bytes: int = 4 << 20, quiet: QuietLog | None = None) -> grpc.aio.Server:
    """A gRPC server guarded by access rules and malformed-input checks, with keepalives and message limits."""
    return grpc.aio.server(
        interceptors=[Guard(access, transport.secure, admin_token, quiet)],
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION), *SERVER_KEEPALIVE])


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the admin token (empty without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()

