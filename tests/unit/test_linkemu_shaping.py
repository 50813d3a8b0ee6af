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


# --- rescheduling on a share change (docs/security.md: a tiny share must not break the link until restart) -------

class Shared:
    """A link whose rate is ``share`` x 8000 bit/s (1000 B/s at share 1) in both directions, share read live."""

    def __init__(self, share: float, delay: float = 0.0, outage_from: int | None = None, limit: float = 2.5):
        self.share = share
        rates = [0.0 if outage_from is not None and slot >= outage_from else 8000.0 for slot in range(100)]
        self.shaper = TraceShaper(SlotClock(origin=0.0, slot_s=SLOT, num_slots=100, loop=False),
                                  lambda direction, slot: self.share * rates[slot], delay, limit)


def test_restoring_a_tiny_share_reschedules_what_waits_from_now():
    """The finding: a chunk sent under a share of 1e-300 arrives at ~1e299 s, and the next one, queued behind it
    where a slot is shorter than a float's step, is declared down -- for good, even after the share came back.
    Rescheduled at the restore, the chunks still waiting go in order from that moment at the restored rate."""
    link = Shared(share=1e-300, delay=0.01)
    waiting = [link.shaper.send(Direction.UP, 500, 0.0), link.shaper.send(Direction.UP, 500, 0.5)]
    assert waiting[0].down is None and waiting[0].arrival > 1e290
    assert waiting[1].down is not None and waiting[1].arrival > 1e290
    link.share = 0.5  # 500 B/s
    link.shaper.reschedule(Direction.UP, waiting, 2.0)
    assert [t.down for t in waiting] == [None, None]
    assert [t.arrival for t in waiting] == pytest.approx([3.01, 4.01])
    later = link.shaper.send(Direction.UP, 500, 2.5)  # queued behind the rescheduled ones, not behind 1e299
    assert later.down is None and later.arrival == pytest.approx(5.01)
    # the other direction kept its own queue
    assert link.shaper.send(Direction.DOWN, 500, 2.5).arrival == pytest.approx(3.51)


def test_a_lowered_share_slows_what_waits_and_what_comes_after():
    link = Shared(share=1.0)
    first, second = link.shaper.send(Direction.DOWN, 1000, 0.0), link.shaper.send(Direction.DOWN, 1000, 0.0)
    assert (first.arrival, second.arrival) == pytest.approx((1.0, 2.0))
    link.share = 0.25  # 250 B/s from t = 0.5: both chunks go again from there, whole
    link.shaper.reschedule(Direction.DOWN, [first, second], 0.5)
    assert (first.arrival, second.arrival) == pytest.approx((4.5, 8.5))
    assert link.shaper.send(Direction.DOWN, 250, 1.0).arrival == pytest.approx(9.5)


def test_rescheduling_keeps_bytes_already_through_the_bottleneck_and_real_outages():
    link = Shared(share=1.0, delay=1.0, outage_from=3, limit=0.5)
    propagating = link.shaper.send(Direction.UP, 500, 0.0)  # through the bottleneck at 0.5, arrives at 1.5
    queued = link.shaper.send(Direction.UP, 1000, 0.0)  # through at 1.5
    broken = link.shaper.send(Direction.UP, 2000, 1.0)  # would need slot 3 on: an outage over the limit
    assert broken.down is not None and broken.arrival == pytest.approx(3.5)
    link.share = 0.5
    link.shaper.reschedule(Direction.UP, [propagating, queued, broken], 1.0)
    assert propagating.arrival == pytest.approx(1.5)  # only propagating: untouched
    assert queued.arrival == pytest.approx(4.0)  # 1000 B at 500 B/s from t = 1 (through at 3), plus the delay
    assert broken.down is not None and broken.arrival == pytest.approx(3.5)  # still waiting into the outage


def test_a_share_moves_bytes_out_of_or_into_an_outage():
    link = Shared(share=0.5, outage_from=2, limit=0.5)
    late = link.shaper.send(Direction.UP, 1500, 0.0)  # 3 s at 500 B/s: still waiting when the outage starts
    assert late.down is not None and late.arrival == pytest.approx(2.5)
    link.share = 1.0  # at 1000 B/s from t = 0.2 they are through at 1.7, before it
    link.shaper.reschedule(Direction.UP, [late], 0.2)
    assert late.down is None and late.arrival == pytest.approx(1.7)
    link.share = 0.5  # and back: from t = 0.4, 1500 B need until 3.4, into the outage again
    link.shaper.reschedule(Direction.UP, [late], 0.4)
    assert late.down is not None and late.arrival == pytest.approx(2.5)
