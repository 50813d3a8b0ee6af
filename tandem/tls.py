"""Transport security of every gRPC server and client: TLS with mutual authentication, plaintext only when asked.

A daemon (or a client command) is given its credentials as files — ``--tls-dir DIR`` (what `tandem certs init`
made: ``ca.pem``, ``NAME.pem``, ``NAME.key``, NAME being its identity), or ``--tls-cert/--tls-key/--tls-ca`` — or
the same through a config file's ``tls`` section or ``$TANDEM_TLS_DIR``.  With a CA, servers require a client
certificate signed by it (mutual TLS: the certificate's common name is the caller's identity, tandem/rpc.py).
Clients verify the server against the CA and against a name, not against the address they dialled: a device
reaches its edge through the link emulator's TCP proxy, which carries the TLS bytes unchanged.  The name is the
server's own when the client knows which one it dials (a device sent to edge 3 checks ``edge-3.tandem``), else its
role's (``edge.tandem``, ``linkemu.tandem``, ``controller.tandem``).  Plaintext needs ``--insecure`` (or
``$TANDEM_INSECURE=1``) and is logged as a warning; with neither credentials nor that flag a daemon refuses to start.

Keys are refused when other users can read them (tandem/private_files.py).  Servers take their certificate, key and
CA through a fetcher: after SIGHUP (``reload_certificates_on_sighup``) every TLS server of the process re-reads its
files and new connections get the new certificate, while connections already open, and the sessions on them, go on
with the one they were made with.  Client credentials are read once, when the process starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import grpc
from cryptography import x509
from pydantic import BaseModel, ConfigDict, model_validator

from tandem.identity import SERVER_NAMES, CertError, check_key_pair, edge_server_name, identity_files
from tandem.private_files import PrivateFileError, read_private

log = logging.getLogger(__name__)
TLS_DIR_ENV = "TANDEM_TLS_DIR"
INSECURE_ENV = "TANDEM_INSECURE"

# Keepalives: a peer that vanished (kill -9, a cable pulled) is noticed within ~30 s rather than at the next write,
# so its streams and sessions are released.  Servers accept pings as often as clients send them.
CLIENT_KEEPALIVE = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
SERVER_KEEPALIVE = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_ping_interval_without_data_ms", 5_000)]


class TlsError(Exception):
    """Credentials missing, unreadable or inconsistent (the CLI exits with code 2)."""


class TlsSettings(BaseModel):
    """Where a process's credentials are (a config file's ``tls`` section; flags override it)."""

    model_config = ConfigDict(extra="forbid")
    dir: Path | None = None  # from `tandem certs init`: ca.pem, NAME.pem, NAME.key
    name: str | None = None  # the identity whose files to take from ``dir`` (each process has a default)
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> "TlsSettings":
        if self.insecure and (self.dir or self.cert or self.key or self.ca):
            raise ValueError("insecure (plaintext) excludes TLS credentials")
        if (self.cert is None) != (self.key is None):
            raise ValueError("a certificate and its key go together (tls cert and key)")
        return self


@dataclass(frozen=True)
class CredentialFiles:
    """Where a process's credentials are, so that a server can read them again after a rotation."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, certificate, key) as PEM bytes; TlsError when a file is unreadable, the key is readable by other
        users, or the key is not the certificate's."""
        ca = _read(self.ca, "CA certificate") if self.ca else None
        cert = _read(self.cert, "certificate") if self.cert else None
        key = None
        if self.key:
            try:
                key = read_private(self.key, "TLS key")
            except PrivateFileError as error:
                raise TlsError(str(error)) from None
        if cert is not None and key is not None:
            try:
                check_key_pair(cert, key)
            except CertError as error:
                raise TlsError(f"{self.cert} and {self.key}: {error}") from None
        return ca, cert, key


