"""The control plane with real daemons on loopback: three llama.cpp edges, the link emulator replaying a Sionna
trace, the controller, and devices following it.

Decisions are applied everywhere; requests move between edges (a policy that alternates every slot, an edge
killed mid-request) without losing or changing a token; policies swap under load; bad admin calls, reports and
shares are refused and change nothing; a controller killed with SIGKILL comes back with its state.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from controller.policies.checkpoints import SHIPPED_POLICY_DIR
from controller.policies.mappo import DEFAULT_CHECKPOINT
from controller.state import ControllerState
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from device_client.routing import ControllerRoute
from tandem.processes import ControllerProcess, EdgeProcess, LinkEmuProcess
from tandem.private_files import write_private
from tandem.sampling import SamplingConfig
from tandem.trace_format import load_trace
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc, linkemu_pb2, linkemu_pb2_grpc
from harness.clients import ADMIN_TOKEN, free_port, run_tandem, with_admin_token
from harness.teacher_forcing import near_tie_gaps

NUM_EDGES = 3
NUM_USERS = 4
SLOT_S = 0.5
TOKEN = ADMIN_TOKEN  # the controller's, which the edges and the emulator take from the environment
PROMPT = "Name three uses of a bicycle, with a sentence on each."
GREEDY = SamplingConfig()
SAMPLED = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95, seed=11)


class Daemons:
    """The daemons of this module; edges can be killed and started again on the same port."""

    def __init__(self, root: Path, data_dir: Path, trace: Path) -> None:
        self.root, self.data_dir, self.trace = root, data_dir, trace
        self.edge_ports = [free_port() for _ in range(NUM_EDGES)]
        self.edges: list[EdgeProcess] = [self._edge(i) for i in range(NUM_EDGES)]
        self.controller_port = free_port()
        self.state = root / "controller.sqlite"
        self.token_file = root / "admin-token"
        write_private(self.token_file, TOKEN.encode())  # 0600: a token others can read is refused
        self.policy_dir = root / "policies"  # the controller's checkpoints, by folder name
        shutil.copytree(SHIPPED_POLICY_DIR / DEFAULT_CHECKPOINT, self.policy_dir / DEFAULT_CHECKPOINT)  # mappo's

    def _edge(self, index: int) -> EdgeProcess:
        return EdgeProcess(["--engine", "llamacpp", "--data-dir", str(self.data_dir), "--edge-id", str(index),
                            "--port", str(self.edge_ports[index]), "--idle-timeout", "30", "--max-sessions", "16",
                            "--slots", "3"], log_path=self.root / f"edge-{index}.log")

    def start_edge(self, index: int) -> None:
        self.edges[index] = self._edge(index)
        self.edges[index].start()

    def address(self, index: int) -> str:
        return f"127.0.0.1:{self.edge_ports[index]}"

    def start_linkemu(self) -> None:
        config = self.root / "linkemu.yaml"
        config.write_text(yaml.safe_dump({
            "trace": str(self.trace), "base_delay_ms": 2, "outage_limit_s": 60, "control_listen": "127.0.0.1:0",
            "edges": [{"index": i, "address": self.address(i)} for i in range(NUM_EDGES)],
            "users": [{"user": u, "edge": 0, "share": 1 / NUM_USERS} for u in range(NUM_USERS)]}))
        self.linkemu = LinkEmuProcess(["--config", str(config)],
                                      log_path=self.root / "linkemu.log")
        self.linkemu.start()

    def controller_config(self) -> Path:
        config = self.root / "controller.yaml"
        meta = load_trace(self.trace).metadata
        config.write_text(yaml.safe_dump({
            "edges": [{"id": i, "address": self.address(i), "bandwidth_hz": float(meta.edge_bandwidth_hz[i]),
                       "capacity": 4} for i in range(NUM_EDGES)],
            "users": [{"id": u, "draft_length": 4} for u in range(NUM_USERS)],
            "linkemu": self.linkemu.control_address, "slot_s": SLOT_S, "failover_after_s": 1.5,
            "policy": {"name": "tma-equal"}, "policy_dir": str(self.policy_dir),
            "listen": f"127.0.0.1:{self.controller_port}", "metrics_port": 0,
            "admin_token_file": str(self.token_file)}))
        return config

    def start_controller(self) -> None:
        self.controller = ControllerProcess(["--config", str(self.controller_config()), "--state", str(self.state)],
                                            log_path=self.root / f"controller-{time.monotonic_ns()}.log")
        self.controller.start()

    def stop(self) -> None:
        for process in (getattr(self, "controller", None), getattr(self, "linkemu", None), *self.edges):
            if process is not None:
                process.stop()


@pytest.fixture(scope="module")
def testbed(prepared, data_dir, umi_trace, tmp_path_factory):
    bed = Daemons(tmp_path_factory.mktemp("control"), data_dir, umi_trace)
    try:
        for edge in bed.edges:
            edge.start()
        bed.start_linkemu()
        bed.start_controller()
        yield bed
    finally:
        bed.stop()


def controller_stub(bed: Daemons):
    return control_pb2_grpc.ControllerStub(grpc.insecure_channel(bed.controller.address))


def admin_stub(bed: Daemons):
    return control_pb2_grpc.ControllerAdminStub(grpc.insecure_channel(bed.controller.address))


def edge_control_at(address: str):
    return control_pb2_grpc.EdgeControlStub(with_admin_token(grpc.insecure_channel(address)))


def edge_control(bed: Daemons, index: int):
    return edge_control_at(bed.address(index))


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def set_policy(bed: Daemons, name: str, **params) -> None:
    admin_stub(bed).SetPolicy(cpb.SetPolicyRequest(name=name, params={k: str(v) for k, v in params.items()}),
                              metadata=AUTH, timeout=10)


def wait_version(bed: Daemons, beyond: int, timeout: float = 20.0) -> cpb.ControllerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = controller_stub(bed).GetStatus(cpb.StatusRequest(), timeout=5, wait_for_ready=True)
        except grpc.RpcError as error:  # a controller starting up
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            continue
        if status.version > beyond:
            return status
        time.sleep(0.05)
    raise AssertionError(f"no decision beyond version {beyond} within {timeout} s")


def assert_no_session_left(bed: Daemons, timeout: float = 10.0) -> None:
    """Every session the devices opened was closed (a move closes the session it leaves)."""
    deadline = time.monotonic() + timeout
    while True:
        held = {i: edge_control(bed, i).GetLoad(cpb.GetLoadRequest(), timeout=5).sessions for i in range(NUM_EDGES)}
        if not any(held.values()):
            return
        assert time.monotonic() < deadline, f"sessions left open on the edges: {held}"
        time.sleep(0.2)


def controller_metric(bed: Daemons, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{bed.controller.metrics_port}/metrics", timeout=5).read().decode()
    if "{" in name:  # one labelled series
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def consistent_view(bed: Daemons, routes: dict[int, ControllerRoute]):
    """Status, emulator assignments, edge shares and device routes read within one decision version."""
    for _ in range(200):
        before = controller_stub(bed).GetStatus(cpb.StatusRequest(), timeout=5)
        emulator = linkemu_pb2_grpc.LinkControlStub(
            with_admin_token(grpc.insecure_channel(bed.linkemu.control_address)))
        assigned = {a.user: a for a in emulator.GetAssignments(linkemu_pb2.GetAssignmentsRequest(), timeout=5)
                    .assignments}
        loads = {i: edge_control(bed, i).GetLoad(cpb.GetLoadRequest(), timeout=5) for i in range(NUM_EDGES)}
        for route in routes.values():
            route.wait_for_version(before.version, timeout=2)
        versions = {route.version for route in routes.values()}
        after = controller_stub(bed).GetStatus(cpb.StatusRequest(), timeout=5)
        if before.version == after.version and all(load.version == before.version for load in loads.values()) \
                and versions == {before.version}:
            return before, assigned, loads, {user: route.edge for user, route in routes.items()}
        time.sleep(0.02)
    raise AssertionError("never read the whole system within one decision")


POLICIES = ["max-sinr-equal", "random", "tma-equal", "tma-opt", "alternate"]


def test_every_policy_is_applied_everywhere(testbed):
    routes = {u: ControllerRoute(testbed.controller.address, u, via=testbed.linkemu.addresses[u])
              for u in range(NUM_USERS)}
    try:
        for name in POLICIES:
            set_policy(testbed, name)
            start = wait_version(testbed, 0).version
            status = wait_version(testbed, start + 2)  # the policy decided a few slots
            assert status.policy == name
            status, assigned, loads, device_edges = consistent_view(testbed, routes)
            for a in status.allocations:
                assert (assigned[a.user].edge, assigned[a.user].share) == pytest.approx((a.edge, a.bandwidth_share))
                on_edge = {u.user: u.share for u in loads[a.edge].users if u.share > 0}
                assert on_edge[a.user] == pytest.approx(a.compute_share), (name, a)
                assert device_edges[a.user] == a.edge, name
            for index, load in loads.items():
                expected = {a.user for a in status.allocations if a.edge == index}
                assert {u.user for u in load.users if u.share > 0} == expected, (name, index)
    finally:
        for route in routes.values():
            route.close()
    assert controller_metric(testbed, "tandem_controller_decision_seconds_count") > 0


def run(route_or_edge, draft, sampling: SamplingConfig, tokens: int = 64, user: int | None = None, sink=None):
    request = GenerationRequest(PROMPT, "psd", tokens, sampling, draft_length=4, ignore_eos=True)
    return generate(route_or_edge, draft, request, on_text=sink, user=user)[0]


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_migration_every_slot_is_lossless(testbed, draft, sampling):
    set_policy(testbed, "alternate")
    wait_version(testbed, 0)
    migrations_before = controller_metric(testbed, "tandem_controller_migrations_total")
    route = ControllerRoute(testbed.controller.address, 0)
    try:
        moved = run(route, draft, sampling, tokens=96, user=0)
    finally:
        route.close()
    assert moved.migrations >= 1 and len(set(moved.edges)) >= 2, moved.edges
    fixed = EdgeConnection(testbed.address(0))
    try:
        unmoved = run(fixed, draft, sampling, tokens=96)
        prompt = draft.encode_chat(PROMPT)
        if sampling.greedy:
            near_tie_gaps(fixed, prompt, moved.token_ids, "migrated greedy run")
    finally:
        fixed.close()
    assert moved.token_ids == unmoved.token_ids
    assert controller_metric(testbed, "tandem_controller_migrations_total") > migrations_before
    assert_no_session_left(testbed)


def test_policy_swap_under_load_keeps_sessions_lossless(testbed, draft, prepared):
    from device_client.draft import LlamaCppDraftEngine

    set_policy(testbed, "tma-equal")
    drafts = [draft, LlamaCppDraftEngine(prepared.draft_gguf)]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def device(user: int) -> None:
        route = ControllerRoute(testbed.controller.address, user)
        try:
            results[user] = run(route, drafts[user], GREEDY, tokens=64, user=user)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            route.close()

    threads = [threading.Thread(target=device, args=(user,)) for user in range(2)]
    for thread in threads:
        thread.start()
    swaps = ["tma-opt", "mappo", "max-sinr-equal", "random", "alternate", "tma-equal"]  # mappo: the shipped actor
    while any(thread.is_alive() for thread in threads) and swaps:
        time.sleep(SLOT_S)
        set_policy(testbed, swaps.pop(0))
    done = run_tandem("policy", "set", "tma-opt", "--param", "parallel=true", "--controller",
                      testbed.controller.address, "--admin-token-file", str(testbed.token_file), timeout=60)
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert done.returncode == 0, done.stderr
    assert_no_session_left(testbed)
    fixed = EdgeConnection(testbed.address(1))
    try:
        for user, result in results.items():
            near_tie_gaps(fixed, draft.encode_chat(PROMPT), result.token_ids, f"user {user} under policy swaps")
    finally:
        fixed.close()
    assert len(results) == 2


def test_admin_calls_need_the_token_and_bad_requests_change_nothing(testbed):
    set_policy(testbed, "tma-equal")
    admin = admin_stub(testbed)
    cases = [((), grpc.StatusCode.UNAUTHENTICATED),
             ((("authorization", "Bearer not-the-token-at-all"),), grpc.StatusCode.PERMISSION_DENIED),
             ((("authorization", TOKEN),), grpc.StatusCode.PERMISSION_DENIED)]
    for metadata, code in cases:
        with pytest.raises(grpc.RpcError) as refused:
            admin.SetPolicy(cpb.SetPolicyRequest(name="random"), metadata=metadata, timeout=5)
        assert refused.value.code() == code
        with pytest.raises(grpc.RpcError):
            admin.ListPolicies(cpb.ListPoliciesRequest(), metadata=metadata, timeout=5)
    for request in (cpb.SetPolicyRequest(name="no-such-policy"),
                    cpb.SetPolicyRequest(name="random", params={"temperature": "nan"}),
                    cpb.SetPolicyRequest(name="random", params={"not an identifier": "1"}),
                    cpb.SetPolicyRequest(name="random", params={"unknown_parameter": "1"})):
        with pytest.raises(grpc.RpcError) as refused:
            admin.SetPolicy(request, metadata=AUTH, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
    assert admin.GetPolicy(cpb.GetPolicyRequest(), metadata=AUTH, timeout=5).name == "tma-equal"
    names = {p.name for p in admin.ListPolicies(cpb.ListPoliciesRequest(), metadata=AUTH, timeout=5).policies}
    assert set(POLICIES) <= names

    controller = controller_stub(testbed)
    for report in (cpb.UserReport(user=99, acceptance=0.5, draft_seconds_per_token=0.01),
                   cpb.UserReport(user=0, acceptance=float("nan"), draft_seconds_per_token=0.01),
                   cpb.UserReport(user=0, acceptance=1.5, draft_seconds_per_token=0.01),
                   cpb.UserReport(user=0, acceptance=0.5, draft_seconds_per_token=float("inf"))):
        with pytest.raises(grpc.RpcError) as refused:
            controller.Report(report, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(controller.WatchAllocation(cpb.WatchAllocationRequest(user=99), timeout=5)))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    edge = edge_control(testbed, 0)
    before = edge.GetLoad(cpb.GetLoadRequest(), timeout=5)
    bad = [(cpb.SetSharesRequest(version=before.version + 10**6, shares=[cpb.ComputeShare(user=0, share=0.7),
                                                                         cpb.ComputeShare(user=1, share=0.7)]),
            grpc.StatusCode.INVALID_ARGUMENT),
           (cpb.SetSharesRequest(version=before.version + 10**6, shares=[cpb.ComputeShare(user=0, share=float("nan"))]),
            grpc.StatusCode.INVALID_ARGUMENT),
           (cpb.SetSharesRequest(version=before.version + 10**6, shares=[cpb.ComputeShare(user=0, share=0.2),
                                                                         cpb.ComputeShare(user=0, share=0.2)]),
            grpc.StatusCode.INVALID_ARGUMENT),
           (cpb.SetSharesRequest(version=0, shares=[]), grpc.StatusCode.INVALID_ARGUMENT),
           (cpb.SetSharesRequest(version=1, shares=[cpb.ComputeShare(user=0, share=1.0)]),
            grpc.StatusCode.FAILED_PRECONDITION)]
    for request, code in bad:
        with pytest.raises(grpc.RpcError) as refused:
            edge.SetShares(request, timeout=5)
        assert refused.value.code() == code, request
    after = edge.GetLoad(cpb.GetLoadRequest(), timeout=5)
    assert after.version < before.version + 10**6  # no bad request took effect (the controller moves on meanwhile)


def test_the_cli_follows_the_controller_and_reports_its_status(testbed):
    import json

    set_policy(testbed, "alternate")
    wait_version(testbed, 0)
    done = run_tandem("generate", "--controller", testbed.controller.address, "--user", "3", "--via",
                      testbed.linkemu.addresses[3], "--max-tokens", "24", "--ignore-eos", "--json", PROMPT)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["generated_tokens"] == 24 and summary["edges"]
    status = run_tandem("controller", "status", "--controller", testbed.controller.address, "--json")
    assert status.returncode == 0, status.stderr
    table = json.loads(status.stdout)
    assert table["policy"] == "alternate" and len(table["allocations"]) == NUM_USERS
    human = run_tandem("controller", "status", "--controller", testbed.controller.address)
    assert "policy alternate" in human.stdout and "healthy" in human.stdout
    for args, code in ((["--controller", testbed.controller.address], 2),  # no --user
                       (["--edge", testbed.address(0), "--controller", testbed.controller.address, "--user", "0"], 2),
                       (["--edge", testbed.address(0), "--user", "0"], 2),
                       (["--controller", testbed.controller.address, "--user", "99"], 2)):  # not in the topology
        refused = run_tandem("generate", *args, "--max-tokens", "4", PROMPT)
        assert refused.returncode == code and "tandem: error:" in refused.stderr, (args, refused.stderr)
    wrong = run_tandem("policy", "list", "--controller", testbed.controller.address, env_token="wrong-token-012345678")
    assert wrong.returncode == 1 and "PERMISSION_DENIED" in wrong.stderr


def test_a_trained_mappo_policy_is_swapped_in_and_decides_valid_slots(testbed, trained_policy, tmp_path):
    """`tandem policy set mappo --checkpoint NAME` loads the actor `tandem train` kept (without Ray), put in the
    controller's policy directory, in the running controller; its decisions hold the share rule and give every
    user a draft length; a corrupted checkpoint is refused and changes nothing."""
    set_policy(testbed, "tma-equal")
    admin = ("--controller", testbed.controller.address, "--admin-token-file", str(testbed.token_file))
    shutil.copytree(trained_policy, testbed.policy_dir / "trained", dirs_exist_ok=True)
    done = run_tandem("policy", "set", "mappo", "--checkpoint", "trained", *admin, timeout=120)
    assert done.returncode == 0, done.stderr
    start = wait_version(testbed, 0).version
    for _ in range(3):
        status = wait_version(testbed, start)
        start = status.version
        assert status.policy == "mappo" and len(status.allocations) == NUM_USERS
        assert all(allocation.draft_length >= 1 for allocation in status.allocations)
        for resource in ("bandwidth_share", "compute_share"):
            per_edge: dict[int, float] = {}
            for allocation in status.allocations:
                share = getattr(allocation, resource)
                assert 0 <= share <= 1, allocation
                per_edge[allocation.edge] = per_edge.get(allocation.edge, 0.0) + share
            assert all(total <= 1 + 1e-9 for total in per_edge.values()), (resource, per_edge)
    corrupted = testbed.policy_dir / "corrupted"
    shutil.copytree(trained_policy, corrupted, dirs_exist_ok=True)
    (corrupted / "actor.safetensors").write_bytes(b"\x80\x04garbage")
    refused = run_tandem("policy", "set", "mappo", "--checkpoint", "corrupted", *admin, timeout=120)
    assert refused.returncode == 2 and "not a safetensors file" in refused.stderr, refused.stderr
    assert wait_version(testbed, start).policy == "mappo"
    set_policy(testbed, "tma-equal")


class _RunsCode:
    """A pickle that, when loaded, creates the marker file: what a crafted RLlib checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo $$ > {self.marker}",))


