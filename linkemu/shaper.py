"""Link shapers: when does a chunk of bytes sent now arrive at the other end of an emulated link?

A shaper models each direction as a FIFO bottleneck (serialisation at the current rate) followed by a fixed
propagation delay, like Mahimahi's link shells.  The proxy asks it per chunk; nothing here touches sockets or
reads the clock, so the arithmetic is testable on a virtual clock.

When the link's rate changes by decision (a new share, another edge) the timetable made at the old rate is void:
``reschedule`` forgets where the bottleneck would have been busy until and sends what still waits in it again from
the moment of the change, as a handover forwards buffered data.  A chunk queued under a share of 1e-300 had an
arrival time of ~1e298 s, and every later chunk queued behind it, even after the share was restored.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum


class Direction(str, Enum):
    UP = "up"  # device -> edge
    DOWN = "down"  # edge -> device


class LinkDown(Exception):
    """The link stayed in outage longer than the limit while bytes waited: the connection breaks at ``at``."""

    def __init__(self, at: float, outage_s: float) -> None:
        super().__init__(f"link in outage for more than {outage_s:g} s")
        self.at = at


@dataclass(eq=False)
class Transfer:
    """Bytes handed to the link and not yet delivered: when they arrive, or the LinkDown that breaks their
    connection instead (``arrival`` is then the moment it breaks)."""

    nbytes: int
    arrival: float
    down: LinkDown | None = None


class LinkShaper(ABC):
    """FIFO serialisation per direction, then ``one_way_delay_s`` of propagation."""

    def __init__(self, one_way_delay_s: float) -> None:
        if not one_way_delay_s >= 0:
            raise ValueError(f"one-way delay must be >= 0 s, got {one_way_delay_s}")
        self.one_way_delay_s = one_way_delay_s
        self._busy_until = {Direction.UP: -math.inf, Direction.DOWN: -math.inf}

    def delivery_time(self, direction: Direction, nbytes: int, now: float) -> float:
        """Absolute time at which ``nbytes`` handed to the link at ``now`` have all arrived (LinkDown if never)."""
        start = max(now, self._busy_until[direction])
        done = self.transmission_end(direction, start, nbytes)
        self._busy_until[direction] = done
        return done + self.one_way_delay_s

    def send(self, direction: Direction, nbytes: int, now: float) -> Transfer:
        """``nbytes`` handed to the link at ``now``, behind everything sent before them."""
        try:
            return Transfer(nbytes, self.delivery_time(direction, nbytes, now))
        except LinkDown as down:
            return Transfer(nbytes, down.at, down)

    def reschedule(self, direction: Direction, undelivered: Iterable[Transfer], now: float) -> None:
        """The rate changed at ``now`` (a new share or edge): re-time ``undelivered`` (oldest first, in place).

        What is still in the bottleneck goes again from ``now``, in order, at the current rates -- whole: a chunk
        half serialised at the old rate is charged again, at most one chunk's time.  So does a transfer whose link
        was to break later than ``now``: at a higher share it may get through before the outage (or be found down
        again).  Transfers already through the bottleneck (only propagating) keep their arrival.
        """
        self._busy_until[direction] = -math.inf
        for transfer in undelivered:
            # a down transfer's arrival is the moment its link breaks: until then it waits in the bottleneck
            leaves_bottleneck = transfer.arrival if transfer.down else transfer.arrival - self.one_way_delay_s
            if leaves_bottleneck > now:
                try:
                    transfer.arrival, transfer.down = self.delivery_time(direction, transfer.nbytes, now), None
                except LinkDown as down:
                    transfer.arrival, transfer.down = down.at, down

    @abstractmethod
    def transmission_end(self, direction: Direction, start: float, nbytes: int) -> float:
        """When the last of ``nbytes`` leaves the bottleneck if their first bit starts at ``start``."""


class FixedShaper(LinkShaper):
    """Constant rate (bits/s, None = unlimited) in each direction."""

    def __init__(self, up_bps: float | None = None, down_bps: float | None = None, one_way_delay_s: float = 0.0):
        super().__init__(one_way_delay_s)
        for name, rate in (("up_bps", up_bps), ("down_bps", down_bps)):
            if rate is not None and not rate > 0:
                raise ValueError(f"{name} must be positive (or None for unlimited), got {rate}")
        self._rates = {Direction.UP: up_bps, Direction.DOWN: down_bps}

    def transmission_end(self, direction: Direction, start: float, nbytes: int) -> float:
        rate = self._rates[direction]
        return start + (nbytes * 8 / rate if rate else 0.0)


@dataclass
class SlotClock:
    """Maps emulator time to trace slots: slot k covers [origin + k*w, origin + (k+1)*w) with w = slot_s/speedup.

    Past the end, the trace repeats (``loop``) or holds its last slot.
    """

    origin: float
    slot_s: float
    num_slots: int
    speedup: float = 1.0
    loop: bool = True

    def __post_init__(self) -> None:
        if not (self.slot_s > 0 and self.speedup > 0 and self.num_slots >= 1):
            raise ValueError("slot length, speed-up and slot count must be positive")

    @property
    def wall_slot_s(self) -> float:
        return self.slot_s / self.speedup

    def play_from(self, slot: int, now: float) -> None:
        """Make ``slot`` start playing at ``now``."""
        self.origin = now - slot * self.wall_slot_s

    def tick(self, now: float) -> int:
        """The absolute (unwrapped) slot number at ``now``; slots before the origin count as slot 0."""
        return max(0, math.floor((now - self.origin) / self.wall_slot_s))

    def slot(self, tick: int) -> int:
        """The trace slot that plays at an absolute slot number."""
        return tick % self.num_slots if self.loop else min(tick, self.num_slots - 1)

    def tick_end(self, tick: int) -> float:
        return self.origin + (tick + 1) * self.wall_slot_s


class TraceShaper(LinkShaper):
    """Rates that change every slot: ``rate_of(direction, slot)`` bits/s, read live (shares may change).

    Bytes are serialised at the rate of the slot they are in, carrying over slot boundaries. A slot of rate 0 is
    an outage: bytes wait, and if one outage keeps them waiting longer than ``outage_limit_s`` the link goes
    down (LinkDown at the moment the limit is reached), as a radio link failure would.

    The work per chunk is bounded: after ``MAX_SLOTS_PER_CHUNK`` slots the rest of the chunk is carried at the
    mean rate of the slots walked so far.  A tiny share is then a very slow link (its chunk arrives in hours),
    never an event loop stuck walking millions of slots while every other link and the control service wait.
    """

    MAX_SLOTS_PER_CHUNK = 4096

    def __init__(self, clock: SlotClock, rate_of: Callable[[Direction, int], float], one_way_delay_s: float,
                 outage_limit_s: float) -> None:
        super().__init__(one_way_delay_s)
        if not outage_limit_s > 0:
            raise ValueError(f"outage limit must be > 0 s, got {outage_limit_s}")
        self.clock = clock
        self.rate_of = rate_of
        self.outage_limit_s = outage_limit_s

    def rate_bps(self, direction: Direction, now: float) -> float:
        """The rate of the slot playing at ``now``."""
        return self.rate_of(direction, self.clock.slot(self.clock.tick(now)))

    def transmission_end(self, direction: Direction, start: float, nbytes: int) -> float:
        bits = nbytes * 8.0
        now = start
        tick = self.clock.tick(now)
        outage_since: float | None = None
        carried = 0.0
        for _ in range(self.MAX_SLOTS_PER_CHUNK):
            slot_end = self.clock.tick_end(tick)
            rate = self.rate_of(direction, self.clock.slot(tick))
            if rate <= 0:
                outage_since = now if outage_since is None else outage_since
                if slot_end - outage_since > self.outage_limit_s:
                    raise LinkDown(outage_since + self.outage_limit_s, self.outage_limit_s)
            else:
                outage_since = None
                if bits <= rate * (slot_end - now):
                    return now + bits / rate
                bits -= rate * (slot_end - now)
                carried += rate * (slot_end - now)
            now, tick = slot_end, tick + 1
        if carried == 0:  # every slot walked was outage (or too short to count): as good as down
            raise LinkDown((start if outage_since is None else outage_since) + self.outage_limit_s,
                           self.outage_limit_s)
        return now + bits / (carried / (now - start))
