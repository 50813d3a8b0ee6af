"""Admin is a role, not a shared secret (issue 18, findings 2 and 7), with real daemons on loopback.

Over TLS only the `admin` certificate administers the controller (and the `controller` certificate drives the edges
and the link emulator): the admin token grants nothing, so a device certificate that also holds the token is still
refused.  In plaintext (development only) the admin-only services answer only a configured token, and a daemon
without one refuses them instead of leaving them open; the plaintext testbed makes a random token per run and
passes it to every part that needs it.
"""

from __future__ import annotations

import json
import stat
import time

import grpc
import numpy as np
import pytest
import yaml

from tandem.auth import ADMIN_TOKEN_ENV
from tandem.private_files import write_private
from tandem.rpc import ADMINS, ANYONE, DEVICES, OPERATORS, Access, Guard, bearer_metadata
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.wire.v1 import control_pb2, control_pb2_grpc, edge_pb2, edge_pb2_grpc, linkemu_pb2, linkemu_pb2_grpc
from tandem.processes import ControllerProcess, EdgeProcess, LinkEmuProcess
from harness.clients import creds, run_tandem
from tests.system.test_testbed import write_testbed

TOKEN = "admin-role-test-token-0123456789"
ASSIGN = linkemu_pb2.AssignRequest(assignments=[linkemu_pb2.UserAssignment(user=0, edge=0, share=0.5)])


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# -- the rule, on the guard itself -------------------------------------------------------------------------------------


class _Call:
    """What the guard reads of a call: its metadata and (over TLS) the certificate's common name."""

    def __init__(self, identity: str | None = None, token: str | None = None) -> None:
        self.identity, self.metadata = identity, bearer_metadata(token)

    def invocation_metadata(self):
        return self.metadata

    def auth_context(self):
        return {"x509_common_name": [self.identity.encode()]} if self.identity else {}


def test_over_tls_the_token_adds_no_role():
    tls = Guard(Access({}), secure=True, admin_token=TOKEN)
    assert tls._refusal(ADMINS, _Call("device-0", TOKEN))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert tls._refusal(OPERATORS, _Call("device-0", TOKEN))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert tls._refusal(ADMINS, _Call(None, TOKEN))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert tls._refusal(OPERATORS, _Call("controller"))[0] == grpc.StatusCode.PERMISSION_DENIED  # not the operator
    assert tls._refusal(OPERATORS, _Call("admin")) is None
    assert tls._refusal(ADMINS, _Call("controller")) is None


def test_the_health_identity_may_only_check_health():
    """`health` (a client certificate for container health checks) is let in by the transport and granted nothing
    but what any caller may call."""
    tls = Guard(Access({}), secure=True)
    assert tls._refusal(ANYONE, _Call("health")) is None
    for roles in (DEVICES, ADMINS, OPERATORS, DEVICES | ADMINS):
        assert tls._refusal(roles, _Call("health"))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_in_plaintext_admin_only_calls_need_a_configured_token():
    without = Guard(Access({}), secure=False)
    assert without._refusal(ADMINS, _Call())[0] == grpc.StatusCode.PERMISSION_DENIED
    assert without._refusal(ADMINS, _Call(token=TOKEN))[0] == grpc.StatusCode.PERMISSION_DENIED  # none to match
    assert without._refusal(DEVICES | ADMINS, _Call()) is None  # what a device may call stays open
    with_token = Guard(Access({}), secure=False, admin_token=TOKEN)
    assert with_token._refusal(OPERATORS, _Call(token=TOKEN)) is None
    assert with_token._refusal(OPERATORS, _Call())[0] == grpc.StatusCode.UNAUTHENTICATED


# -- over TLS, with real daemons ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "admin-token"
    write_private(path, TOKEN.encode())
    return path


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "two-users.npz"
    se = np.full((20, 2, 1), 5.0)
    save_trace(synthetic_trace(se, se, slot_ms=10), path)
    return path


