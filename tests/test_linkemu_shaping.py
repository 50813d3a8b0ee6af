"""Trace-driven shaping on a virtual clock: exact byte/time accounting over rate changes, outages, both ways."""

from __future__ import annotations

import pytest

from linkemu.shaper import Direction, LinkDown, SlotClock, TraceShaper

SLOT = 1.0  # s


def shaper(rates: dict[Direction, list[float]], delay: float = 0.0, limit: float = 2.5, speedup: float = 1.0,
           loop: bool = True) -> TraceShaper:
    clock = SlotClock(origin=0.0, slot_s=SLOT, num_slots=len(rates[Direction.UP]), speedup=speedup, loop=loop)
    return TraceShaper(clock, lambda d, slot: rates[d][slot], delay, limit)


def test_bytes_carry_over_a_rate_change():
    s = shaper({Direction.UP: [8000, 16000, 8000], Direction.DOWN: [8000] * 3})  # 1000 B/s then 2000 B/s
    # 1500 B from t=0.5: 500 B in the rest of slot 0, the other 1000 B at 2000 B/s -> 1.5 s
    assert s.delivery_time(Direction.UP, 1500, 0.5) == pytest.approx(1.5)
    # FIFO: the next chunk starts at 1.5, not 1.0; 1500 B = 1000 B to the end of slot 1 + 500 B at 1000 B/s
    assert s.delivery_time(Direction.UP, 1500, 1.0) == pytest.approx(2.5)


def test_directions_are_independent_and_delay_adds():
    s = shaper({Direction.UP: [8000] * 2, Direction.DOWN: [80000] * 2}, delay=0.02)
    assert s.delivery_time(Direction.UP, 500, 0.0) == pytest.approx(0.52)
    assert s.delivery_time(Direction.DOWN, 500, 0.0) == pytest.approx(0.07)
    assert s.rate_bps(Direction.DOWN, 0.3) == 80000


def test_bytes_wait_through_an_outage_shorter_than_the_limit():
    s = shaper({Direction.UP: [8000, 0, 0, 8000], Direction.DOWN: [8000] * 4}, limit=2.5)
    # 1500 B from t=0.5: 500 B in slot 0, wait 2 s of outage, 1000 B in slot 3
    assert s.delivery_time(Direction.UP, 1500, 0.5) == pytest.approx(4.0)


def test_outage_longer_than_the_limit_breaks_the_link_when_the_limit_is_reached():
    s = shaper({Direction.UP: [8000, 0, 0, 0, 8000], Direction.DOWN: [8000] * 5}, limit=2.5)
    with pytest.raises(LinkDown) as down:
        s.delivery_time(Direction.UP, 1500, 0.5)
    assert down.value.at == pytest.approx(1.0 + 2.5)
    # bytes arriving in the middle of the outage count from their arrival
    s2 = shaper({Direction.UP: [8000, 0, 0, 0, 8000], Direction.DOWN: [8000] * 5}, limit=2.5)
    assert s2.delivery_time(Direction.UP, 1000, 2.0) == pytest.approx(5.0)


def test_speedup_and_loop_and_hold():
    s = shaper({Direction.UP: [8000, 16000], Direction.DOWN: [8000, 16000]}, speedup=2.0)  # slots of 0.5 s
    assert s.rate_bps(Direction.UP, 0.6) == 16000
    assert s.rate_bps(Direction.UP, 1.1) == 8000  # slot 2 -> trace slot 0 again
    held = shaper({Direction.UP: [8000, 16000], Direction.DOWN: [8000, 16000]}, loop=False)
    assert held.rate_bps(Direction.UP, 10.0) == 16000


def test_clock_and_limits_are_validated():
    with pytest.raises(ValueError):
        SlotClock(origin=0.0, slot_s=0.0, num_slots=3)
    with pytest.raises(ValueError):
        shaper({Direction.UP: [1.0], Direction.DOWN: [1.0]}, limit=0)
