"""Certificates with real daemons (issue 18, finding 7): each edge is checked by its own name, identity names are
canonical, and a rotated certificate is taken on SIGHUP with no session lost.

Two llama.cpp edges (edge 0 and edge 1) and a controller that knows edge 1 only, all over mutual TLS with
certificates from `tandem certs init`:

* a device the controller sends to edge 1, whose radio link (a link emulator that maps edge 1 to edge 0's address)
  delivers it to edge 0, is refused at the handshake; the same link carries a device that expects edge 0, and a
  device reaching edge 1 directly is served;
* `tandem generate --edge ADDR --edge-id N` checks that edge;
* a certificate named "device-03" (which a CA might issue) does not act as user 3's second identity;
* SIGHUP makes the edge, the controller and the link emulator's control service serve a re-issued certificate to new
  connections, while a greedy PSD session in progress finishes on its old connection with every token; files that
  fail the checks change nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_client.edge_handle import EdgeFailure, EdgeUnreachable, SessionSpec
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from device_client.routing import ControllerRoute
from toolbox.certs import init_certs, issue_certificate
from tandem.sampling import SamplingConfig
from tandem.tls import Transport
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.processes import ControllerProcess, DaemonProcess, EdgeProcess, LinkEmuProcess
from harness.clients import creds, run_tandem

PROMPT = "Explain what a compiler does."
WAIT_S = 60.0  # the longest any step below may take before the test gives up (never asserted as a duration)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA of its own (not the shared one): these tests re-issue certificates."""
    folder = tmp_path_factory.mktemp("rotation-pki")
    init_certs(folder, edges=2, devices=4)
    return folder


def _edge(pki: Path, data_dir: Path, edge_id: int, logs: Path) -> EdgeProcess:
    return EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--tls-dir", str(pki), "--edge-id",
                        str(edge_id), "--idle-timeout", "30", "--slots", "2", "--metrics-port", "0"],
                       log_path=logs / f"edge-{edge_id}.log")


@pytest.fixture(scope="module")
def edges(prepared, data_dir, pki, tmp_path_factory):
    logs = tmp_path_factory.mktemp("rotation-logs")
    with _edge(pki, data_dir, 0, logs) as edge0, _edge(pki, data_dir, 1, logs) as edge1:
        yield edge0, edge1


@pytest.fixture(scope="module")
def controller(edges, pki, tmp_path_factory):
    """A controller that knows edge 1 only: it sends every device there."""
    root = tmp_path_factory.mktemp("rotation-controller")
    config = root / "controller.yaml"
    config.write_text(f"""edges: [{{id: 1, address: "{edges[1].address}"}}]
users: [{{id: 0}}]
slot_s: 0.5
listen: 127.0.0.1:0
state: {root / "controller.sqlite"}
policy: {{name: max-sinr-equal}}
""")
    with ControllerProcess(["--config", str(config), "--tls-dir", str(pki)], log_path=root / "controller.log") as c:
        yield c


@pytest.fixture(scope="module")
def misrouting_link(edges, tmp_path_factory):
    """A radio link that delivers user 0, associated with edge 1, to edge 0's address."""
    root = tmp_path_factory.mktemp("rotation-link")
    se = np.full((20, 1, 2), 5.0)
    save_trace(synthetic_trace(se, se, slot_ms=10), root / "trace.npz")
    config = root / "linkemu.yaml"
    config.write_text(f"""trace: {root / "trace.npz"}
edges: [{{index: 0, address: "{edges[0].address}"}}, {{index: 1, address: "{edges[0].address}"}}]
users: [{{user: 0, edge: 1, share: 1.0}}]
base_delay_ms: 1
""")
    with LinkEmuProcess(["--config", str(config)], log_path=root / "linkemu.log") as link:
        yield link


def greedy(tokens: int) -> GenerationRequest:
    return GenerationRequest(PROMPT, "psd", tokens, SamplingConfig(), ignore_eos=True)


# -- a server name per edge --------------------------------------------------------------------------------------


