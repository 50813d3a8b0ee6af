"""The development CA (toolbox.certs) and the identity rules (tandem.identity): certificates (files, modes, SANs,
key usages, validity), canonical identity names, `tandem certs init`, and real gRPC mutual-TLS handshakes with the
certificates it makes (a server name per edge, server and client usages kept apart). In-process gRPC servers, no
daemons (tests/system/test_rotation.py runs them)."""

from __future__ import annotations

import stat
from concurrent import futures
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tandem.identity import (ADMIN_ROLES, SERVER_NAMES, CertError, check_key_pair, device_user, edge_server_name,
                             identity_files, role_of)
from harness.clients import run_tandem as tandem
from tandem.rpc import Caller
from toolbox.certs import init_certs, issue_certificate

EDGES, DEVICES = 2, 3
NAMES = ["edge-0", "edge-1", "linkemu", "controller", "admin", "health", "device-0", "device-1", "device-2"]
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
# Servers only serve, callers only call; the controller does both (it serves devices and calls the edges).
USAGES = {"edge": {SERVER}, "linkemu": {SERVER}, "controller": {SERVER, CLIENT}, "admin": {CLIENT},
          "health": {CLIENT}, "device": {CLIENT}}


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    assert init_certs(folder, edges=EDGES, devices=DEVICES, hosts=["10.1.2.3", "Edge.Example.org"]) == NAMES
    return folder


