"""`tandem certs init`: a development certificate authority and the certificates Tandem's daemons and devices use
for mutual TLS. What the names mean and which server names clients verify is tandem/identity.py.

Key usages are kept apart (`_USAGES`): servers (edges, the link emulator) may only serve TLS, devices and admins may
only be TLS clients, and the controller is both (it serves devices and admins, and calls the edges and the link
emulator). A device's key on a rogue server, or an edge's key used to call another daemon, fails the handshake.

`tandem certs init DIR` makes the CA and one certificate per daemon and device. It is a *development* CA: the CA key
sits unencrypted next to the certificates, which is fine for a testbed and not for production.

Layout of DIR: ca.pem + ca.key, and <name>.pem + <name>.key per identity. Keys are PEM PKCS8, unencrypted, mode 0600;
certificates are mode 0644. All keys are ECDSA P-256, signatures SHA-256.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from tandem.identity import (CA_CERT, SERVER_NAMES, CertError, check_key_pair, edge_server_name, identity_files,
                             role_of)
from tandem.private_files import PrivateFileError, read_private, write_private

CA_KEY = "ca.key"
CA_NAME = "Tandem development CA"

MAX_EDGES = 256
MAX_DEVICES = 10_000
MAX_DAYS = 36_500

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Certificates start a little in the past: another machine's clock may run behind ours.
_CLOCK_SKEW = timedelta(minutes=5)
_SERVER, _CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
# What each role's key may do in TLS.  Edges and the link emulator only serve (neither dials anything over TLS: the
# emulator's proxy forwards bytes); devices and admins (operator commands, health checks) only call; the controller
# serves devices and admins and calls the edges and the link emulator, so it needs both.
_USAGES: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    "edge": (_SERVER,), "linkemu": (_SERVER,), "controller": (_SERVER, _CLIENT), "device": (_CLIENT,),
    "admin": (_CLIENT,), "health": (_CLIENT,),
}


def init_certs(
    folder: Path,
    edges: int = 2,
    devices: int = 8,
    hosts: Sequence[str] = (),
    days: int = 365,
    force: bool = False,
    progress: Callable[[str], None] = lambda m: None,
) -> list[str]:
    """Make a new CA in `folder` and certificates for edge-0..edge-{edges-1}, linkemu, controller, admin and
    device-0..device-{devices-1}, each also naming `hosts` (IP addresses or DNS names). Returns the identity names.

    Refuses (CertError) when the folder already holds a CA unless `force`: every certificate signed by the old CA
    would stop being trusted. With `force` the CA and these identities' files are replaced; files of other
    identities are left alone (they will no longer verify).
    """
    folder = Path(folder)
    _check_range("edges", edges, 0, MAX_EDGES)
    _check_range("devices", devices, 0, MAX_DEVICES)
    _check_range("days", days, 1, MAX_DAYS)
    host_names = _check_hosts(hosts)
    existing = [folder / f for f in (CA_CERT, CA_KEY) if (folder / f).exists()]
    if existing and not force:
        raise CertError(
            f"{folder} already holds a CA ({', '.join(p.name for p in existing)}); not overwriting it, since "
            "every certificate it signed would stop being trusted (use --force to replace it)"
        )
    names = (
        [f"edge-{i}" for i in range(edges)]
        + ["linkemu", "controller", "admin", "health"]
        + [f"device-{i}" for i in range(devices)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    not_before = _utc_now() - _CLOCK_SKEW
    not_after = not_before + timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, not_before, not_after)
    # The key first: a ca.pem without its key would make the folder look initialised while nothing can be issued.
    write_private(folder / CA_KEY, _key_pem(ca_key), 0o600)
    write_private(folder / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    progress(f"CA: {folder / CA_CERT} {folder / CA_KEY}")
    for name in names:
        cert_path, key_path = _issue(folder, ca_cert, ca_key, name, host_names, not_before, not_after)
        progress(f"{name}: {cert_path} {key_path}")
    return names


def issue_certificate(
    folder: Path,
    name: str,
    hosts: Sequence[str] = (),
    days: int = 365,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[Path, Path]:
    """Issue (or re-issue, replacing its files) the certificate of identity `name`, signed by the CA in `folder`.
    Returns (certificate path, key path).

    Validity: from `not_before` (default: now, minus a few minutes for clock skew) for `days` days, or until
    `not_after` when given (which may be in the past, e.g. to test expired certificates). Without an explicit
    `not_after` the certificate ends no later than the CA: a chain is only valid while every certificate in it is.
    Naive datetimes are taken as UTC.
    """
    folder = Path(folder)
    try:
        role_of(name)
    except ValueError as error:
        raise CertError(str(error)) from None
    _check_range("days", days, 1, MAX_DAYS)
    host_names = _check_hosts(hosts)
    ca_cert, ca_key = _load_ca(folder)
    start, end = _validity(days, not_before, not_after, ca_cert.not_valid_after_utc)
    return _issue(folder, ca_cert, ca_key, name, host_names, start, end)


def run_init(args: argparse.Namespace) -> int:
    """`tandem certs init`: one line per identity made, then a summary; exit 2 on bad input or an existing CA."""
    try:
        names = init_certs(
            Path(args.dir),
            edges=args.edges,
            devices=args.devices,
            hosts=args.hosts or (),
            days=args.days,
            force=args.force,
            progress=print,
        )
    except CertError as error:
        return fail(str(error), EXIT_USAGE)
    except OSError as error:  # an unwritable folder, a file where the folder should be, a full disk
        return fail(f"cannot write certificates to {args.dir}: {error}", EXIT_FAILED)
    print(f"certificates for {len(names)} identities in {args.dir}")
    return EXIT_OK


# --- validation ------------------------------------------------------------------------------------------------


def _check_range(what: str, value: int, low: int, high: int) -> None:
    # bool is an int in Python; True edges is a caller's mistake, not 1 edge.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CertError(f"{what} must be an integer from {low} to {high}, not {value!r}")


def _check_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Each host as a SAN entry: an IP address, or else a DNS name (lower-cased, checked label by label)."""
    if isinstance(hosts, str):  # a lone string would otherwise be taken as one host per character
        hosts = [hosts]
    entries: list[x509.GeneralName] = []
    for host in hosts:
        entries.append(_host_entry(host))
    return entries


