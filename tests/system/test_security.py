"""Security with real daemons: mutual TLS and identities, access to control RPCs, and the classes of abuse an
attacker on the network tried (docs/security.md): sessions held to lock others out, long requests monopolising the
engine, a tiny share freezing the link emulator, work whose caller left, garbage bytes flooding the log.

One llama.cpp edge serves this module over mutual TLS (certificates from `tandem certs init`), with small limits so
that the bounds are reached quickly: 6 sessions, 2 per identity, requests of at most 512 tokens.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import numpy as np
import pytest

from device_client.edge_handle import EdgeFailure
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from toolbox.certs import init_certs, issue_certificate
from tandem.rpc import bearer_metadata
from tandem.sampling import SamplingConfig
from tandem.shares import MIN_SHARE
from tandem.tls import TlsSettings, Transport, load_transport
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.wire.v1 import control_pb2, control_pb2_grpc, edge_pb2, edge_pb2_grpc, linkemu_pb2, linkemu_pb2_grpc
from tandem.processes import EdgeProcess, LinkEmuProcess
from harness.clients import with_admin_token
from harness.teacher_forcing import near_tie_gaps

PER_IDENTITY = 2
MAX_SESSIONS = 6
MAX_REQUEST_TOKENS = 512
PROMPT = "Explain what a compiler does."
ADMIN_TOKEN = "security-test-admin-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """The deployment's CA and certificates, another CA's, and an expired device certificate (device-3)."""
    root = tmp_path_factory.mktemp("pki")
    init_certs(root / "ours", edges=1, devices=4)
    init_certs(root / "theirs", edges=1, devices=1)
    issue_certificate(root / "ours", "device-3", not_before=datetime.now(timezone.utc) - timedelta(days=10),
                      not_after=datetime.now(timezone.utc) - timedelta(days=1))
    return {"ours": root / "ours", "theirs": root / "theirs"}


def creds(pki, name: str, ca: str = "ours") -> Transport:
    return load_transport(TlsSettings(dir=pki[ca], name=name), name)


@pytest.fixture(scope="module")
def tls_edge(prepared, data_dir, pki, tmp_path_factory):
    logs = tmp_path_factory.mktemp("tls-edge")
    with EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--tls-dir", str(pki["ours"]),
                      "--edge-id", "0", "--max-sessions", str(MAX_SESSIONS), "--max-sessions-per-identity",
                      str(PER_IDENTITY), "--max-request-tokens", str(MAX_REQUEST_TOKENS), "--idle-timeout", "30",
                      "--metrics-port", "0", "--slots", "4"], log_path=logs / "edge.log") as edge:
        yield edge


def connect(edge, transport: Transport) -> EdgeConnection:
    return EdgeConnection(edge.address, connect_timeout=5, transport=transport)


def greedy(tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(PROMPT, "psd", tokens, SamplingConfig(), ignore_eos=True)


@pytest.fixture(scope="module")
def reference(tls_edge, pki, draft):
    """The undisturbed answer of a device with valid credentials."""
    connection = connect(tls_edge, creds(pki, "device-0"))
    result, _ = generate(connection, draft, greedy())
    connection.close()
    return result.token_ids


def refused_code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# -- authentication and identities -----------------------------------------------------------------------------------


def test_clients_without_valid_credentials_are_refused(tls_edge, pki):
    """Another CA's certificate, an expired one, no certificate at all and plaintext: the handshake fails."""
    with open(pki["ours"] / "ca.pem", "rb") as file:
        our_ca = file.read()
    attempts = {
        "another CA": creds(pki, "device-0", "theirs"),
        "expired certificate": creds(pki, "device-3"),
        "no client certificate": Transport(ca=our_ca),
        "plaintext": Transport(),
    }
    for what, transport in attempts.items():
        with transport.channel(tls_edge.address, "edge") as channel:
            code = refused_code(lambda: edge_pb2_grpc.EdgeServiceStub(channel).GetInfo(edge_pb2.InfoRequest(),
                                                                                        timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE, what
    with creds(pki, "device-0").channel(tls_edge.address, "edge") as channel:
        info = edge_pb2_grpc.EdgeServiceStub(channel).GetInfo(edge_pb2.InfoRequest(), timeout=5)
    assert "/" not in info.model  # the model's name, not a path on the server


def test_a_session_belongs_to_the_identity_that_opened_it(tls_edge, pki):
    owner, other = connect(tls_edge, creds(pki, "device-0")), connect(tls_edge, creds(pki, "device-1"))
    session = owner.open(_spec(), within_s=5)
    session.cancel()  # detached: the owner could attach again
    with pytest.raises(Exception) as caught:
        other.attach(session.id, within_s=2)
    # As if unknown: ids of others cannot be probed.
    assert caught.value.kind is EdgeFailure.SESSION_GONE and caught.value.status == "NOT_FOUND"
    again = owner.attach(session.id, within_s=10)
    again.close(timeout=10)
    owner.close(), other.close()


def test_a_device_certificate_acts_only_for_its_own_user(tls_edge, pki):
    connection = connect(tls_edge, creds(pki, "device-1"))
    with pytest.raises(Exception) as caught:
        connection.open(_spec(user=2), within_s=5)
    assert caught.value.kind is EdgeFailure.REFUSED and caught.value.status == "PERMISSION_DENIED"
    connection.open(_spec(user=1), within_s=5).close(timeout=10)
    connection.close()


def test_control_rpcs_need_an_admin_or_controller_certificate(tls_edge, pki):
    request = control_pb2.SetSharesRequest(version=1, shares=[control_pb2.ComputeShare(user=0, share=0.5)])
    with creds(pki, "device-0").channel(tls_edge.address, "edge") as channel:
        code = refused_code(lambda: control_pb2_grpc.EdgeControlStub(channel).SetShares(request, timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    with creds(pki, "controller").channel(tls_edge.address, "edge") as channel:
        control = control_pb2_grpc.EdgeControlStub(channel)
        assert control.SetShares(request, timeout=5).version == 1
        control.SetShares(control_pb2.SetSharesRequest(version=2), timeout=5)  # back to no shares


def test_tls_end_to_end_through_the_link_emulator_is_lossless(tls_edge, pki, draft, umi_trace, tmp_path, reference):
    """The emulator's proxy carries the TLS bytes unchanged; the device verifies the edge by its role name."""
    from tandem.trace_format import load_trace

    user, edge = load_trace(umi_trace).most_reliable_pair()
    with LinkEmuProcess(["--trace", str(umi_trace), "--upstream", tls_edge.address, "--share", "1", "--user",
                         str(user), "--edge", str(edge),
                         "--base-delay-ms", "2", "--speedup", "10", "--outage-limit", "60"],
                        log_path=tmp_path / "linkemu.log") as link:
        connection = EdgeConnection(link.address, connect_timeout=60, transport=creds(pki, "device-0"))
        result, _ = generate(connection, draft, greedy())
        connection.close()
    assert result.token_ids == reference
    direct = connect(tls_edge, creds(pki, "device-0"))
    near_tie_gaps(direct, draft.encode_chat(PROMPT), result.token_ids, "psd over TLS through the emulator")
    direct.close()


def test_link_emulator_assign_needs_the_admin_credential(pki, umi_trace, tmp_path):
    """Over TLS: a device certificate may not Assign, the controller's may.  In plaintext with an admin token:
    no token is UNAUTHENTICATED, a wrong one PERMISSION_DENIED."""
    request = linkemu_pb2.AssignRequest(assignments=[linkemu_pb2.UserAssignment(user=0, edge=0, share=0.5)])
    common = ["--trace", str(umi_trace), "--upstream", "127.0.0.1:9", "--control-listen", "127.0.0.1:0"]
    with LinkEmuProcess([*common, "--tls-dir", str(pki["ours"])], log_path=tmp_path / "tls.log") as link:
        with creds(pki, "device-0").channel(link.control_address, "linkemu") as channel:
            code = refused_code(lambda: linkemu_pb2_grpc.LinkControlStub(channel).Assign(request, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        with creds(pki, "device-0", "theirs").channel(link.control_address, "linkemu") as channel:
            code = refused_code(lambda: linkemu_pb2_grpc.LinkControlStub(channel).Assign(request, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        with creds(pki, "controller").channel(link.control_address, "linkemu") as channel:
            assert linkemu_pb2_grpc.LinkControlStub(channel).Assign(request, timeout=5).assignments[0].share == 0.5
    with LinkEmuProcess([*common, "--insecure"], log_path=tmp_path / "plain.log",
                        env={"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN}) as link:
        with grpc.insecure_channel(link.control_address) as channel:
            stub = linkemu_pb2_grpc.LinkControlStub(channel)
            assert refused_code(lambda: stub.Assign(request, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
            assert refused_code(lambda: stub.Assign(request, timeout=5, metadata=bearer_metadata("x" * 20))) \
                == grpc.StatusCode.PERMISSION_DENIED
            assert stub.Assign(request, timeout=5, metadata=bearer_metadata(ADMIN_TOKEN)).assignments[0].share == 0.5
        assert "security-test-admin-token" not in link.tail(200)  # never logged


def test_the_controller_over_tls_checks_roles(tls_edge, pki, tmp_path):
    """Another CA is refused at the handshake; a device certificate may follow its own user only and may not
    administer; the admin certificate may, with no token (the CLI too)."""
    from harness.clients import run_tandem
    from tandem.processes import ControllerProcess

    config = tmp_path / "controller.yaml"
    config.write_text(f"""edges: [{{id: 0, address: "{tls_edge.address}"}}]
users: [{{id: 0}}, {{id: 1}}]
slot_s: 0.5
listen: 127.0.0.1:0
state: {tmp_path / "controller.sqlite"}
policy: {{name: max-sinr-equal}}
""")
    with ControllerProcess(["--config", str(config), "--tls-dir", str(pki["ours"])],
                           log_path=tmp_path / "controller.log") as controller:
        address = controller.address
        with creds(pki, "device-0", "theirs").channel(address, "controller") as channel:
            code = refused_code(lambda: control_pb2_grpc.ControllerStub(channel).GetStatus(
                control_pb2.StatusRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        with creds(pki, "device-0").channel(address, "controller") as channel:
            device = control_pb2_grpc.ControllerStub(channel)
            assert device.GetStatus(control_pb2.StatusRequest(), timeout=5).policy == "max-sinr-equal"
            stream = device.WatchAllocation(control_pb2.WatchAllocationRequest(user=1), timeout=5)
            assert refused_code(lambda: next(stream)) == grpc.StatusCode.PERMISSION_DENIED
            admin = control_pb2_grpc.ControllerAdminStub(channel)
            assert refused_code(lambda: admin.ListPolicies(control_pb2.ListPoliciesRequest(), timeout=5)) \
                == grpc.StatusCode.PERMISSION_DENIED
        done = run_tandem("policy", "list", "--controller", address, "--tls-dir", str(pki["ours"]))
        assert done.returncode == 0 and "max-sinr-equal" in done.stdout, done.stderr
        done = run_tandem("policy", "list", "--controller", address, "--tls-dir", str(pki["ours"]), "--tls-name",
                          "device-0")
        assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr


# -- bounded work, fair sharing ------------------------------------------------------------------------------------


def test_a_client_holding_sessions_cannot_lock_out_a_device(tls_edge, pki, draft, reference):
    """Two hostile identities open sessions until refused and keep them attached, doing nothing; a well-behaved
    device is still served at once, with its undisturbed tokens.  Bound: an identity holds at most
    --max-sessions-per-identity sessions (a detached one it abandoned is given up for its next), so others always
    find a slot while identities are fewer than max_sessions / per_identity; a silent stream ends after the idle
    timeout."""
    held, refusals = [], 0
    for name in ("device-1", "device-2"):
        hostile = connect(tls_edge, creds(pki, name))
        for _ in range(PER_IDENTITY + 3):
            try:
                held.append(hostile.open(_spec(), within_s=5))  # attached: its stream stays open
            except Exception as error:
                assert error.kind is EdgeFailure.BUSY and error.status == "RESOURCE_EXHAUSTED"
                assert "identity" in error.details
                refusals += 1
    assert len(held) == 2 * PER_IDENTITY and refusals == 6
    device = connect(tls_edge, creds(pki, "device-0"))
    result, _ = generate(device, draft, greedy())
    assert result.token_ids == reference
    device.close()
    for session in held:
        session.close(timeout=10)


def test_long_requests_cannot_monopolise_the_engine(tls_edge, pki, draft, reference):
    """A hostile client keeps the engine busy with maximal Score calls, two at a time (its limit; a third is
    refused, a longer one too before any work).  A well-behaved device still finishes with its undisturbed tokens:
    its blocks are taken before the hostile flow's next Score (start-time fair queueing charges a Score its length),
    so at most one hostile Score runs per device block — the stated bound on a block's wait is one maximal step."""
    hostile = connect(tls_edge, creds(pki, "device-1"))
    long_ids = [1 + i % 1000 for i in range(MAX_REQUEST_TOKENS)]
    with pytest.raises(Exception) as caught:
        hostile.score(long_ids + [5], 1, 2)
    assert caught.value.status == "INVALID_ARGUMENT" and "at most" in caught.value.details
    stop, done, codes = threading.Event(), [], []

    def flood() -> None:
        while not stop.is_set():
            try:
                hostile.score(long_ids, 1, 2)
                done.append(time.monotonic())
            except Exception as error:
                codes.append(error.status)
                time.sleep(0.05)

    floods = [threading.Thread(target=flood, daemon=True) for _ in range(PER_IDENTITY + 1)]
    for thread in floods:
        thread.start()
    time.sleep(1.0)
    device = connect(tls_edge, creds(pki, "device-0"))
    started = time.monotonic()
    result, _ = generate(device, draft, greedy())
    finished = time.monotonic()
    stop.set()
    for thread in floods:
        thread.join(timeout=120)
    device.close(), hostile.close()
    assert result.token_ids == reference
    assert "RESOURCE_EXHAUSTED" in codes  # the third concurrent Score
    during = sum(started <= t <= finished for t in done)
    assert during <= result.rounds + 2, (during, result.rounds)


def test_a_cancelled_request_frees_the_engine(tls_edge, pki):
    """An edge-only request of 400 tokens whose client goes away after the first tokens: the edge stops working
    for it (its user's served tokens stop growing) and serves the next request."""
    device = connect(tls_edge, creds(pki, "device-1"))
    stream, _ = device.start_stream(edge_pb2.DeviceMessage(open=edge_pb2.Open(
        prompt_token_ids=[1, 2, 3, 4], mode=edge_pb2.MODE_EDGE_ONLY, max_new_tokens=400, user=1)), 10)
    assert stream.receive(timeout=30).WhichOneof("kind") == "tokens"
    stream.cancel()
    with creds(pki, "controller").channel(tls_edge.address, "edge") as channel:
        control = control_pb2_grpc.EdgeControlStub(channel)

        def served() -> int:
            load = control.GetLoad(control_pb2.GetLoadRequest(), timeout=5)
            return next((u.served_tokens for u in load.users if u.user == 1), 0)
        time.sleep(1.0)
        first = served()
        time.sleep(1.5)
        assert served() == first < 400
    device.close()


def test_a_tiny_share_slows_only_its_own_user(llamacpp_edge, draft, tmp_path):
    """Assign the smallest share the rule allows (MIN_SHARE; 1e-300 is refused since the second pass) to user 1:
    its link becomes very slow, but the emulator's event loop is not held — user 0's request through the same
    emulator completes, the control service answers, SIGTERM stops it."""
    se = np.full((20, 2, 1), 5.0)
    trace_path = tmp_path / "two-users.npz"
    save_trace(synthetic_trace(se, se, slot_ms=10), trace_path)
    config = tmp_path / "linkemu.yaml"
    config.write_text(f"""trace: {trace_path}
edges: [{{index: 0, address: "{llamacpp_edge.address}"}}]
users: [{{user: 0, edge: 0, share: 0.5}}, {{user: 1, edge: 0, share: 0.5}}]
base_delay_ms: 1
control_listen: 127.0.0.1:0
""")
    with LinkEmuProcess(["--config", str(config), "--insecure"], log_path=tmp_path / "linkemu.log") as link:
        with grpc.insecure_channel(link.control_address) as channel:
            control = linkemu_pb2_grpc.LinkControlStub(with_admin_token(channel))
            control.Assign(linkemu_pb2.AssignRequest(assignments=[
                linkemu_pb2.UserAssignment(user=0, edge=0, share=0.5),
                linkemu_pb2.UserAssignment(user=1, edge=0, share=MIN_SHARE)]), timeout=5)
            victim = EdgeConnection(link.addresses[1], connect_timeout=2)
            stuck = threading.Thread(target=lambda: _try(victim.info), daemon=True)
            stuck.start()  # its request crawls through the tiny share
            time.sleep(0.5)
            device = EdgeConnection(link.addresses[0])
            result, _ = generate(device, draft, GenerationRequest("Name a colour.", "psd", 8, SamplingConfig(),
                                                                  ignore_eos=True))
            assert len(result.token_ids) == 8
            assert len(control.GetAssignments(linkemu_pb2.GetAssignmentsRequest(), timeout=5).assignments) == 2
            device.close()
        link.process.terminate()
        link.process.wait(timeout=15)  # an event loop held by the shaper ignored SIGTERM for minutes


def test_garbage_gets_invalid_argument_and_one_log_line(tls_edge, pki):
    """Bytes that are not protobuf, to unary and streaming RPCs: INVALID_ARGUMENT every time, and one warning
    per method in the log (rate-limited), never INTERNAL or a traceback."""
    garbage = b"\xff\xff\xff\xff\x0f" + bytes(range(40))
    with creds(pki, "device-0").channel(tls_edge.address, "edge") as channel:
        for method in ("Score", "GetInfo"):
            call = channel.unary_unary(f"/tandem.wire.v1.EdgeService/{method}")
            for _ in range(10):
                assert refused_code(lambda: call(garbage, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
        decode = channel.stream_stream("/tandem.wire.v1.EdgeService/Decode")
        for _ in range(10):
            assert refused_code(lambda: list(decode(iter([garbage]), timeout=5))) == grpc.StatusCode.INVALID_ARGUMENT
    time.sleep(0.5)
    log = tls_edge.log_path.read_text()
    for method in ("Score", "GetInfo", "Decode"):
        assert log.count(f"malformed request to /tandem.wire.v1.EdgeService/{method}") == 1, method
    assert "Traceback" not in log


def test_active_sessions_gauge_is_never_stale(tls_edge, pki):
    connection = connect(tls_edge, creds(pki, "device-2"))
    before = _gauge(tls_edge)
    session = connection.open(_spec(), within_s=5)
    assert _gauge(tls_edge) == before + 1
    session.close(timeout=10)
    assert _gauge(tls_edge) == before
    connection.close()


def _gauge(edge) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).read().decode()
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("tandem_edge_sessions_active ")))


def _spec(user: int | None = None):
    from device_client.edge_handle import SessionSpec

    return SessionSpec(prompt=[1, 2, 3, 4, 5], sampling=SamplingConfig(), speculative=True, draft_length=4, user=user)


def _try(call) -> None:
    try:
        call()
    except Exception:
        pass