@pytest.fixture(scope="module")
def other_ca_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("other-certs")
    init_certs(folder, edges=1, devices=1)
    return folder


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName), [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_every_file_with_the_right_mode(tmp_path):
    folder = tmp_path / "new" / "certs"  # made, parents too
    progress: list[str] = []
    assert init_certs(folder, edges=EDGES, devices=DEVICES, progress=progress.append) == NAMES
    assert len(progress) == 1 + len(NAMES)  # the CA, then one line per identity
    expected = {"ca.pem", "ca.key"} | {f"{name}.pem" for name in NAMES} | {f"{name}.key" for name in NAMES}
    assert {p.name for p in folder.iterdir()} == expected  # and no temporary files left behind
    for path in folder.iterdir():
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    assert (folder / "edge-0.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert identity_files(folder, "edge-0") == (folder / "ca.pem", folder / "edge-0.pem", folder / "edge-0.key")


def test_ca_certificate(ca_dir):
    ca = load(ca_dir / "ca.pem")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Tandem development CA"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ca.verify_directly_issued_by(ca)  # self-signed


@pytest.mark.parametrize("name", NAMES)
def test_each_certificate_verifies_against_the_ca_and_names_its_identity(ca_dir, name):
    ca, cert = load(ca_dir / "ca.pem"), load(ca_dir / f"{name}.pem")
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    assert cert.signature_hash_algorithm.name == "sha256"
    assert cert.public_key().curve.name == "secp256r1"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == USAGES[role_of(name)]
    now = datetime.now(timezone.utc)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc


@pytest.mark.parametrize("name", NAMES)
def test_sans_carry_the_role_server_name_only_for_servers(ca_dir, name):
    dns, ips = sans(load(ca_dir / f"{name}.pem"))
    assert {name, "localhost", "edge.example.org"} <= set(dns)
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= set(ips)
    role = role_of(name)
    server_names = [n for n in dns if n.endswith(".tandem")]
    own = [f"{name}.tandem"] if role == "edge" else []  # each edge its own name, then its role's
    assert server_names == own + ([SERVER_NAMES[role]] if role in SERVER_NAMES else [])


@pytest.mark.parametrize("name, role", [
    ("edge-0", "edge"), ("edge-17", "edge"), ("device-0", "device"), ("device-9999", "device"),
    ("device-pixel-7a", "device"), ("device-3x", "device"), ("device-0x3", "device"), ("linkemu", "linkemu"),
    ("controller", "controller"), ("admin", "admin"), ("health", "health"),
])
def test_role_of_good_names(name, role):
    assert role_of(name) == role


@pytest.mark.parametrize("name", [
    "", "edge", "edge-", "edge-x", "edge--1", "edge-01", "Edge-0", "device-", "device-Pixel", "device_1",
    "device-a.b", "device-../x", "admin2", "controller ", "ca", "device-" + "a" * 60,
    "device-03", "device-00", "device-007", "device-3\n", "device-\u0663",  # one user, one name
])
def test_role_of_bad_names(name):
    with pytest.raises(ValueError):
        role_of(name)


@pytest.mark.parametrize("name, user", [
    ("device-0", 0), ("device-3", 3), ("device-10", 10), ("device-03", None), ("device-00", None),
    ("device-pixel-7a", None), ("device-3x", None), ("device-\u0663", None), ("edge-3", None), ("admin", None),
    (None, None),
])
def test_only_canonical_device_names_speak_for_a_user(name, user):
    """device-03 is not user 3: otherwise one user could hold two identities, each with its own session quota."""
    assert device_user(name) == user
    caller = Caller(name, frozenset({"device"}))
    assert caller.user_index() == user
    assert caller.may_act_for(3) == (user == 3)


def test_non_canonical_names_get_no_certificate(ca_dir):
    with pytest.raises(CertError, match="leading zeros"):
        issue_certificate(ca_dir, "device-03")
    assert not (ca_dir / "device-03.pem").exists()


def test_edge_server_names():
    assert edge_server_name(0) == "edge-0.tandem" and edge_server_name(17) == "edge-17.tandem"
    for bad in (-1, True, 1.0, "1"):
        with pytest.raises(ValueError):
            edge_server_name(bad)


def test_a_key_pair_is_checked(ca_dir):
    cert, key = (ca_dir / "edge-0.pem").read_bytes(), (ca_dir / "edge-0.key").read_bytes()
    assert check_key_pair(cert, key)[0].subject == load(ca_dir / "edge-0.pem").subject
    with pytest.raises(CertError, match="not the certificate's"):
        check_key_pair(cert, (ca_dir / "edge-1.key").read_bytes())
    with pytest.raises(CertError, match="not a PEM"):
        check_key_pair(b"garbage", key)


def test_admin_roles():
    assert ADMIN_ROLES == {"admin", "controller"}
    assert SERVER_NAMES == {"edge": "edge.tandem", "linkemu": "linkemu.tandem", "controller": "controller.tandem"}


def test_refuses_to_overwrite_a_ca_without_force(tmp_path):
    init_certs(tmp_path, edges=1, devices=0)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(CertError, match="already holds a CA"):
        init_certs(tmp_path, edges=1, devices=0)
    assert (tmp_path / "ca.pem").read_bytes() == before
    init_certs(tmp_path, edges=1, devices=0, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before
    load(tmp_path / "edge-0.pem").verify_directly_issued_by(load(tmp_path / "ca.pem"))
    assert mode(tmp_path / "edge-0.key") == 0o600


@pytest.mark.parametrize("kwargs", [
    {"edges": -1}, {"edges": 257}, {"devices": 10001}, {"days": 0}, {"days": 36501}, {"edges": True},
    {"hosts": ["not a host"]}, {"hosts": ["bad_name.example"]},
])
def test_init_rejects_bad_input(tmp_path, kwargs):
    with pytest.raises(CertError):
        init_certs(tmp_path / "certs", **kwargs)
    assert not (tmp_path / "certs").exists()  # checked before anything is written


def test_issue_an_expired_certificate(ca_dir):
    now = datetime.now(timezone.utc)
    cert_path, key_path = issue_certificate(ca_dir, "device-expired", not_after=now - timedelta(days=1))
    assert (cert_path, key_path) == (ca_dir / "device-expired.pem", ca_dir / "device-expired.key")
    cert = load(cert_path)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc < now
    cert.verify_directly_issued_by(load(ca_dir / "ca.pem"))
    assert mode(key_path) == 0o600


def test_issue_certificate_with_hosts_and_days(ca_dir):
    cert = load(issue_certificate(ca_dir, "edge-7", hosts=["192.168.0.9"], days=2)[0])
    dns, ips = sans(cert)
    assert {"edge-7.tandem", "edge.tandem"} <= set(dns) and "192.168.0.9" in ips and "10.1.2.3" not in ips
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=2)


def test_issue_certificate_errors(tmp_path, ca_dir):
    with pytest.raises(CertError, match="not an identity name"):
        issue_certificate(ca_dir, "../evil")
    with pytest.raises(CertError, match="no CA"):
        issue_certificate(tmp_path, "device-1")
    with pytest.raises(CertError, match="before it starts"):
        now = datetime.now(timezone.utc)
        issue_certificate(ca_dir, "device-1x", not_before=now, not_after=now - timedelta(hours=1))


def test_cli_init_and_its_errors(tmp_path):
    folder = tmp_path / "certs"
    made = tandem("certs", "init", str(folder), "--edges", "1", "--devices", "2", "--host", "10.9.9.9", "--days", "30")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1] == f"certificates for 7 identities in {folder}"
    for name in ["edge-0", "linkemu", "controller", "admin", "health", "device-0", "device-1"]:
        assert any(line.startswith(f"{name}:") for line in made.stdout.splitlines()), made.stdout
        assert mode(folder / f"{name}.key") == 0o600
    assert "10.9.9.9" in sans(load(folder / "device-0.pem"))[1]

    again = tandem("certs", "init", str(folder))
    assert again.returncode == 2 and "already holds a CA" in again.stderr, again
    bad = tandem("certs", "init", str(tmp_path / "other"), "--edges", "300")
    assert bad.returncode == 2 and "edges must be" in bad.stderr, bad
    assert tandem("certs", "init", str(folder), "--force", "--edges", "0", "--devices", "0").returncode == 0


# --- a real mutual-TLS handshake -------------------------------------------------------------------------------


def health_server(folder: Path, name: str) -> tuple[grpc.Server, int]:
    """A gRPC server presenting `name`'s certificate that requires a client certificate from the CA, serving
    health."""
    ca, cert, key = (p.read_bytes() for p in identity_files(folder, name))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    )
    server.start()
    return server, port