def _host_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise CertError(f"host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def _validity(
    days: int, not_before: datetime | None, not_after: datetime | None, ca_not_after: datetime
) -> tuple[datetime, datetime]:
    start = _as_utc(not_before) if not_before is not None else None
    end = _as_utc(not_after) if not_after is not None else None
    if start is None:
        start = _utc_now() - _CLOCK_SKEW
        if end is not None and end <= start:  # an explicitly expired certificate still needs start < end
            start = end - timedelta(days=days)
    if end is None:
        end = min(start + timedelta(days=days), ca_not_after)
    if end <= start:
        raise CertError(f"the certificate would end ({end.isoformat()}) before it starts ({start.isoformat()})")
    return start, end


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _utc_now() -> datetime:
    # Whole seconds: X.509 times have no fractions, so what we compute is what ends up in the certificate.
    return datetime.now(timezone.utc).replace(microsecond=0)


# --- certificates ----------------------------------------------------------------------------------------------


def _ca_certificate(key: ec.EllipticCurvePrivateKey, not_before: datetime, not_after: datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # path_length=0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _issue(
    folder: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    hosts: list[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
) -> tuple[Path, Path]:
    """Make a key and a certificate for `name` (already checked with role_of) and write both; returns (certificate
    path, key path)."""
    _, cert_path, key_path = identity_files(folder, name)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf_certificate(ca_cert, ca_key, name, key.public_key(), hosts, not_before, not_after)
    write_private(key_path, _key_pem(key), 0o600)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    public_key: ec.EllipticCurvePublicKey,
    hosts: list[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_USAGES[role_of(name)]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(name, hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def _subject_alt_names(name: str, hosts: list[x509.GeneralName]) -> list[x509.GeneralName]:
    """The identity's own name, loopback (for clients that verify the address they dialled on one machine), the
    server's own name (edges: "edge-3.tandem") and its role's, and the extra hosts; without duplicates."""
    entries: list[x509.GeneralName] = [
        x509.DNSName(name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    role = role_of(name)
    if role == "edge":
        entries.append(x509.DNSName(edge_server_name(int(name.removeprefix("edge-")))))
    if role in SERVER_NAMES:
        entries.append(x509.DNSName(SERVER_NAMES[role]))
    entries.extend(hosts)
    return list(dict.fromkeys(entries))  # general names compare by value; a SAN listing one twice is just noise


def _key_usage(digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- files -----------------------------------------------------------------------------------------------------


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        missing = cert_path if not cert_path.exists() else key_path
        raise CertError(f"no CA in {folder} ({missing} missing); run `tandem certs init {folder}`")
    try:
        cert, key = check_key_pair(cert_path.read_bytes(), read_private(key_path, "CA key"))
    except PrivateFileError as error:
        raise CertError(str(error)) from None
    except (OSError, CertError) as error:
        raise CertError(f"cannot use the CA in {folder}: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an ECDSA key")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.NoEncryption())
