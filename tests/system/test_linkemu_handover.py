"""Handover in the link emulator (issue 19, item 5): a reassignment away from a fading link moves the bytes already
queued to the new pair's schedule, as a real handover forwards buffered data — nothing is lost and nothing waits
for the fade to end.  And a seek of the trace (what a testbed does to play every policy on the same radio
conditions) re-times queued bytes at the new slot's rates.  A real `tandem linkemu serve` daemon on loopback with a
synthetic trace whose (user 0, edge 0) link fades out for 14 s while (user 0, edge 1) stays good."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from linkemu.config import split_address
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from tandem.wire.v1 import linkemu_pb2 as pb
from tandem.wire.v1 import linkemu_pb2_grpc
from tandem.processes import LinkEmuProcess
from harness.clients import with_admin_token
from tests.system.test_linkemu import Sink
from tests.system.test_linkemu_recovery import assign, metric

SLOTS = 200
FADE = (10, 150)  # trace slots (100 ms each) in which user 0 has no link to edge 0
QUEUED = 300_000  # bytes a device sends into the fade


def _fading_link(tmp_path, sink: Sink) -> Path:
    """A link emulator config: user 0 on edge 0, whose link fades out in FADE."""
    se = np.full((SLOTS, 1, 2), 8.0)
    se[FADE[0]:FADE[1], 0, 0] = 0.0  # the fade: an outage on (user 0, edge 0)
    trace = tmp_path / "fade.npz"
    save_trace(synthetic_trace(se, se, slot_ms=100, bandwidth_hz=1e6), trace)
    config = tmp_path / "linkemu.yaml"
    config.write_text(
        f"trace: {trace}\nbase_delay_ms: 5\nmetrics_port: 0\ncontrol_listen: '127.0.0.1:0'\noutage_limit_s: 60\n"
        f"edges: [{{index: 0, address: '{sink.address}'}}, {{index: 1, address: '{sink.address}'}}]\n"
        "users: [{user: 0, edge: 0, share: 0.5}]\n")
    return config


@contextmanager
def _bytes_queued_into_the_fade(tmp_path, nbytes: int = QUEUED):
    """A link emulator playing FADE, and a device connection whose ``nbytes`` wait behind the fade: yields the
    emulator, its LinkControl stub, the device socket and the edges' sink."""
    sink = Sink()
    config = _fading_link(tmp_path, sink)
    with LinkEmuProcess(["--config", str(config)], log_path=tmp_path / "linkemu.log") as emulator, \
            grpc.insecure_channel(emulator.control_address) as channel:
        while (metric(emulator, "tandem_linkemu_trace_slot") or 0) < FADE[0] + 2:  # into the fade
            time.sleep(0.05)
        sink.receive(nbytes)
        device = socket.create_connection(split_address(emulator.addresses[0]))
        device.settimeout(30)
        threading.Thread(target=device.sendall, args=(b"x" * nbytes,), daemon=True).start()
        time.sleep(1.0)
        assert sink.received == 0  # queued behind the fade
        yield emulator, linkemu_pb2_grpc.LinkControlStub(with_admin_token(channel)), device, sink


def test_a_handover_away_from_a_fading_link_loses_nothing_and_waits_for_no_fade(tmp_path):
    with _bytes_queued_into_the_fade(tmp_path) as (emulator, control, device, sink):
        assign(control, 0, 1, 0.5)  # hand over to edge 1, whose link is good
        with device:
            assert device.recv(1) == b"k"  # every byte arrived, over the connection opened before the handover
        slot_when_done = metric(emulator, "tandem_linkemu_trace_slot")
        assert sink.received == QUEUED
        assert slot_when_done < FADE[1], slot_when_done  # delivered while edge 0's link was still faded out
        assert not metric(emulator, "tandem_linkemu_link_down_total", user="0")


def test_a_seek_plays_the_trace_from_the_slot_asked_and_retimes_queued_bytes(tmp_path):
    with _bytes_queued_into_the_fade(tmp_path) as (emulator, control, device, sink):
        report = control.Seek(pb.SeekRequest(slot=FADE[1] + 5), timeout=5)  # past the fade
        assert report.slot == FADE[1] + 5
        assert {(p.user, p.edge): p.se_up for p in report.pairs}[(0, 0)] == 8.0
        with device:
            assert device.recv(1) == b"k"  # delivered at the good slot's rate, without waiting the fade out
        assert sink.received == QUEUED
        assert FADE[1] + 5 <= metric(emulator, "tandem_linkemu_trace_slot") < FADE[1] + 40
        with pytest.raises(grpc.RpcError) as refused:
            control.Seek(pb.SeekRequest(slot=SLOTS), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"past the trace's end ({SLOTS} slots)" in refused.value.details()
        assert metric(emulator, "tandem_linkemu_trace_slot") >= FADE[1] + 5  # the refused seek changed nothing
