"""The fixed link shaper (virtual clock) and the shaping proxy carrying real decoding sessions."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
import threading
import time
import urllib.request

import numpy as np
import pytest

from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from linkemu.proxy import ProxyThread, ShapingProxy
from linkemu.shaper import Direction, FixedShaper
from linkemu.config import split_address
from linkemu.emulator import LinkEmulator
from tandem.processes import LinkEmuProcess
from tandem.sampling import SamplingConfig
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace
from harness.clients import run_tandem
from harness.teacher_forcing import near_tie_gaps


def test_fixed_shaper_serialises_then_delays():
    shaper = FixedShaper(up_bps=8000, down_bps=None, one_way_delay_s=0.01)  # 1000 bytes/s up
    assert shaper.delivery_time(Direction.UP, 100, now=0.0) == pytest.approx(0.11)
    # Queued behind the first chunk (FIFO): starts at 0.1, not at 0.05.
    assert shaper.delivery_time(Direction.UP, 100, now=0.05) == pytest.approx(0.21)
    # An idle link starts at once; the other direction is independent and unlimited here.
    assert shaper.delivery_time(Direction.UP, 10, now=1.0) == pytest.approx(1.02)
    assert shaper.delivery_time(Direction.DOWN, 10**6, now=0.0) == pytest.approx(0.01)


@pytest.mark.parametrize("kwargs", [dict(up_bps=0), dict(down_bps=-5), dict(one_way_delay_s=-0.1)])
def test_fixed_shaper_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        FixedShaper(**kwargs)


def test_session_through_shaped_link_is_lossless_and_delayed(llamacpp_edge, draft):
    request = GenerationRequest("Name a fruit.", "psd", 24, SamplingConfig(), ignore_eos=True)
    direct = EdgeConnection(llamacpp_edge.address)
    baseline, _ = generate(direct, draft, request)
    direct.close()
    rtt = 0.05
    shaper = FixedShaper(up_bps=2e6, down_bps=2e6, one_way_delay_s=rtt / 2)
    with ProxyThread(ShapingProxy.to(llamacpp_edge.address, shaper)) as link:
        shaped_connection = EdgeConnection(link.address)
        shaped, _ = generate(shaped_connection, draft, request)
        shaped_connection.close()
    assert shaped.token_ids == baseline.token_ids
    assert min(shaped.round_seconds) >= rtt  # every round trip crossed the emulated link


# --- the trace-driven emulator as a daemon, through real sockets -------------------------------------------------

RATE_BPS = 8e6  # synthetic trace: 8 bit/s/Hz x 1 MHz downlink, half that uplink
BASE_DELAY_S = 0.05


class Sink:
    """A TCP server on loopback: receives N bytes and notes when the last one came, or sends N bytes."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.received_at: float | None = None
        self.received = 0

    def receive(self, nbytes: int) -> threading.Thread:
        def run() -> None:
            conn, _ = self.server.accept()
            with conn:
                while self.received < nbytes and (data := conn.recv(1 << 16)):
                    self.received += len(data)
                self.received_at = time.monotonic()
                conn.sendall(b"k")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def send(self, nbytes: int) -> threading.Thread:
        def run() -> None:
            conn, _ = self.server.accept()
            with conn:
                conn.recv(1)
                conn.sendall(b"x" * nbytes)
                time.sleep(5)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def _trace_file(tmp_path, se_down, se_up, slot_ms=100.0):
    path = tmp_path / "synthetic.npz"
    save_trace(synthetic_trace(np.array(se_down), np.array(se_up), slot_ms=slot_ms, bandwidth_hz=1e6), path)
    return path


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _scrape_until(port: int, settled, within_s: float = 5.0) -> dict[tuple[str, tuple], float]:
    """The emulator's metrics once ``settled(metrics)`` holds, or as they are after ``within_s``: a chunk is counted
    after the emulator's write drained, and the reader on the other side may hold it a moment earlier."""
    deadline = time.monotonic() + within_s
    while not settled(metrics := _scrape(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return metrics


def _emulator(trace, upstream, *extra):
    return LinkEmuProcess(["--trace", str(trace), "--upstream", upstream, "--base-delay-ms",
                           str(BASE_DELAY_S * 1000), "--metrics-port", "0", *extra])


@pytest.mark.parametrize("direction", ["up", "down"])
def test_transfer_takes_size_over_rate_plus_delay(direction, tmp_path):
    rate = {"up": RATE_BPS / 2, "down": RATE_BPS}[direction]  # the two directions are shaped independently
    trace = _trace_file(tmp_path, [RATE_BPS / 1e6] * 50, [RATE_BPS / 2e6] * 50)
    nbytes = 500_000
    sink = Sink()
    with _emulator(trace, sink.address) as emulator, socket.create_connection(
            split_address(emulator.address)) as device:
        if direction == "up":
            sink.receive(nbytes)
            started = time.monotonic()
            device.sendall(b"x" * nbytes)
            device.recv(1)
            elapsed = sink.received_at - started
        else:
            sink.send(nbytes)
            started = time.monotonic()
            device.sendall(b"g")
            got = 0
            while got < nbytes:
                got += len(device.recv(1 << 16))
            elapsed = time.monotonic() - started - BASE_DELAY_S  # the request crossed the link up first
        link = (("direction", direction), ("user", "0"))
        metrics = _scrape_until(emulator.metrics_port,
                                lambda scraped: scraped.get(("tandem_linkemu_bytes_total", link), 0) >= nbytes)
    expected = nbytes * 8 / rate + BASE_DELAY_S
    assert 0.8 * expected < elapsed < 1.6 * expected + 0.2, (elapsed, expected)
    assert metrics[("tandem_linkemu_rate_bps", link)] == rate
    assert metrics[("tandem_linkemu_bytes_total", link)] >= nbytes
    assert metrics[("tandem_linkemu_queueing_delay_seconds_count", link)] > 0
    assert ("tandem_linkemu_sinr_db", (("direction", "down"), ("edge", "0"), ("user", "0"))) in metrics


@contextlib.contextmanager
def _connected_in_outage(tmp_path, rates: list[float], outage_limit_s: float, nbytes: int):
    """An emulator on ``rates`` (slots of 100 ms, outage from slot 2), a sink expecting ``nbytes``, and a device
    connection opened 0.25 s in: inside the outage."""
    sink = Sink()
    sink.receive(nbytes)
    trace = _trace_file(tmp_path, rates, rates)
    with _emulator(trace, sink.address, "--no-loop", "--outage-limit", str(outage_limit_s)) as emulator:
        time.sleep(0.25)
        with socket.create_connection(split_address(emulator.address)) as device:
            device.settimeout(10)
            yield emulator, sink, device


def test_outage_holds_bytes_then_breaks_the_connection_past_the_limit(tmp_path):
    rates = [8.0] * 2 + [0.0] * 10 + [8.0] * 38  # a 1 s outage against a 0.3 s limit
    with _connected_in_outage(tmp_path, rates, 0.3, 10_000) as (emulator, sink, device):
        started = time.monotonic()
        device.sendall(b"x" * 10_000)
        with pytest.raises((ConnectionError, OSError)) as broken:
            if device.recv(1) == b"":
                raise ConnectionResetError("closed")
        waited = time.monotonic() - started
        metrics = _scrape_until(emulator.metrics_port,
                                lambda scraped: scraped.get(("tandem_linkemu_link_down_total", (("user", "0"),))) == 1)
    # broken by the emulator (held through the limit, not refused at once), not by the test's read timeout
    assert not isinstance(broken.value, TimeoutError) and waited > 0.2
    assert sink.received == 0  # nothing crossed during the outage
    assert metrics[("tandem_linkemu_link_down_total", (("user", "0"),))] == 1


def test_short_outage_delays_but_keeps_the_connection(tmp_path):
    rates = [80.0] * 2 + [0.0] * 8 + [80.0] * 40  # a 0.8 s outage against a 5 s limit: still on after a slow start
    with _connected_in_outage(tmp_path, rates, 5.0, 1000) as (_, sink, device):
        started = time.monotonic()
        device.sendall(b"x" * 1000)
        assert device.recv(1) == b"k"
    assert sink.received == 1000 and sink.received_at - started >= 0.2  # waited for the outage to end


def test_trace_driven_session_is_lossless_and_follows_the_trace(llamacpp_edge, draft, umi_trace):
    from linkemu.config import LinkEmuConfig
    from tandem.trace_format import load_trace

    trace = load_trace(umi_trace)
    user, edge = trace.most_reliable_pair()
    config = LinkEmuConfig(trace=umi_trace, speedup=10, base_delay_ms=10, edges=[{"index": int(edge), "address": llamacpp_edge.address}],
                           users=[{"user": int(user), "edge": int(edge), "share": 0.2}])
    emulator = LinkEmulator(config, trace)
    request = GenerationRequest("Name a fruit.", "psd", 24, SamplingConfig(), ignore_eos=True)
    direct = EdgeConnection(llamacpp_edge.address)
    baseline, _ = generate(direct, draft, request)
    direct.close()
    with ProxyThread(*emulator.proxies.values()) as link:
        shaped_connection = EdgeConnection(link.address)
        shaped, _ = generate(shaped_connection, draft, request)
        shaped_connection.close()
    assert shaped.token_ids == baseline.token_ids
    assert min(shaped.round_seconds) >= 0.02
    report = emulator.measurements(emulator.clock.origin + 0.35 * trace.slot_s)  # 10x: slot 3 plays at 0.3 slots
    assert report.slot == 3 and len(report.pairs) == trace.metadata.num_edges


@pytest.mark.parametrize("config, reason", [
    ("trace: {trace}\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: 0, share: 0.7}}, "
     "{{user: 1, edge: 0, share: 0.6}}]\n", "the shares on edge 0 would sum to 1.3 > 1"),
    ("trace: {trace}\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: 2, share: 0.5}}]\n",
     "edge 2 is not one listed in `edges`"),
    ("trace: {trace}\nedges: [{{index: 0, address: 'nowhere'}}]\nusers: [{{user: 0, edge: 0, share: 0.5}}]\n",
     "edges.0.address"),
    ("trace: {trace}\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 5, edge: 0, share: 1}}]\n",
     "user 5 is not in the trace"),
    ("trace: {trace}\nbase_delay_ms: -1\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: 0, "
     "share: 1}}]\n", "base_delay_ms"),
    ("trace: {missing}\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: 0, share: 1}}]\n",
     "trace file not found"),
    ("trace: {trace}\ncontrol_listen: 'anywhere'\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, "
     "edge: 0, share: 1}}]\n", "control_listen"),
    ("trace: {trace}\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: 0, share: 1e-300}}]\n",
     "share must be within [0.0001, 1]"),
    ("trace: {trace}\nmax_connections: 0\nedges: [{{index: 0, address: '127.0.0.1:1'}}]\nusers: [{{user: 0, edge: "
     "0, share: 1}}]\n", "max_connections"),
    ("- just a list\n", "must hold a mapping"),
])
def test_bad_emulator_configs_exit_2(config, reason, tmp_path):
    trace = _trace_file(tmp_path, [1.0] * 3, [1.0] * 3)
    path = tmp_path / "linkemu.yaml"
    path.write_text(config.format(trace=trace, missing=tmp_path / "none.npz"))
    done = run_tandem("linkemu", "serve", "--config", str(path))
    assert done.returncode == 2 and reason in done.stderr, done.stderr


@pytest.mark.parametrize("mode, sampling", [
    ("psd", SamplingConfig()), ("psd", SamplingConfig(temperature=0.8, top_k=20, seed=5)), ("edge-only", SamplingConfig()),
], ids=["psd-greedy", "psd-sampled", "edge-only-greedy"])
def test_session_resumes_after_the_link_breaks_and_loses_nothing(llamacpp_edge, draft, tmp_path, mode, sampling):
    """Outages of 0.5 s against a 0.2 s limit: streams break mid-session; the device resumes (psd: attaches to
    its session; edge-only: a new session continues from the tokens received). psd gives token for token the
    answer of a direct connection; edge-only, re-prefilled at each restart, the target's argmax at every position
    up to near-ties.

    The first up window is 0.1 s: a session opened in it has had at most a few tens of ms when the first outage
    breaks it. Later windows are 0.3 s: psd needs at least 13 round trips of 40 ms for 64 tokens, and an edge
    would have to stream 192 tokens in 0.2 s to finish edge-only inside one (a fast machine did 64 in < 1 s)."""
    rates = [100.0] + [0.0] * 5 + ([100.0] * 3 + [0.0] * 5) * 4  # Mbit/s per 100 ms slot
    trace = synthetic_trace(np.array(rates), np.array(rates), slot_ms=100, bandwidth_hz=1e6)
    path = tmp_path / "flaky.npz"
    save_trace(trace, path)
    prompt = "Describe the water cycle."
    max_tokens = 64 if mode == "psd" else 192
    request = GenerationRequest(prompt, mode, max_tokens, sampling, ignore_eos=True)
    direct = EdgeConnection(llamacpp_edge.address)
    baseline, _ = generate(direct, draft, request)
    info = direct.info()  # asked beforehand, so that the session opens inside the first window
    emulator = LinkEmulator.single_link(trace, path, llamacpp_edge.address, 0, 0, 1.0, base_delay_ms=20,
                                        outage_limit_s=0.2)
    with ProxyThread(*emulator.proxies.values()) as link:
        flaky = EdgeConnection(link.address)
        result, summary = generate(flaky, draft, request, info=info)
        flaky.close()
    assert result.resumes >= 1 and summary["resumes"] == result.resumes
    if mode == "psd":
        assert result.token_ids == baseline.token_ids
    else:
        assert len(result.token_ids) == max_tokens
        near_tie_gaps(direct, draft.encode_chat(prompt), result.token_ids, "edge-only after restarts")
    direct.close()


def test_a_session_opens_across_an_outage(llamacpp_edge, draft, tmp_path):
    """The link is down for the first 0.5 s (limit 0.2 s): the edge's info and the session's opening are retried
    until it is back, and the answer is the direct connection's."""
    rates = [0.0] * 5 + [100.0] * 50
    trace = synthetic_trace(np.array(rates), np.array(rates), slot_ms=100, bandwidth_hz=1e6)
    path = tmp_path / "late.npz"
    save_trace(trace, path)
    request = GenerationRequest("Name a colour.", "psd", 16, SamplingConfig(), ignore_eos=True)
    direct = EdgeConnection(llamacpp_edge.address)
    baseline, _ = generate(direct, draft, request)
    direct.close()
    emulator = LinkEmulator.single_link(trace, path, llamacpp_edge.address, 0, 0, 1.0, base_delay_ms=5,
                                        outage_limit_s=0.2)
    with ProxyThread(*emulator.proxies.values()) as link:
        late = EdgeConnection(link.address)
        result, _ = generate(late, draft, request)
        late.close()
    assert result.token_ids == baseline.token_ids


def test_shipped_example_configs_are_valid():
    import yaml

    from linkemu.config import LinkEmuConfig
    from toolbox.traces.radio_scenario import load_radio_scenario

    root = Path(__file__).resolve().parents[2] / "configs"
    scenario = load_radio_scenario(root / "scenario-umi.yaml", None)
    assert len(scenario.edge_positions(3)) == 3 and scenario.edge_bandwidths_hz(3)[2] == 40e6
    config = LinkEmuConfig.model_validate(yaml.safe_load((root / "linkemu.yaml").read_text()))
    assert [user.edge for user in config.users] == [0, 0, 1]