@dataclass(frozen=True)
class Transport:
    """Loaded credentials (PEM bytes), or plaintext."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    identity: str | None = None  # whose certificate this process presents (for logs)
    files: CredentialFiles | None = None  # where they were read from: servers re-read them on SIGHUP

    @property
    def secure(self) -> bool:
        return self.ca is not None or self.cert is not None

    def describe(self) -> str:
        if not self.secure:
            return "plaintext (insecure)"
        return f"mutual TLS as {self.identity}" if self.ca and self.cert else "TLS"

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Listen on ``address`` (port 0: any free port); returns the port.  OSError when it cannot."""
        try:
            if self.secure:
                if self.cert is None:
                    raise OSError("a TLS server needs a certificate and key")
                certificate = _ServerCertificate(self)
                port = server.add_secure_port(address, grpc.dynamic_ssl_server_credentials(
                    certificate.initial, certificate.fetch, require_client_authentication=self.ca is not None))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {address}: {error}") from None
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        return port

    def _client_args(self, role: str, options, edge_id: int | None) -> tuple[grpc.ChannelCredentials | None, list]:
        if edge_id is not None and role != "edge":
            raise ValueError(f"an edge id names an edge, not a {role} server")
        options = [*CLIENT_KEEPALIVE, *(options or ())]
        if not self.secure:
            return None, options
        credentials = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        server_name = SERVER_NAMES[role] if edge_id is None else edge_server_name(edge_id)
        return credentials, [*options, ("grpc.ssl_target_name_override", server_name)]

    def channel(self, address: str, role: str, options=None, edge_id: int | None = None) -> grpc.Channel:
        """A blocking channel to a server of ``role`` ("edge", "linkemu", "controller").  ``edge_id``: the one edge
        the client means to reach (its own name is checked, so another edge of the deployment is refused at the
        handshake); without it any edge will do."""
        credentials, options = self._client_args(role, options, edge_id)
        if credentials is None:
            return grpc.insecure_channel(address, options=options)
        return grpc.secure_channel(address, credentials, options=options)

    def aio_channel(self, address: str, role: str, options=None, edge_id: int | None = None) -> grpc.aio.Channel:
        credentials, options = self._client_args(role, options, edge_id)
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, credentials, options=options)


# Every TLS server certificate this process serves, for the SIGHUP handler (weak: a stopped server's goes away).
_SERVER_CERTIFICATES: "weakref.WeakSet[_ServerCertificate]" = weakref.WeakSet()


class _ServerCertificate:
    """One server port's certificate configuration, which gRPC asks for (``fetch``) before each new connection's
    handshake: None keeps the one in force, a configuration replaces it.  ``reload`` reads the files again and
    leaves the new configuration for the next fetch; files that fail the checks change nothing."""

    def __init__(self, transport: Transport) -> None:
        self._files, self._identity = transport.files, transport.identity
        # The identity in force: a rotated certificate must carry the same common name (one daemon, one identity).
        self._subject = x509.load_pem_x509_certificate(transport.cert).subject if transport.cert else None
        self._lock = threading.Lock()  # reload runs in the event loop, fetch in gRPC's threads
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.initial = _certificate_configuration(transport.ca, transport.cert, transport.key)
        if self._files is not None:
            _SERVER_CERTIFICATES.add(self)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        try:
            ca, cert, key = self._files.read()
            if cert is None or key is None:
                raise TlsError("no certificate and key to serve with")
            certificate = self._checked(cert)
        except TlsError as error:
            log.error("SIGHUP: kept the certificate in force (%s): %s", self._identity, error)
            return
        with self._lock:
            self._pending = _certificate_configuration(ca, cert, key)
        log.info("SIGHUP: new connections get %s's certificate serial %x, valid until %s", self._identity,
                 certificate.serial_number, certificate.not_valid_after_utc.isoformat())

    def _checked(self, cert: bytes) -> x509.Certificate:
        """The new certificate, if it names the same identity and is valid now (TlsError otherwise): a rotation
        must not turn the daemon into another identity, nor into one whose handshakes all fail."""
        certificate = x509.load_pem_x509_certificate(cert)
        if self._subject is not None and certificate.subject != self._subject:
            raise TlsError(f"the new certificate is {certificate.subject.rfc4514_string()}, not "
                           f"{self._subject.rfc4514_string()}")
        now = datetime.now(timezone.utc)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise TlsError(f"the new certificate is valid from {certificate.not_valid_before_utc.isoformat()} to "
                           f"{certificate.not_valid_after_utc.isoformat()}, not now")
        return certificate