@pytest.fixture(scope="module")
def edge_server(ca_dir):
    """edge-0's server."""
    server, port = health_server(ca_dir, "edge-0")
    yield port
    server.stop(None)


def check_health(port: int, trusted_ca: Path, client_folder: Path, client: str, server_name: str) -> grpc.StatusCode:
    _, cert, key = identity_files(client_folder, client)
    credentials = grpc.ssl_channel_credentials(trusted_ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


def test_mutual_tls_handshake_works(edge_server, ca_dir):
    assert check_health(edge_server, ca_dir / "ca.pem", ca_dir, "device-0", "edge.tandem") == grpc.StatusCode.OK


def test_client_certificate_from_another_ca_is_refused(edge_server, ca_dir, other_ca_dir):
    # The client trusts the right CA (so the server checks out) but presents a certificate the server cannot verify.
    code = check_health(edge_server, ca_dir / "ca.pem", other_ca_dir, "device-0", "edge.tandem")
    assert code == grpc.StatusCode.UNAVAILABLE


def test_server_of_another_role_is_refused(edge_server, ca_dir):
    # The edge's certificate does not name controller.tandem: a client looking for the controller must not accept it.
    code = check_health(edge_server, ca_dir / "ca.pem", ca_dir, "admin", "controller.tandem")
    assert code == grpc.StatusCode.UNAVAILABLE


def test_server_from_another_ca_is_refused(edge_server, ca_dir, other_ca_dir):
    code = check_health(edge_server, other_ca_dir / "ca.pem", other_ca_dir, "device-0", "edge.tandem")
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_client_expecting_one_edge_refuses_another(edge_server, ca_dir):
    """edge-0's certificate names edge-0.tandem (and the role's edge.tandem), not edge-1.tandem: a device sent to
    edge 1 that reaches edge 0 fails the handshake."""
    assert check_health(edge_server, ca_dir / "ca.pem", ca_dir, "device-0", "edge-0.tandem") == grpc.StatusCode.OK
    code = check_health(edge_server, ca_dir / "ca.pem", ca_dir, "device-0", "edge-1.tandem")
    assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name, serves", [("device-0", False), ("admin", False), ("health", False),
                                          ("controller", True), ("linkemu", True)])
def test_only_server_certificates_can_serve(ca_dir, name, serves):
    """A server presenting a client-only certificate (a stolen device key on a rogue server) is refused by the
    client, although the name checked (the identity's own SAN) and the CA are right: the refusal is the usage."""
    server, port = health_server(ca_dir, name)
    try:
        code = check_health(port, ca_dir / "ca.pem", ca_dir, "admin", name)
    finally:
        server.stop(None)
    assert code == (grpc.StatusCode.OK if serves else grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("name, calls", [("edge-0", False), ("linkemu", False), ("controller", True),
                                         ("admin", True), ("health", True), ("device-1", True)])
def test_only_client_certificates_can_call(edge_server, ca_dir, name, calls):
    """An edge's or the link emulator's key cannot be used to call another daemon: the server refuses the client
    certificate at the handshake."""
    code = check_health(edge_server, ca_dir / "ca.pem", ca_dir, name, "edge-0.tandem")
    assert code == (grpc.StatusCode.OK if calls else grpc.StatusCode.UNAVAILABLE)
