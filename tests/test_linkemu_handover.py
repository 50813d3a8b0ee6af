"""Handover in the link emulator (issue 19, item 5): a reassignment away from a fading link moves the bytes already
queued to the new pair's schedule, as a real handover forwards buffered data — nothing is lost and nothing waits
for the fade to end.  A real `tandem linkemu serve` daemon on loopback with a synthetic trace whose (user 0,
edge 0) link fades out for 14 s while (user 0, edge 1) stays good."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np

from linkemu.config import split_address
from tandem.traces.format import save_trace
from tandem.traces.synthetic import synthetic_trace
from tandem.wire.v1 import linkemu_pb2_grpc
from testbed.processes import LinkEmuProcess
from tests.conftest import with_admin_token
from tests.test_linkemu import Sink
from tests.test_linkemu_recovery import assign, metric

SLOTS = 200
FADE = (10, 150)  # trace slots (100 ms each) in which user 0 has no link to edge 0


def test_a_handover_away_from_a_fading_link_loses_nothing_and_waits_for_no_fade(tmp_path):
    se = np.full((SLOTS, 1, 2), 8.0)
    se[FADE[0]:FADE[1], 0, 0] = 0.0  # the fade: an outage on (user 0, edge 0)
    trace = tmp_path / "fade.npz"
    save_trace(synthetic_trace(se, se, slot_ms=100, bandwidth_hz=1e6), trace)
    sink = Sink()
    config = tmp_path / "linkemu.yaml"
    config.write_text(
        f"trace: {trace}\nbase_delay_ms: 5\nmetrics_port: 0\ncontrol_listen: '127.0.0.1:0'\noutage_limit_s: 60\n"
        f"edges: [{{index: 0, address: '{sink.address}'}}, {{index: 1, address: '{sink.address}'}}]\n"
        "users: [{user: 0, edge: 0, share: 0.5}]\n")
    nbytes = 300_000
    with LinkEmuProcess(["--config", str(config)], log_path=tmp_path / "linkemu.log") as emulator, \
            grpc.insecure_channel(emulator.control_address) as channel:
        control = linkemu_pb2_grpc.LinkControlStub(with_admin_token(channel))
        while (metric(emulator, "tandem_linkemu_trace_slot") or 0) < FADE[0] + 2:  # into the fade
            time.sleep(0.05)
        sink.receive(nbytes)
        device = socket.create_connection(split_address(emulator.addresses[0]))
        device.settimeout(30)
        threading.Thread(target=device.sendall, args=(b"x" * nbytes,), daemon=True).start()
        time.sleep(1.0)
        assert sink.received == 0  # queued behind the fade
        assign(control, 0, 1, 0.5)  # hand over to edge 1, whose link is good
        with device:
            assert device.recv(1) == b"k"  # every byte arrived, over the connection opened before the handover
        slot_when_done = metric(emulator, "tandem_linkemu_trace_slot")
        assert sink.received == nbytes
        assert slot_when_done < FADE[1], slot_when_done  # delivered while edge 0's link was still faded out
        assert not metric(emulator, "tandem_linkemu_link_down_total", user="0")
