"""Pure logic of the hardening (docs/security.md), on synthetic inputs with known answers: the shaper's bounded work
per chunk, per-identity session limits and open rate, progress-only idle clocks, cheap size checks first, quiet
logs, and a draining edge leaving the controller's topology at once."""

from __future__ import annotations

import logging
import math
import time

import pytest

from controller.config import ControllerConfig
from controller.telemetry import EdgeLoadSample, Telemetry
from edge_server.checks import check_open, check_score
from edge_server.engines.base import EngineInfo
from edge_server.sessions import SessionError, SessionRegistry, SessionRequest
from linkemu.shaper import Direction, SlotClock, TraceShaper
from tandem.limits import RateLimit
from tandem.rpc import Caller, QuietLog, echo
from tandem.sampling import SamplingConfig
from tandem.wire.v1 import edge_pb2 as pb


def test_a_tiny_rate_is_a_slow_link_not_a_frozen_loop():
    """Rate 1e-300 bit/s: the chunk's arrival is astronomically late but computed in bounded work."""
    looked_up = []

    def rate_of(direction, slot):
        looked_up.append(slot)
        return 1e-300

    shaper = TraceShaper(SlotClock(0.0, 0.01, 100), rate_of, 0.0, 10.0)
    arrival = shaper.delivery_time(Direction.UP, 16 * 1024, 0.0)
    assert len(looked_up) == TraceShaper.MAX_SLOTS_PER_CHUNK  # unbounded, it walked ~1e300 slots
    assert arrival > 1e290 and not math.isnan(arrival)


def test_the_mean_rate_extrapolation_matches_a_steady_link():
    """Past the slot bound the rest goes at the mean rate walked: exact for a constant rate."""
    slots = TraceShaper.MAX_SLOTS_PER_CHUNK
    shaper = TraceShaper(SlotClock(0.0, 0.001, 10), lambda direction, slot: 8.0, 0.0, 10.0)
    nbytes = slots  # 8 bits per byte at 8 bit/s: 1 s per byte, far beyond 4096 slots of 1 ms
    assert shaper.delivery_time(Direction.DOWN, nbytes, 0.0) == pytest.approx(nbytes, rel=1e-9)


def _request(prompt=(1, 2, 3)):
    return SessionRequest(list(prompt), SamplingConfig(), True, 4, 0, [], None)


def test_each_identity_holds_at_most_its_share_of_sessions():
    registry = SessionRegistry(max_sessions=5, idle_timeout=30, per_identity=2)
    for _ in range(2):
        registry.open(_request(), "device-1")
    with pytest.raises(SessionError) as refused:
        registry.open(_request(), "device-1")
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    registry.open(_request(), "device-2")  # another identity still finds a slot
    with pytest.raises(SessionError):
        with registry.score_lease("device-2"):
            registry.open(_request(), "device-2")  # the Score counts against the same limit


def test_an_identity_at_its_limit_gives_up_its_oldest_detached_session():
    registry = SessionRegistry(max_sessions=8, idle_timeout=30, per_identity=2)
    first, second = registry.open(_request(), "device-1"), registry.open(_request(), "device-1")
    registry.detach(first)
    third = registry.open(_request(), "device-1")  # an abandoned request does not lock its device out
    assert {s.id for s in registry._sessions.values()} == {second.id, third.id}
    with pytest.raises(SessionError):
        registry.open(_request(), "device-1")  # both attached: refused


def test_a_session_that_progressed_gets_the_whole_timeout_after_its_link_broke():
    registry = SessionRegistry(max_sessions=4, idle_timeout=0.05)
    session = registry.open(_request(), "device-1")
    time.sleep(0.04)
    session.touch()  # a verified block
    time.sleep(0.04)
    registry.detach(session)  # the link broke 40 ms after the last block: the clock restarts here
    time.sleep(0.03)
    registry.reap()
    assert len(registry) == 1


def test_a_device_attaching_again_within_its_resume_window_keeps_its_session():
    """A link outage longer than commit_idle but within idle_timeout: the device attaches again and has the rest of
    the resume window to send its next block; once it verified one, the stream is held to commit_idle."""
    registry = SessionRegistry(max_sessions=4, idle_timeout=0.3, commit_idle=0.05)
    session = registry.open(_request(), "device-1")
    session.touch()
    registry.detach(session)
    time.sleep(0.1)  # longer than commit_idle
    attached = registry.attach(session.id, "device-1")
    assert 0.1 < registry.wait_limit(attached) <= 0.2
    attached.touch()  # its next block
    assert registry.wait_limit(attached) <= 0.05


