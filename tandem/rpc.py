"""What every Tandem gRPC server does before a servicer sees a call: who is calling, may they, is it protobuf.

One interceptor (``Guard``) wraps every method of a server:

* **Malformed bytes** — a request that does not parse as its message type — are refused with INVALID_ARGUMENT
  and one log line per method and minute (``QuietLog``), instead of gRPC's INTERNAL/UNKNOWN and a traceback per
  message.  Servicers therefore only ever see parsed messages.
* **Access** — each service (or method) names the roles that may call it (``Access``).  Over TLS a caller's roles
  come from its client certificate only (mutual TLS: the common name is the identity, tandem/identity.py
  ``role_of``): a call without a role the method needs is refused (UNAUTHENTICATED without a certificate,
  PERMISSION_DENIED with the wrong one), and the admin bearer token grants nothing — admin is a role, held by the
  ``admin`` certificate, not a secret any certificate could add.  In plaintext (``--insecure``, development only)
  nobody has an identity: calls a device may make are open, and admin-only calls (every role they allow is an
  admin role: EdgeControl, LinkControl, ControllerAdmin) need the daemon's configured admin token
  (``authorization: Bearer TOKEN``); a plaintext daemon without one refuses them all rather than leave them open.

Servicers read the caller's identity with ``caller_of(context)`` (the edge binds sessions to it).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from tandem.identity import ADMIN_ROLES, device_user, role_of
from tandem.tls import SERVER_KEEPALIVE, Transport

log = logging.getLogger(__name__)
Roles = frozenset[str]
DEVICES: Roles = frozenset({"device"})
ADMINS: Roles = frozenset(ADMIN_ROLES)  # the operator and the controller: the control services (EdgeControl, ...)
OPERATORS: Roles = frozenset({"admin"})  # the operator alone: ControllerAdmin (policies)
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
        """The user a device certificate speaks for ("device-3" -> 3), else None ("device-03" too: one user, one
        identity name, so the per-identity limits cannot be multiplied by spelling a number differently)."""
        return device_user(self.identity)

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


def caller_of(context) -> Caller:
    """Who calls, from the client certificate alone (plaintext: nobody); a bearer token is never an identity."""
    names = (context.auth_context() or {}).get("x509_common_name")
    if not names:
        return Caller(None, frozenset())
    identity = names[0].decode(errors="replace")
    try:
        return Caller(identity, frozenset({role_of(identity)}))
    except ValueError:  # a certificate of this CA with a name outside the convention grants nothing
        return Caller(identity, frozenset())


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
        """``admin_token``: what opens admin-only calls in plaintext (over TLS it is not used)."""
        self.access, self.secure, self.admin_token = access, secure, admin_token
        self.quiet = quiet or QuietLog()
        closed = sorted(name for name, roles in access.rules.items() if _admin_only(roles))
        if not secure and not admin_token and closed:
            log.warning("plaintext without an admin token: %s refuse every call (give this daemon an admin token, "
                        "$TANDEM_ADMIN_TOKEN, to use them)", ", ".join(closed))

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
        if not self.secure:
            return self._plaintext_refusal(required, context)
        caller = caller_of(context)
        if caller.roles & required:
            return None
        if caller.identity is None:
            return grpc.StatusCode.UNAUTHENTICATED, "this call needs a client certificate"
        return grpc.StatusCode.PERMISSION_DENIED, (f"{echo(caller.identity)} may not call this (needs "
                                                   f"{' or '.join(sorted(required))})")

    def _plaintext_refusal(self, required: Roles, context) -> tuple[grpc.StatusCode, str] | None:
        """Plaintext: nobody has an identity, so only admin-only calls are guarded, by the configured token."""
        if not _admin_only(required):
            return None
        if not self.admin_token:
            return grpc.StatusCode.PERMISSION_DENIED, ("this daemon runs in plaintext without an admin token: its "
                                                       "admin-only calls are refused (give it $TANDEM_ADMIN_TOKEN)")
        given = _bearer(context)
        if given is None:
            return grpc.StatusCode.UNAUTHENTICATED, "this call needs the admin token (authorization: Bearer)"
        if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return grpc.StatusCode.PERMISSION_DENIED, "the admin token is wrong"
        return None

    async def _malformed(self, method: str, context) -> None:
        self.quiet.warning(f"malformed:{method}", f"refused a malformed request to {method} (not a valid message)")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message of "
                            "this method's type")


def _admin_only(roles: Roles | None) -> bool:
    return roles is not None and roles <= ADMINS


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