def test_a_device_sent_to_edge_1_refuses_edge_0(edges, controller, misrouting_link, pki, draft):
    link = misrouting_link.addresses[0]
    device = creds(pki, "device-0")
    misrouted = ControllerRoute(controller.address, 0, via=link, connect_timeout=5, transport=device)
    try:
        assert misrouted.edge == 1
        with pytest.raises(EdgeUnreachable, match="only the certificate of edge-1"):
            misrouted.current().info()
    finally:
        misrouted.close()
    expecting_edge_0 = EdgeConnection(link, connect_timeout=10, transport=device, edge_id=0)
    assert expecting_edge_0.info().max_draft_length > 0  # the link works: only the name refused edge 0
    expecting_edge_0.close()
    direct = ControllerRoute(controller.address, 0, connect_timeout=10, transport=device)
    try:
        result, _ = generate(direct, draft, greedy(8), user=0)
    finally:
        direct.close()
    assert len(result.token_ids) == 8 and result.edges and all(edge.startswith("edge 1 ") for edge in result.edges)


def test_generate_checks_the_edge_it_is_given(edges, pki):
    common = ("generate", "--tls-dir", str(pki), "--max-tokens", "4", "--ignore-eos", "--connect-timeout", "3",
              "--json", PROMPT)
    wrong = run_tandem(*common, "--edge", edges[0].address, "--edge-id", "1")
    assert wrong.returncode == 3 and "only the certificate of edge-1" in wrong.stderr, wrong.stderr
    right = run_tandem(*common, "--edge", edges[0].address, "--edge-id", "0")
    assert right.returncode == 0, right.stderr
    orphan = run_tandem(*common, "--controller", "127.0.0.1:9", "--user", "0", "--edge-id", "0")
    assert orphan.returncode == 2 and "--edge-id goes with --edge" in orphan.stderr, orphan.stderr


# -- canonical identity names --------------------------------------------------------------------------------------


def signed_by_our_ca(pki: Path, name: str) -> Transport:
    """A client certificate for `name` from the deployment's CA, made without `tandem certs`' name check (as another
    tool signing with the same CA might)."""
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Transport(ca=(pki / "ca.pem").read_bytes(), cert=cert.public_bytes(serialization.Encoding.PEM),
                     key=key_pem, identity=name)


def test_a_non_canonical_device_name_is_not_a_second_identity_of_its_user(edges, pki):
    """device-03 was user 3 with a session quota of its own: now it is nobody, and device-3 is user 3."""
    spec = SessionSpec(prompt=[1, 2, 3, 4, 5], sampling=SamplingConfig(), speculative=True, draft_length=4, user=3)
    alias = EdgeConnection(edges[0].address, connect_timeout=5, transport=signed_by_our_ca(pki, "device-03"),
                           edge_id=0)
    with pytest.raises(Exception) as refused:
        alias.open(spec, within_s=5)
    assert refused.value.kind is EdgeFailure.REFUSED and refused.value.status == "PERMISSION_DENIED"
    alias.close()
    owner = EdgeConnection(edges[0].address, connect_timeout=5, transport=creds(pki, "device-3"), edge_id=0)
    owner.open(spec, within_s=5).close(timeout=10)
    owner.close()


# -- rotation on SIGHUP ------------------------------------------------------------------------------------------