def test_attaching_does_not_keep_an_idle_session_alive():
    registry = SessionRegistry(max_sessions=4, idle_timeout=0.05)
    session = registry.open(_request(), "device-1")
    registry.detach(session)
    time.sleep(0.03)
    registry.detach(registry.attach(session.id, "device-1"))
    time.sleep(0.03)
    registry.reap()  # 60 ms without progress, though attached 30 ms ago
    assert len(registry) == 0


def test_another_identitys_session_is_answered_as_unknown():
    registry = SessionRegistry(max_sessions=4, idle_timeout=30)
    session = registry.open(_request(), "device-1")
    registry.detach(session)
    with pytest.raises(SessionError) as refused:
        registry.attach(session.id, "device-2")
    assert refused.value.code == "NOT_FOUND"
    registry.close(session)
    with pytest.raises(SessionError) as closed:
        registry.attach(session.id, "device-2")
    assert closed.value.code == "NOT_FOUND"  # not even "closed" to another identity
    with pytest.raises(SessionError) as own:
        registry.attach(session.id, "device-1")
    assert own.value.code == "FAILED_PRECONDITION"


def test_open_rate_is_a_token_bucket():
    rate = RateLimit(rate=1000.0, burst=3)
    assert [rate.take("a") for _ in range(4)] == [True, True, True, False]
    assert rate.take("b")
    time.sleep(0.01)
    assert rate.take("a")


INFO = EngineInfo(engine="test", model="m", vocab_size=100, tokenizer_fingerprint="f", max_context=2048,
                  max_top_n=64)


def test_sizes_are_checked_before_tokens():
    """A Score both too long and full of bad ids is refused for its size (the cheap check), before any pass over
    its tokens; a prompt is bounded by the context (a moved request brings its committed tokens)."""
    with pytest.raises(SessionError, match="at most 512"):
        check_score(pb.ScoreRequest(token_ids=[10_000] * 600, start=1, top_n=2), INFO, 512)
    with pytest.raises(SessionError, match="no room"):
        check_open(pb.Open(prompt_token_ids=[10_000] * 2048, mode=pb.MODE_SPECULATIVE, draft_length=4), INFO, 16)
    with pytest.raises(SessionError, match="outside the vocabulary"):
        check_open(pb.Open(prompt_token_ids=[10_000] * 5, mode=pb.MODE_SPECULATIVE, draft_length=4), INFO, 16)
    assert len(check_open(pb.Open(prompt_token_ids=[5] * 1500, mode=pb.MODE_SPECULATIVE, draft_length=4), INFO,
                          16).prompt) == 1500


def test_quiet_log_reports_once_per_interval(caplog):
    quiet = QuietLog(every_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            quiet.warning("k", "garbage")
    assert len(caplog.records) == 1


def test_echoed_text_is_bounded_and_device_certificates_act_for_their_user():
    assert len(echo("x" * 10_000)) < 80
    assert Caller("device-3", frozenset({"device"})).may_act_for(3)
    assert not Caller("device-3", frozenset({"device"})).may_act_for(4)
    assert Caller(None, frozenset()).may_act_for(4)  # plaintext: no identity to bind
    assert not Caller("device-alice", frozenset({"device"})).may_act_for(0)  # no number: nobody's share


def test_plaintext_leaves_device_calls_open_when_an_admin_token_exists():
    from tandem.rpc import ADMINS, DEVICES, Access, Guard

    guard = Guard(Access({}), secure=False, admin_token="secret-token-0123")

    class Anonymous:
        def invocation_metadata(self):
            return ()

        def auth_context(self):
            return {}
    assert guard._refusal(DEVICES | ADMINS, Anonymous()) is None
    assert guard._refusal(ADMINS, Anonymous()) is not None


def test_share_versions_are_bounded():
    from edge_server.compute_shares import ComputeShares
    from tandem.shares import MAX_VERSION

    with pytest.raises(ValueError, match="version must lie"):
        ComputeShares(0).set(2**64 - 1, {0: 0.5})
    assert ComputeShares(0).set(MAX_VERSION, {0: 0.5})


def test_a_draining_edge_leaves_the_topology_at_once():
    telemetry = Telemetry(ControllerConfig.model_validate({
        "edges": [{"id": 0, "address": "127.0.0.1:9"}, {"id": 1, "address": "127.0.0.1:9"}],
        "users": [{"id": 0}], "failover_after_s": 60.0}))
    assert telemetry.probe_result(0, EdgeLoadSample(1, 0, 0.01, 1, draining=True), now=0.0)
    assert telemetry.healthy_edges() == [1]
    telemetry.probe_result(0, EdgeLoadSample(0, 0, 0.01, 1), now=1.0)  # restarted, serving again
    assert telemetry.healthy_edges() == [0, 1]