def _crafted_checkpoint(folder: Path, marker: Path) -> None:
    """A folder laid out as RLlib's RLModule checkpoint (and our old format), with a pickle that runs code."""
    (folder / "module").mkdir(parents=True)
    for name in ("class_and_ctor_args.pkl", "module_state.pkl"):
        (folder / "module" / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    (folder / "module" / "metadata.json").write_text("{}")
    (folder / "tandem-policy.json").write_text(json.dumps({"format": "tandem-policy", "encoding_version": 1,
                                                           "module_id": "edge", "max_users": 4}))


def test_a_checkpoint_is_a_name_in_the_policy_directory_and_runs_no_code(testbed, tmp_path):
    """Finding 1 of the second security pass: SetPolicy's checkpoint was a path handed to RLlib, which unpickled
    it. Now it is the name of a folder in the controller's policy directory, read as JSON and safetensors: a
    crafted pickle there, or anywhere else, runs nothing; every refusal changes nothing and says nothing of paths."""
    set_policy(testbed, "tma-equal")
    admin = ("--controller", testbed.controller.address, "--admin-token-file", str(testbed.token_file))
    marker = tmp_path / "ran"
    _crafted_checkpoint(testbed.policy_dir / "crafted", marker)
    _crafted_checkpoint(tmp_path / "outside", marker)
    (testbed.policy_dir / "escape").symlink_to(tmp_path / "outside")
    attempts = {
        "crafted in the policy directory": ["--checkpoint", "crafted"],
        "an absolute path": ["--checkpoint", str(tmp_path / "outside")],
        "a path that does not exist": ["--checkpoint", str(tmp_path / "nowhere")],
        "a relative path out": ["--checkpoint", "../outside"],
        "a symlink out": ["--checkpoint", "escape"],
        "a path as a parameter": ["--param", f"checkpoint={tmp_path / 'outside'}"],
        "the directory as a parameter": ["--param", f"policy_dir={tmp_path}", "--checkpoint", "outside"],
    }
    for what, args in attempts.items():
        refused = run_tandem("policy", "set", "mappo", *args, *admin, timeout=120)
        assert refused.returncode == 2, (what, refused.stderr)
        assert "No such file" not in refused.stderr and "exist" not in refused.stderr, (what, refused.stderr)
        if what != "crafted in the policy directory":  # that one exists in the directory: its format is named
            assert "no usable policy checkpoint named" in refused.stderr or "cannot be set" in refused.stderr, (
                what, refused.stderr)
    assert "checkpoint format" in run_tandem("policy", "set", "mappo", "--checkpoint", "crafted", *admin,
                                             timeout=120).stderr
    time.sleep(1.0)
    assert not marker.exists(), "a pickle in a checkpoint ran inside the controller"
    status = controller_stub(testbed).GetStatus(cpb.StatusRequest(), timeout=5)
    assert status.policy == "tma-equal"  # nothing changed


def test_malformed_topology_is_refused_with_exit_2(tmp_path):
    good_edge = {"id": 0, "address": "127.0.0.1:1"}
    cases = {
        "duplicate edge": {"edges": [good_edge, good_edge], "users": [{"id": 0}]},
        "bad address": {"edges": [{"id": 0, "address": "nowhere"}], "users": [{"id": 0}]},
        "negative bandwidth": {"edges": [{**good_edge, "bandwidth_hz": -1}], "users": [{"id": 0}]},
        "no users": {"edges": [good_edge], "users": []},
        "unknown policy": {"edges": [good_edge], "users": [{"id": 0}], "policy": {"name": "nope"}},
        "unknown field": {"edges": [good_edge], "users": [{"id": 0}], "slots": 3},
    }
    for label, topology in cases.items():
        config = tmp_path / f"{label.replace(' ', '-')}.yaml"
        config.write_text(yaml.safe_dump(topology))
        done = run_tandem("controller", "serve", "--config", str(config), "--state", str(tmp_path / f"{label}.db"),
                          "--listen", "127.0.0.1:0", timeout=60)
        assert done.returncode == 2, (label, done.stdout, done.stderr)
        assert "tandem: error:" in done.stderr and "Traceback" not in done.stderr, (label, done.stderr)


def test_controller_restart_after_sigkill_resumes_its_state(testbed, draft):
    set_policy(testbed, "max-sinr-equal")
    wait_version(testbed, 0)
    route = ControllerRoute(testbed.controller.address, 2)
    before = controller_stub(testbed).GetStatus(cpb.StatusRequest(), timeout=5)
    testbed.controller.kill()
    try:
        stored = ControllerState(testbed.state)
        decision = stored.load_decision()
        assert stored.load_policy().name == "max-sinr-equal"
        stored.close()
        assert decision.version >= before.version
        if decision.version == before.version:  # the association table as the controller last reported it
            assert [(a.user, a.edge, a.bandwidth_share, a.compute_share) for a in decision.decision.allocations] \
                == [(a.user, a.edge, pytest.approx(a.bandwidth_share), pytest.approx(a.compute_share))
                    for a in before.allocations]
        # Devices and edges keep the last decision while the controller is down.
        result = run(route, draft, GREEDY, tokens=24, user=2)
        assert len(result.token_ids) == 24 and result.migrations == 0
        testbed.start_controller()
        after = wait_version(testbed, decision.version - 1)
        assert after.policy == "max-sinr-equal"
        assert after.version >= decision.version
        # The edges reconcile with the resumed state: none stays behind the stored decision.
        deadline = time.monotonic() + 20
        while min(edge_control(testbed, i).GetLoad(cpb.GetLoadRequest(), timeout=5).version
                  for i in range(NUM_EDGES)) < decision.version:
            assert time.monotonic() < deadline, "an edge never caught up with the resumed decision"
            time.sleep(0.1)
        assert route.wait_for_version(decision.version + 1, timeout=20)  # the device's watch reconnected
    finally:
        route.close()


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_failover_when_an_edge_is_killed_mid_request(testbed, draft, sampling):
    set_policy(testbed, "tma-equal")
    wait_version(testbed, 0)
    failovers_before = controller_metric(testbed, "tandem_controller_failovers_total")
    route = ControllerRoute(testbed.controller.address, 1)
    started = threading.Event()
    outcome: dict[str, object] = {}

    def device() -> None:
        try:
            outcome["result"] = run(route, draft, sampling, tokens=128, user=1, sink=lambda text: started.set())
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=device)
    thread.start()
    try:
        assert started.wait(120)
        victim = route.edge
        testbed.edges[victim].kill()
        thread.join(timeout=300)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result.migrations >= 1 and not result.edges[-1].startswith(f"edge {victim} "), (victim, result.edges)
        survivor = EdgeConnection(testbed.address((victim + 1) % NUM_EDGES))
        try:
            if sampling.greedy:
                near_tie_gaps(survivor, draft.encode_chat(PROMPT), result.token_ids, "request that failed over")
            else:
                assert result.token_ids == run(survivor, draft, sampling, tokens=128).token_ids
        finally:
            survivor.close()
        # The controller took the dead edge out (failing probes past the deadline) and no allocation names it. (Whether
        # users were still on it then, and so counted as failovers, depends on the channel: tma-equal may have moved
        # them already; the count itself is unit-tested in tests/unit/test_controller.py.)
        deadline = time.monotonic() + 20
        while controller_metric(testbed, f'tandem_controller_edge_healthy{{edge="{victim}"}}') != 0:
            assert time.monotonic() < deadline, "the controller never took the dead edge out"
            time.sleep(0.2)
        status = wait_version(testbed, controller_stub(testbed).GetStatus(cpb.StatusRequest(), timeout=5).version)
        assert victim not in {a.edge for a in status.allocations}
        assert controller_metric(testbed, "tandem_controller_failovers_total") >= failovers_before
    finally:
        route.close()
        thread.join(timeout=60)
        testbed.start_edge(victim)


