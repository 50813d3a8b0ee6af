"""Who is who in a Tandem deployment: identity names, their roles, the server names clients verify, and the
credential files of an identity. Every daemon and client uses these rules; issuing certificates is a tool
(toolbox/certs.py, `tandem certs init`).

Why: every gRPC hop (device -> linkemu -> edge, controller -> edges, admin tools -> controller) can run over mutual
TLS, so each side proves who it is with a certificate signed by one deployment-wide CA. The identity *is* the
certificate's subject common name (CN), e.g. "edge-0" or "device-3"; `role_of` turns it into a role, which servers
use for authorisation (only `ADMIN_ROLES` may call control/admin RPCs).

A client checks the server's certificate against a DNS name (via grpc's `ssl_target_name_override`) rather than the
address it dialled: a device reaches an edge through the link emulator's TCP proxy, so the address says nothing about
the peer, but a name in a certificate signed by this deployment's CA does.  Each edge's certificate names that edge
(`edge_server_name`: "edge-3.tandem"), so a device sent to edge 3 accepts edge 3 only; it also carries the role-wide
"edge.tandem" (`SERVER_NAMES`) for clients that do not know which edge they dial (`tandem generate --edge ADDR`
without `--edge-id`): those accept any edge of the deployment.

Identity names are canonical: "device-03" is refused (`role_of`), so that one user has exactly one identity name and
the per-identity limits count one identity per user.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes

# The DNS name every server certificate of a role carries and clients verify (grpc's ssl_target_name_override), so
# a client checks it reached *an edge of this deployment* whatever address or proxy it went through.  A client that
# knows which edge it dials checks that edge's own name instead (edge_server_name).
SERVER_NAMES: dict[str, str] = {"edge": "edge.tandem", "linkemu": "linkemu.tandem", "controller": "controller.tandem"}
# Identities allowed to call control/admin RPCs.
ADMIN_ROLES = frozenset({"admin", "controller"})

CA_CERT = "ca.pem"  # in a credentials folder: the CA certificate every daemon and device trusts

# A name is also a file name and a DNS label (it goes into the certificate's SANs), hence the character set and
# the 63-character limit of a DNS label. "edge-01" and "device-03" are refused so that each edge and each user has
# exactly one name (the per-identity limits count names). A device name that is not a number ("device-pixel-7a")
# is an identity that acts for no user.
_NUMBER = r"(0|[1-9][0-9]*)"
_DEVICE_USER = re.compile(rf"device-{_NUMBER}")
_NAME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("edge", re.compile(rf"edge-{_NUMBER}")),
    ("device", re.compile(rf"{_DEVICE_USER.pattern}|device-(?![0-9]+$)[a-z0-9-]+")),
    ("linkemu", re.compile(r"linkemu")),
    ("controller", re.compile(r"controller")),
    ("admin", re.compile(r"admin")),
    ("health", re.compile(r"health")),  # container health checks: a client granted only Health/Check (and reflection)
)
_MAX_NAME_LENGTH = 63


class CertError(Exception):
    """Credentials cannot be used or made as asked (a key that is not its certificate's, bad input to the CA tool,
    a missing or broken CA); the message says why."""


def role_of(name: str) -> str:
    """The role of an identity name: "edge" (edge-<int>), "device" (device-<int> or device-<[a-z0-9-]+> that is not
    a number), "linkemu", "controller" or "admin". Numbers are written without leading zeros. ValueError for any other
    name."""
    if len(name) <= _MAX_NAME_LENGTH:
        for role, pattern in _NAME_PATTERNS:
            if pattern.fullmatch(name):
                return role
    raise ValueError(
        f"{name!r} is not an identity name: expected edge-<number>, device-<number> (numbers without leading zeros), "
        f"device-<[a-z0-9-]+>, linkemu, controller, admin or health (at most {_MAX_NAME_LENGTH} characters)"
    )


def device_user(name: str | None) -> int | None:
    """The user a device identity speaks for ("device-3" -> 3); None for any other name, "device-03" included."""
    if name is None or len(name) > _MAX_NAME_LENGTH or not _DEVICE_USER.fullmatch(name):
        return None
    return int(name[len("device-"):])


def edge_server_name(edge: int) -> str:
    """The DNS name only edge `edge`'s certificate carries: what a device sent to that edge checks."""
    if isinstance(edge, bool) or not isinstance(edge, int) or edge < 0:
        raise ValueError(f"an edge id is a non-negative integer, not {edge!r}")
    return f"edge-{edge}.tandem"


def check_key_pair(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The certificate and key of `cert_pem` and `key_pem`, after checking that the key is the certificate's
    (CertError otherwise): a server given mismatched files would fail every handshake with an obscure error, and a CA
    key from another CA would sign certificates that verify against nothing."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CertError(f"not a PEM certificate and its unencrypted key: {error}") from None
    if public_der(key.public_key()) != public_der(cert.public_key()):
        raise CertError("the key is not the certificate's")
    return cert, key


def identity_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """(CA certificate, the identity's certificate, its key) in `folder`: what a daemon needs for mutual TLS.

    Only paths: the name is not checked (callers that take it from users may check it with role_of first).
    """
    folder = Path(folder)
    return folder / CA_CERT, folder / f"{name}.pem", folder / f"{name}.key"


def public_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