def test_a_device_certificate_with_the_token_cannot_administer_the_controller(pki, token_file, tmp_path):
    """The controller holds the admin token (--admin-token-file), yet over TLS device-0 presenting it is refused
    every ControllerAdmin call, by the API and by the CLI, and the policy stays; the controller's own certificate
    is refused too (it drives the edges, it does not choose policies); the admin certificate, without any token,
    lists and sets policies."""
    config = tmp_path / "controller.yaml"
    config.write_text(yaml.safe_dump({
        "edges": [{"id": 0, "address": "127.0.0.1:9"}], "users": [{"id": 0}, {"id": 1}], "slot_s": 0.5,
        "listen": "127.0.0.1:0", "state": str(tmp_path / "controller.sqlite"), "policy": {"name": "max-sinr-equal"}}))
    with ControllerProcess(["--config", str(config), "--tls-dir", str(pki), "--admin-token-file", str(token_file)],
                           log_path=tmp_path / "controller.log") as controller:
        address = controller.address
        for name in ("device-0", "controller"):
            with creds(pki, name).channel(address, "controller") as channel:
                admin = control_pb2_grpc.ControllerAdminStub(channel)
                listing = refused(lambda: admin.ListPolicies(control_pb2.ListPoliciesRequest(), timeout=5,
                                                             metadata=bearer_metadata(TOKEN)))
                swap = refused(lambda: admin.SetPolicy(control_pb2.SetPolicyRequest(name="random"), timeout=5,
                                                       metadata=bearer_metadata(TOKEN)))
            assert listing.code() == swap.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert f"'{name}' may not call this" in listing.details()
        done = run_tandem("policy", "set", "random", "--controller", address, "--tls-dir", str(pki), "--tls-name",
                          "device-0", env_token=TOKEN)
        assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr, done.stderr
        with creds(pki, "admin").channel(address, "controller") as channel:
            admin = control_pb2_grpc.ControllerAdminStub(channel)
            assert admin.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5).name == "max-sinr-equal"
            admin.SetPolicy(control_pb2.SetPolicyRequest(name="tma-equal"), timeout=30)
            assert admin.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5).name == "tma-equal"
        done = run_tandem("policy", "list", "--controller", address, "--tls-dir", str(pki))
        assert done.returncode == 0 and "tma-equal" in done.stdout, done.stderr


def test_a_device_certificate_with_the_token_cannot_assign_links(pki, trace_file, tmp_path):
    """The link emulator over TLS, given the admin token: device-0 with it may not Assign; the controller may."""
    with LinkEmuProcess(["--trace", str(trace_file), "--upstream", "127.0.0.1:9", "--control-listen", "127.0.0.1:0",
                         "--tls-dir", str(pki)], log_path=tmp_path / "linkemu.log",
                        env={ADMIN_TOKEN_ENV: TOKEN}) as link:
        with creds(pki, "device-0").channel(link.control_address, "linkemu") as channel:
            stub = linkemu_pb2_grpc.LinkControlStub(channel)
            error = refused(lambda: stub.Assign(ASSIGN, timeout=5, metadata=bearer_metadata(TOKEN)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        with creds(pki, "controller").channel(link.control_address, "linkemu") as channel:
            assert linkemu_pb2_grpc.LinkControlStub(channel).Assign(ASSIGN, timeout=5).assignments[0].share == 0.5


# -- plaintext ---------------------------------------------------------------------------------------------------------


def without_token(process):
    """``process`` with no admin token in its environment (the tests' own is set for every daemon)."""
    process.env.pop(ADMIN_TOKEN_ENV, None)
    return process


def test_plaintext_link_control_without_a_token_is_closed(trace_file, tmp_path):
    """A plaintext link emulator that was given no admin token refuses LinkControl (it was open), says why, and
    warned at start; its devices' proxies still carry bytes."""
    link = without_token(LinkEmuProcess(["--trace", str(trace_file), "--upstream", "127.0.0.1:9", "--control-listen",
                                         "127.0.0.1:0", "--insecure"], log_path=tmp_path / "linkemu.log"))
    with link, grpc.insecure_channel(link.control_address) as channel:
        stub = linkemu_pb2_grpc.LinkControlStub(channel)
        for call in (lambda: stub.Assign(ASSIGN, timeout=5),
                     lambda: stub.Assign(ASSIGN, timeout=5, metadata=bearer_metadata(TOKEN)),
                     lambda: stub.GetAssignments(linkemu_pb2.GetAssignmentsRequest(), timeout=5)):
            error = refused(call)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "without an admin token" in error.details()
        assert "plaintext without an admin token" in link.tail(200)


def test_plaintext_edge_control_without_a_token_is_closed(prepared, data_dir, tmp_path):
    """A plaintext edge that was given no admin token refuses EdgeControl (SetShares, GetLoad: open before), while
    EdgeService, what devices call, still answers."""
    edge = without_token(EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--insecure", "--slots",
                                      "1"], log_path=tmp_path / "edge.log"))
    with edge, grpc.insecure_channel(edge.address) as channel:
        control = control_pb2_grpc.EdgeControlStub(channel)
        shares = control_pb2.SetSharesRequest(version=1, shares=[control_pb2.ComputeShare(user=0, share=0.9)])
        for call in (lambda: control.SetShares(shares, timeout=5), lambda: control.GetLoad(
                control_pb2.GetLoadRequest(), timeout=5, metadata=bearer_metadata(TOKEN))):
            assert refused(call).code() == grpc.StatusCode.PERMISSION_DENIED
        assert edge_pb2_grpc.EdgeServiceStub(channel).GetInfo(edge_pb2.InfoRequest(), timeout=5).vocab_size > 0


