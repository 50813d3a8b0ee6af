"""CPU time and resident memory of the testbed's processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system CPU time so far
    rss_bytes: int


def usage(pid: int) -> Usage | None:
    """None when the process is gone."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return Usage(cpu, rss)


class ResourceSampler(threading.Thread):
    """Every daemon's CPU share and RSS while a phase runs."""

    def __init__(self, bed, every_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.bed, self.every_s = bed, every_s
        self.samples: dict[str, list[tuple[float, float, int]]] = {}  # name -> (time, cpu s, rss)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            now = time.monotonic()
            for daemon in list(self.bed.daemons):
                if daemon.pid and (used := usage(daemon.pid)):
                    self.samples.setdefault(daemon.label, []).append((now, used.cpu_s, used.rss_bytes))

    def report(self) -> dict:
        """Per daemon: CPU share (cores), largest RSS, and the RSS trend (MB per minute, least squares)."""
        out = {}
        for name, rows in self.samples.items():
            if len(rows) >= 2:
                (t0, c0, _), (t1, c1, _) = rows[0], rows[-1]
                times = np.array([r[0] for r in rows]) - t0
                rss_mb = np.array([r[2] for r in rows]) / 2**20
                out[name] = {"cpu_share": (c1 - c0) / (t1 - t0), "rss_mb_max": float(rss_mb.max()),
                             "rss_mb_first": float(rss_mb[0]), "rss_mb_last": float(rss_mb[-1]),
                             "rss_slope_mb_per_min": float(np.polyfit(times / 60, rss_mb, 1)[0])}
        return out
