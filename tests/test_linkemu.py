"""The fixed link shaper (virtual clock) and the shaping proxy carrying real decoding sessions."""

from __future__ import annotations

import pytest

from device_client.generate import GenerationRequest, generate
from device_client.link import EdgeConnection
from linkemu.proxy import ProxyThread, ShapingProxy
from linkemu.shaper import Direction, FixedShaper
from tandem.sampling import SamplingConfig


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
    host, port = llamacpp_edge.address.rsplit(":", 1)
    rtt = 0.05
    shaper = FixedShaper(up_bps=2e6, down_bps=2e6, one_way_delay_s=rtt / 2)
    with ProxyThread(ShapingProxy.to(f"{host}:{port}", shaper)) as link:
        shaped_connection = EdgeConnection(link.address)
        shaped, _ = generate(shaped_connection, draft, request)
        shaped_connection.close()
    assert shaped.token_ids == baseline.token_ids
    assert min(shaped.round_seconds) >= rtt  # every round trip crossed the emulated link