def served_serial(address: str, pki: Path, server_name: str) -> int:
    """The serial number of the certificate a new TLS connection to `address` is shown (python's ssl, as admin)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.load_cert_chain(pki / "admin.pem", pki / "admin.key")
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def sighup_and_wait(daemon: DaemonProcess, line: str) -> None:
    """SIGHUP the daemon and wait until its log shows one more `line` (the reload is done in its event loop)."""
    before = daemon.log_path.read_text(errors="replace").count(line)
    os.kill(daemon.pid, signal.SIGHUP)
    deadline = time.monotonic() + WAIT_S
    while daemon.log_path.read_text(errors="replace").count(line) == before:
        assert daemon.process.poll() is None, daemon.tail()
        assert time.monotonic() < deadline, f"no {line!r} after SIGHUP:\n{daemon.tail()}"
        time.sleep(0.05)


RELOADED = "SIGHUP: new connections get"
KEPT = "SIGHUP: kept the certificate in force"


def test_a_rotated_edge_certificate_is_served_with_no_session_lost(edges, pki, draft):
    """A greedy PSD session holds edge 0 (paused after its first tokens, its connection open) while edge-0's
    certificate is re-issued and the edge gets SIGHUP: a new connection is shown the new certificate, and the
    session finishes on its old connection with exactly the tokens of an undisturbed run."""
    edge = edges[0]
    device = creds(pki, "device-0")
    undisturbed = EdgeConnection(edge.address, connect_timeout=10, transport=device, edge_id=0)
    reference, _ = generate(undisturbed, draft, greedy(48))
    undisturbed.close()
    old_serial = file_serial(pki / "edge-0.pem")
    assert served_serial(edge.address, pki, "edge-0.tandem") == old_serial

    in_progress, rotated = threading.Event(), threading.Event()
    outcome: dict = {}

    def pause_once(text: str) -> None:
        if not in_progress.is_set():
            in_progress.set()
            rotated.wait(WAIT_S)

    def run() -> None:
        connection = EdgeConnection(edge.address, connect_timeout=10, transport=device, edge_id=0)
        try:
            outcome["result"], _ = generate(connection, draft, greedy(48), on_text=pause_once)
        except Exception as error:  # reported by the assertion below
            outcome["error"] = error
        finally:
            connection.close()

    session = threading.Thread(target=run, daemon=True)
    session.start()
    assert in_progress.wait(WAIT_S), outcome
    try:
        issue_certificate(pki, "edge-0")
        new_serial = file_serial(pki / "edge-0.pem")
        assert new_serial != old_serial
        sighup_and_wait(edge, RELOADED)
        assert served_serial(edge.address, pki, "edge-0.tandem") == new_serial
    finally:
        rotated.set()
    session.join(WAIT_S)
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert result.token_ids == reference.token_ids  # no token lost or changed
    assert result.resumes == 0  # the session never needed a new stream: its connection outlived the rotation


def test_files_that_fail_the_checks_change_nothing(edges, pki):
    """A key readable by others, one that is not the certificate's, another identity's certificate and key, an
    expired certificate: the edge logs why, keeps serving the certificate in force, and takes good files at the
    next SIGHUP."""
    edge = edges[0]
    serial = served_serial(edge.address, pki, "edge-0.tandem")
    cert, key = pki / "edge-0.pem", pki / "edge-0.key"
    good_cert, good_key = cert.read_bytes(), key.read_bytes()
    try:
        key.chmod(0o644)
        sighup_and_wait(edge, KEPT)
        assert served_serial(edge.address, pki, "edge-0.tandem") == serial
        key.chmod(0o600)
        key.write_bytes((pki / "edge-1.key").read_bytes())
        sighup_and_wait(edge, KEPT)
        assert served_serial(edge.address, pki, "edge-0.tandem") == serial
        cert.write_bytes((pki / "edge-1.pem").read_bytes())  # a valid pair, of another edge
        sighup_and_wait(edge, KEPT)
        assert served_serial(edge.address, pki, "edge-0.tandem") == serial
        issue_certificate(pki, "edge-0", not_after=datetime.now(timezone.utc) - timedelta(days=1))
        sighup_and_wait(edge, KEPT)
        assert served_serial(edge.address, pki, "edge-0.tandem") == serial
    finally:
        cert.write_bytes(good_cert)
        key.write_bytes(good_key)
        key.chmod(0o600)
    log = edge.tail(400)
    assert all(reason in log for reason in ("open to other users", "not the certificate's", "not CN=edge-0",
                                            "not now")), log
    sighup_and_wait(edge, RELOADED)
    assert served_serial(edge.address, pki, "edge-0.tandem") == serial  # the same files again


def test_the_controller_and_the_link_emulator_take_rotated_certificates(controller, pki, tmp_path):
    se = np.full((20, 1, 1), 5.0)
    save_trace(synthetic_trace(se, se, slot_ms=10), tmp_path / "trace.npz")
    with LinkEmuProcess(["--trace", str(tmp_path / "trace.npz"), "--upstream", "127.0.0.1:9", "--control-listen",
                         "127.0.0.1:0", "--tls-dir", str(pki)], log_path=tmp_path / "linkemu.log") as link:
        for daemon, name, address in ((controller, "controller", controller.address),
                                      (link, "linkemu", link.control_address)):
            assert served_serial(address, pki, f"{name}.tandem") == file_serial(pki / f"{name}.pem")
            issue_certificate(pki, name)
            sighup_and_wait(daemon, RELOADED)
            assert served_serial(address, pki, f"{name}.tandem") == file_serial(pki / f"{name}.pem"), name