def _certificate_configuration(ca: bytes | None, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def reload_server_certificates() -> None:
    """Every TLS server of this process re-reads its certificate, key and CA (for new connections)."""
    certificates = list(_SERVER_CERTIFICATES)
    if not certificates:
        log.info("SIGHUP: no TLS server certificates to reload (plaintext)")
    for certificate in certificates:
        certificate.reload()


def reload_certificates_on_sighup() -> None:
    """Make SIGHUP reload this process's server certificates (``reload_server_certificates``): a daemon calls it once
    from its event loop.  A rotated certificate, key or CA then needs no restart, and no session is lost."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_server_certificates)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"cannot read the TLS {what} {path}: {error.strerror}") from None


def load_transport(settings: TlsSettings, default_name: str) -> Transport:
    """The credentials ``settings`` point at; when they point nowhere, ``$TANDEM_TLS_DIR``, else plaintext if
    ``$TANDEM_INSECURE`` is set, else TlsError (a process never falls back to plaintext on its own).

    ``default_name``: the identity this process uses from a TLS folder unless ``settings.name`` says otherwise.
    """
    if settings.insecure:
        return Transport()
    ca, cert, key, folder = settings.ca, settings.cert, settings.key, settings.dir
    if not any((ca, cert, key, folder)):
        if os.environ.get(TLS_DIR_ENV):
            folder = Path(os.environ[TLS_DIR_ENV])
        elif os.environ.get(INSECURE_ENV, "") not in ("", "0"):
            return Transport()
    name = settings.name or default_name
    if folder is not None:
        default_ca, default_cert, default_key = identity_files(folder, name)
        ca, cert, key = ca or default_ca, cert or default_cert, key or default_key
    if ca is None and cert is None:
        raise TlsError("no TLS credentials: give --tls-dir DIR (made by `tandem certs init DIR`) or --tls-cert, "
                       f"--tls-key and --tls-ca (or ${TLS_DIR_ENV}); --insecure (or ${INSECURE_ENV}=1) for plaintext")
    files = CredentialFiles(ca, cert, key)
    ca_pem, cert_pem, key_pem = files.read()
    return Transport(ca=ca_pem, cert=cert_pem, key=key_pem, identity=name, files=files)


def default_transport(name: str) -> Transport:
    """The credentials the environment gives a client library user ($TANDEM_TLS_DIR or $TANDEM_INSECURE)."""
    return load_transport(TlsSettings(), name)


def warn_if_plaintext(transport: Transport, who: str) -> None:
    if not transport.secure:
        log.warning("%s runs in plaintext (--insecure): anyone who reaches it can call it and read its traffic", who)


def add_tls_arguments(parser, default_name: str) -> None:
    """The transport flags every daemon and client command takes."""
    group = parser.add_argument_group(
        "transport security", f"TLS credentials (default: ${TLS_DIR_ENV}); plaintext only with --insecure")
    group.add_argument("--tls-dir", type=Path, help="folder made by `tandem certs init`: ca.pem, NAME.pem, NAME.key")
    group.add_argument("--tls-name", help=f"identity to take from --tls-dir (default {default_name})")
    group.add_argument("--tls-cert", type=Path, help="this process's certificate (PEM)")
    group.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    group.add_argument("--tls-ca", type=Path, help="the CA certificate peers must be signed by (PEM); servers then "
                       "require client certificates (mutual TLS)")
    group.add_argument("--insecure", action="store_true", default=None,
                       help=f"plaintext, no authentication (logged as a warning; also ${INSECURE_ENV}=1)")


def tls_overrides(args) -> dict[str, object]:
    """The flags of add_tls_arguments as ``config_files.load_config`` overrides of a ``tls`` section."""
    return {"tls.dir": args.tls_dir, "tls.name": args.tls_name, "tls.cert": args.tls_cert, "tls.key": args.tls_key,
            "tls.ca": args.tls_ca, "tls.insecure": args.insecure}


def transport_from_args(args, default_name: str) -> Transport:
    """For client commands without a config file: TlsError when the flags are inconsistent or unreadable."""
    from pydantic import ValidationError

    values = {key.partition(".")[2]: value for key, value in tls_overrides(args).items() if value is not None}
    try:
        settings = TlsSettings(**values)
    except ValidationError as error:
        raise TlsError("; ".join(e["msg"] for e in error.errors())) from None
    return load_transport(settings, default_name)
