"""Property-based fuzzing of every RPC of every daemon, over real sockets on loopback.

Daemons of this module: a llama.cpp edge of its own (its state -- share versions up to 2**64 - 1, sessions of odd
users -- must not leak into the session's shared edge), a link emulator with its control service replaying the
UMi test trace, and a controller deciding for that edge and emulator. Every method of every service in
tandem/wire/v1 is found from the descriptors (a new RPC is fuzzed without a change here), plus grpc.health.v1
Health/Check on each daemon. For each RPC, hypothesis sends

- generated messages (tests/system/fuzz_messages.py): random ones, ones with small integers and known names, and valid
  calls mutated field by field; for a client stream, sequences of them in any order (open, attach, draft and
  close in wrong orders) and valid sequences, mutated, in their order or shuffled; and
- garbage bytes through a channel without serializers (in a stream, among the messages of a valid call);

the controller's calls and those of admin-only services with and without the admin bearer token (or a wrong one).

Each call must end with a status within DEADLINE: a reply, or an error whose code is precise -- not UNKNOWN or
INTERNAL (an unhandled exception), not DEADLINE_EXCEEDED (the server blocked), not UNAVAILABLE (it is gone) --
and the daemon must still run. Meanwhile greedy speculative generations of one prompt run on the fuzzed edge, back
to back; each must produce exactly the tokens of the same generation run before fuzzing.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest
import yaml
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from tandem.private_files import write_private
from tandem.sampling import SamplingConfig
from tandem.wire.v1 import control_pb2, edge_pb2, linkemu_pb2
from tandem.processes import ControllerProcess, LinkEmuProcess
from harness.clients import ADMIN_TOKEN as TOKEN
from harness.figures import REPORT
from harness.daemons import edge_process
from tests.system.fuzz_messages import garbage, messages

DEADLINE = 20.0
EXAMPLES = int(os.environ.get("TANDEM_FUZZ_EXAMPLES", "40"))  # per RPC, for messages and for garbage each
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example])
LIVE_REQUEST = GenerationRequest("Say something nice about trees.", "psd", 24, SamplingConfig(), draft_length=4,
                                 ignore_eos=True)
PRECISE_ENOUGH = "a precise status: not UNKNOWN/INTERNAL (unhandled), DEADLINE_EXCEEDED (blocked), UNAVAILABLE (gone)"
NOT_PRECISE = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.UNAVAILABLE}
SERVED_BY = {"EdgeService": "edge", "EdgeControl": "edge", "LinkControl": "linkemu", "Controller": "controller",
             "ControllerAdmin": "controller"}
WIRE = (edge_pb2, control_pb2, linkemu_pb2)
WIRE_CLASSES = [GetMessageClass(d) for module in (*WIRE, health_pb2) for d in module.DESCRIPTOR.message_types_by_name
                .values()]
SMALL = st.integers(0, 8)  # token ids, users, edges, positions, versions that pass the first range checks
PROMPT_IDS = [1, 2, 3, 4, 5]
OPEN = edge_pb2.Open(prompt_token_ids=PROMPT_IDS, sampling=edge_pb2.SamplingParams(), mode=edge_pb2.MODE_SPECULATIVE,
                     draft_length=4)
# Valid calls -- for a client stream, a valid sequence -- whose messages are mutated field by field
# (messages(base=...)) and, in a stream, sent in their order or shuffled.
VALID = [
    [edge_pb2.DeviceMessage(open=OPEN),
     edge_pb2.DeviceMessage(draft=edge_pb2.DraftBlock(position=len(PROMPT_IDS), token_ids=[6, 7, 8, 9])),
     edge_pb2.DeviceMessage(close=edge_pb2.Close())],
    [edge_pb2.DeviceMessage(open=edge_pb2.Open(prompt_token_ids=PROMPT_IDS, mode=edge_pb2.MODE_EDGE_ONLY,
                                               max_new_tokens=4))],
    [edge_pb2.ScoreRequest(token_ids=PROMPT_IDS + [6, 7], start=1, top_n=2)],
    [control_pb2.SetSharesRequest(version=10**6, shares=[control_pb2.ComputeShare(user=0, share=0.5),
                                                         control_pb2.ComputeShare(user=1, share=0.5)])],
    [control_pb2.WatchAllocationRequest(user=1)],
    [control_pb2.UserReport(user=0, draft_seconds_per_token=0.01, acceptance=0.5, pending_tokens=10,
                            round_seconds=0.05)],
    [control_pb2.SetPolicyRequest(name="tma-opt", params={"parallel": "true"})],
    [linkemu_pb2.AssignRequest(assignments=[linkemu_pb2.UserAssignment(user=0, edge=0, share=0.5)])],
    [linkemu_pb2.SeekRequest(slot=1)],
    [health_pb2.HealthCheckRequest(service="")],
]
COUNTS: Counter[str] = Counter()  # cases sent per RPC
STATUSES: dict[str, Counter[str]] = {}  # per RPC, how the cases ended (OK: past every check)


@dataclass(frozen=True)
class Rpc:
    daemon: str  # "edge", "linkemu" or "controller"
    method: object  # MethodDescriptor

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        suffix = f"@{self.daemon}" if self.method.containing_service.name == "Health" else ""
        return f"{self.method.containing_service.name}/{self.method.name}{suffix}"

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request(self):
        return GetMessageClass(self.method.input_type)


RPCS = [Rpc(SERVED_BY[service.name], method) for module in WIRE for service in module.DESCRIPTOR.services_by_name
        .values() for method in service.methods]
RPCS += [Rpc(daemon, health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"])
         for daemon in ("edge", "linkemu", "controller")]


class LiveSessions(threading.Thread):
    """Greedy PSD generations of LIVE_REQUEST on the fuzzed edge, back to back until stopped."""

    def __init__(self, edge, draft) -> None:
        super().__init__(name="live-sessions", daemon=True)
        self.edge, self.draft = edge, draft
        self.reference = self.generate()  # undisturbed: before any fuzzing
        self.runs: list[tuple[list[int], int]] = []  # tokens, cases sent to the edge meanwhile
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def generate(self) -> list[int]:
        connection = EdgeConnection(self.edge.address)
        try:
            return generate(connection, self.draft, LIVE_REQUEST)[0].token_ids
        finally:
            connection.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            before = edge_cases()
            try:
                tokens = self.generate()
            except BaseException as error:  # reported by the test
                self.errors.append(error)
                return
            self.runs.append((tokens, edge_cases() - before))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=300)


def edge_cases() -> int:
    return sum(COUNTS[rpc.name] for rpc in RPCS if rpc.daemon == "edge")


@pytest.fixture(scope="module")
def live(prepared, data_dir, draft, tmp_path_factory):
    # --max-context 512 bounds what one valid Score or prompt costs (a 2k-token prefill on these cores takes seconds)
    logs = tmp_path_factory.mktemp("logs")
    with edge_process("llamacpp", data_dir, logs, ["--edge-id", "0", "--max-context", "512"]) as edge:
        sessions = LiveSessions(edge, draft)
        sessions.start()
        try:
            yield sessions
        finally:
            sessions.stop()


@dataclass
class Daemons:
    processes: dict  # "edge", "linkemu", "controller" -> DaemonProcess
    channels: dict[str, grpc.Channel]
    policies: list[str]  # the controller's


@pytest.fixture(scope="module")
def daemons(live, umi_trace, tmp_path_factory) -> Daemons:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "linkemu.yaml").write_text(yaml.safe_dump({
        "trace": str(umi_trace), "speedup": 10, "control_listen": "127.0.0.1:0",
        "edges": [{"index": 0, "address": live.edge.address}],
        "users": [{"user": user, "edge": 0, "share": 0.5} for user in (0, 1)]}))
    write_private(root / "admin-token", TOKEN.encode())  # 0600: a token others can read is refused
    with LinkEmuProcess(["--config", str(root / "linkemu.yaml")], log_path=root / "linkemu.log") as linkemu:
        (root / "controller.yaml").write_text(yaml.safe_dump({
            "edges": [{"id": 0, "address": live.edge.address}], "users": [{"id": 0}, {"id": 1}],
            "linkemu": linkemu.control_address, "slot_s": 0.5, "policy": {"name": "tma-equal"},
            "listen": "127.0.0.1:0", "admin_token_file": str(root / "admin-token")}))
        with ControllerProcess(["--config", str(root / "controller.yaml"), "--state", str(root / "state.sqlite")],
                               log_path=root / "controller.log") as controller:
            addresses = {"edge": live.edge.address, "linkemu": linkemu.control_address,
                         "controller": controller.address}
            channels = {name: grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 16 << 20),
                                                                      ("grpc.max_receive_message_length", 16 << 20)])
                        for name, address in addresses.items()}
            listed = call(channels["controller"], rpc_named("ControllerAdmin/ListPolicies"),
                          [control_pb2.ListPoliciesRequest()], AUTH)
            REPORT["hypothesis_rpcs"], REPORT["hypothesis_statuses"] = COUNTS, STATUSES
            yield Daemons({"edge": live.edge, "linkemu": linkemu, "controller": controller}, channels,
                          [policy.name for policy in listed.policies])
            for channel in channels.values():
                channel.close()


def rpc_named(name: str) -> Rpc:
    return next(rpc for rpc in RPCS if rpc.name == name)


AUTH = (("authorization", f"Bearer {TOKEN}"),)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
WITHOUT_TOKEN = st.one_of(st.just(()), st.just((("authorization", TOKEN),)),
                          HEADER_TEXT.map(lambda value: (("authorization", value),)),
                          HEADER_TEXT.map(lambda value: (("authorization", f"Bearer {value}"),)))
# The token in half of the cases, so that they reach the servicers.
ADMIN_METADATA = st.sampled_from([True, False]).flatmap(lambda token: st.just(AUTH) if token else WITHOUT_TOKEN)


def call(channel: grpc.Channel, rpc: Rpc, requests: list, metadata=(), raw: bool = False):
    """Sends ``requests`` (bytes as they are when ``raw``; a stream for a client-streaming RPC, else the first);
    reads the reply, or at most 8 messages (1 when only the server streams) and cancels. Returns the reply or
    the last message read, or raises grpc.RpcError."""
    kind = "_".join("stream" if streaming else "unary"
                    for streaming in (rpc.method.client_streaming, rpc.method.server_streaming))
    stub = getattr(channel, kind)(
        rpc.path, request_serializer=None if raw else type(requests[0]).SerializeToString,
        response_deserializer=None if raw else GetMessageClass(rpc.method.output_type).FromString)
    reply = stub(iter(requests) if rpc.method.client_streaming else requests[0], timeout=DEADLINE, metadata=metadata)
    if not rpc.method.server_streaming:
        return reply
    last = None
    for _, last in zip(range(8 if rpc.method.client_streaming else 1), reply):
        pass
    reply.cancel()
    return last


def check_status(daemons: Daemons, rpc: Rpc, requests: list, metadata, raw: bool) -> None:
    process = daemons.processes[rpc.daemon]
    COUNTS[rpc.name] += 1
    code = "OK"
    try:
        call(daemons.channels[rpc.daemon], rpc, requests, metadata, raw)
    except grpc.RpcError as error:
        code = error.code().name
        assert error.code() not in NOT_PRECISE, f"{rpc.name}: {error.code().name} {error.details()!r}; wanted " \
                                                f"{PRECISE_ENOUGH} (daemon log {process.log_path})"
    finally:
        STATUSES.setdefault(rpc.name, Counter())[code] += 1
    assert process.process.poll() is None, f"the {rpc.daemon} daemon exited ({process.process.returncode}) " \
                                           f"after {rpc.name}; log {process.log_path}:\n{process.tail()}"


def metadata_for(rpc: Rpc):
    """Calls of the controller and of admin-only services with and without the admin token (a device may hold
    one), the others without."""
    admin_only = rpc.name.partition("/")[0] in ("EdgeControl", "LinkControl", "ControllerAdmin")
    return ADMIN_METADATA if rpc.daemon == "controller" or admin_only else st.just(())


def known_strings(daemons: Daemons):
    """Names that pass lookups (policies, services), and paths a checkpoint might be read from."""
    services = [s.full_name for module in (*WIRE, health_pb2) for s in module.DESCRIPTOR.services_by_name.values()]
    return st.sampled_from(["", "/", ".", "/etc", *daemons.policies, *services])


@pytest.mark.parametrize("rpc", RPCS, ids=str)
@FUZZ
@given(data=st.data())
def test_generated_messages_get_a_precise_status(daemons, rpc, data):
    cls, scripts = rpc.request, valid_calls(rpc)
    bases = [message for script in scripts for message in script]
    one = st.one_of(messages(cls), messages(cls, ints=SMALL, strings=known_strings(daemons)),
                    *([st.sampled_from(bases).flatmap(lambda base: messages(cls, base=base))] if bases else []))
    if not rpc.method.client_streaming:
        requests = one.map(lambda message: [message])
    else:
        in_order_or_not = st.sampled_from(scripts).flatmap(lambda script: st.just(script) | st.permutations(script))
        mutated = in_order_or_not.flatmap(lambda script: st.tuples(*(messages(cls, base=m) for m in script)))
        requests = st.lists(one, min_size=1, max_size=6) | mutated.map(list)
    check_status(daemons, rpc, data.draw(requests, label="requests"), data.draw(metadata_for(rpc), label="metadata"),
                 raw=False)


@pytest.mark.parametrize("rpc", RPCS, ids=str)
@FUZZ
@given(data=st.data())
def test_garbage_bytes_get_a_precise_status(daemons, rpc, data):
    """Bytes that are not a (valid) ``rpc.request``; in a client stream, among the messages of a valid call."""
    bad = garbage(rpc.request, WIRE_CLASSES)
    if rpc.method.client_streaming:
        valid = [message.SerializeToString() for script in valid_calls(rpc) for message in script]
        requests = st.lists(bad | st.sampled_from(valid) if valid else bad, min_size=1, max_size=4)
    else:
        requests = bad.map(lambda item: [item])
    check_status(daemons, rpc, data.draw(requests, label="bytes"), data.draw(metadata_for(rpc), label="metadata"),
                 raw=True)


def valid_calls(rpc: Rpc) -> list[list]:
    return [script for script in VALID if script[0].DESCRIPTOR is rpc.method.input_type]


def test_the_live_sessions_kept_their_tokens(live):
    """Every generation that ran beside the fuzzing produced exactly the undisturbed tokens."""
    live.stop()
    assert not live.errors, f"a live session failed: {live.errors[0]!r}"
    assert live.runs, "no live generation finished"
    assert len(live.reference) == LIVE_REQUEST.max_tokens
    for tokens, cases in live.runs:
        assert tokens == live.reference, f"a live generation beside {cases} fuzz cases produced other tokens"
    if edge_cases():
        assert any(cases for _, cases in live.runs), "no live generation overlapped the edge's fuzzing"
    REPORT["hypothesis_live_sessions"] = {"runs": len(live.runs), "tokens": LIVE_REQUEST.max_tokens,
                                          "edge_cases_beside": sum(cases for _, cases in live.runs)}