def test_the_plaintext_testbed_makes_a_random_token_and_closes_control(prepared, umi_trace, tmp_path):
    """`tandem testbed up` with `tls: false`: a fresh random token in <run_dir>/admin-token (0600); the controller's
    pushes reach the edges and the emulator with it, admin commands work with it, and without it EdgeControl and
    LinkControl refuse."""
    config = write_testbed(tmp_path, umi_trace)
    config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | {"tls": False}))
    run_dir = tmp_path / "run"
    up = run_tandem("testbed", "up", "--config", str(config), "--no-devices")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        token_path = run_dir / "admin-token"
        token = token_path.read_text().strip()
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600 and len(token) >= 32
        assert token not in up.stdout + up.stderr
        announced = {d["name"]: d["announced"] for d in json.loads((run_dir / "state.json").read_text())["daemons"]}
        edge, link = announced["edge 0"]["address"], announced["link emulator"]["control"]
        with grpc.insecure_channel(edge) as channel:
            control = control_pb2_grpc.EdgeControlStub(channel)
            assert refused(lambda: control.GetLoad(control_pb2.GetLoadRequest(), timeout=5)).code() \
                == grpc.StatusCode.UNAUTHENTICATED
            deadline = time.monotonic() + 60
            while control.GetLoad(control_pb2.GetLoadRequest(), timeout=5,
                                  metadata=bearer_metadata(token)).version == 0:
                assert time.monotonic() < deadline, "the controller's shares never reached the edge"
                time.sleep(0.5)
        with grpc.insecure_channel(link) as channel:
            stub = linkemu_pb2_grpc.LinkControlStub(channel)
            assert refused(lambda: stub.GetAssignments(linkemu_pb2.GetAssignmentsRequest(), timeout=5)).code() \
                == grpc.StatusCode.UNAUTHENTICATED
        controller = announced["controller"]["address"]
        done = run_tandem("policy", "set", "tma-equal", "--controller", controller, "--insecure", env_token=token)
        assert done.returncode == 0, done.stderr
        done = run_tandem("policy", "set", "tma-equal", "--controller", controller, "--insecure",
                          env_token="not-the-token-of-this-run")
        assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr
    finally:
        down = run_tandem("testbed", "down", "--config", str(config))
    assert down.returncode == 0, down.stderr


def test_a_testbed_config_cannot_name_a_constant_token(umi_trace, tmp_path):
    config = write_testbed(tmp_path, umi_trace)
    config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | {"admin_token": "testbed-admin-token"}))
    done = run_tandem("testbed", "up", "--config", str(config))
    assert done.returncode == 2 and "admin_token" in done.stderr