def test_a_vllm_edge_follows_the_controller(vllm_edge, draft, tmp_path):
    """The vLLM engine behind the control plane: its compute shares are set, the device follows the controller
    to it, and the answer is the target's (teacher-forced on that edge)."""
    config = tmp_path / "controller.yaml"
    config.write_text(yaml.safe_dump({
        "edges": [{"id": 0, "address": vllm_edge.address}], "users": [{"id": 0}, {"id": 1}], "slot_s": SLOT_S,
        "policy": {"name": "tma-opt"}, "listen": "127.0.0.1:0"}))
    token = tmp_path / "token"
    write_private(token, TOKEN.encode())
    with ControllerProcess(["--config", str(config), "--state", str(tmp_path / "c.sqlite"), "--admin-token-file",
                            str(token)], log_path=tmp_path / "controller.log") as controller:
        route = ControllerRoute(controller.address, 0)
        try:
            result = run(route, draft, GREEDY, tokens=32, user=0)
        finally:
            route.close()
        load = edge_control_at(vllm_edge.address).GetLoad(cpb.GetLoadRequest(), timeout=5)
    assert load.version > 0
    assert {u.user for u in load.users if u.share > 0} == {0, 1}
    assert sum(u.share for u in load.users) <= 1 + 1e-9
    connection = EdgeConnection(vllm_edge.address)
    try:
        near_tie_gaps(connection, draft.encode_chat(PROMPT), result.token_ids, "vLLM edge under the controller")
    finally:
        connection.close()
