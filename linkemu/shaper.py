"""Link shapers: when does a chunk of bytes sent now arrive at the other end of an emulated link?

A shaper models each direction as a FIFO bottleneck (serialisation at the current rate) followed by a fixed
propagation delay, like Mahimahi's link shells.  The proxy asks it per chunk; nothing here touches sockets, so
the arithmetic is testable on a virtual clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum


class Direction(str, Enum):
    UP = "up"  # device -> edge
    DOWN = "down"  # edge -> device


class LinkShaper(ABC):
    @abstractmethod
    def delivery_time(self, direction: Direction, nbytes: int, now: float) -> float:
        """Absolute time at which ``nbytes`` handed to the link at ``now`` have all arrived."""


@dataclass
class FixedShaper(LinkShaper):
    """Constant rate (bits/s, None = unlimited) and one-way delay (s) in each direction."""

    up_bps: float | None = None
    down_bps: float | None = None
    one_way_delay_s: float = 0.0
    _busy_until: dict[Direction, float] = field(default_factory=lambda: {Direction.UP: 0.0, Direction.DOWN: 0.0})

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps"):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ValueError(f"{name} must be positive (or None for unlimited), got {rate}")
        if not self.one_way_delay_s >= 0:
            raise ValueError(f"one_way_delay_s must be >= 0, got {self.one_way_delay_s}")

    def delivery_time(self, direction: Direction, nbytes: int, now: float) -> float:
        rate = self.up_bps if direction is Direction.UP else self.down_bps
        start = max(now, self._busy_until[direction])
        done = start + (nbytes * 8 / rate if rate else 0.0)
        self._busy_until[direction] = done
        return done + self.one_way_delay_s
