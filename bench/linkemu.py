"""Link emulator overhead and shaping accuracy, through real sockets on loopback.

1. Unshaped: bulk throughput and small-message round-trip latency, direct vs through the proxy (a trace whose
   rate is far above what loopback carries), so the proxy's own cost shows.
2. Shaped: bulk transfers at several trace rates; achieved/target rate ratio (medians over repeats).

Writes results/linkemu_bench.json.  Usage: .venv/bin/python bench/linkemu.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bootstrap import RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from linkemu.emulator import LinkEmulator
from linkemu.proxy import ProxyThread
from tandem.trace_format import save_trace
from toolbox.traces.synthetic import synthetic_trace

plaintext_on_loopback()


class EchoServer:
    """Echoes every byte back (latency) and counts bytes until the client half-closes (throughput)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == b"e":
                while data := conn.recv(4096):
                    conn.sendall(data)
            else:
                total = 0
                while data := conn.recv(1 << 16):
                    total += len(data)
                conn.sendall(total.to_bytes(8, "big"))


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bulk_mbps(address: str, nbytes: int) -> float:
    payload = b"x" * (1 << 16)
    with connect(address) as sock:
        started = time.monotonic()
        sock.sendall(b"b")
        sent = 0
        while sent < nbytes:
            sock.sendall(payload)
            sent += len(payload)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(8)
        return sent * 8 / (time.monotonic() - started) / 1e6


def rtt_ms(address: str, count: int = 200) -> float:
    with connect(address) as sock:
        sock.sendall(b"e")
        samples = []
        for _ in range(count):
            started = time.monotonic()
            sock.sendall(b"p" * 64)
            got = 0
            while got < 64:
                got += len(sock.recv(64))
            samples.append((time.monotonic() - started) * 1000)
        return statistics.median(samples)


def through_trace(server: EchoServer, rate_bps: float, tmp: Path):
    """A proxy whose trace holds ``rate_bps`` in both directions (1 MHz bandwidth, SE = rate / 1e6)."""
    path = tmp / f"rate-{rate_bps:g}.npz"
    se = np.full(100, rate_bps / 1e6)
    trace = synthetic_trace(se, se, slot_ms=100, bandwidth_hz=1e6)
    save_trace(trace, path)
    emulator = LinkEmulator.single_link(trace, path, server.address, 0, 0, 1.0, base_delay_ms=0.0)
    return ProxyThread(*emulator.proxies.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rates-mbps", type=float, nargs="+", default=[1, 5, 20, 50])
    parser.add_argument("--out", type=Path, default=RESULTS / "linkemu_bench.json")
    args = parser.parse_args()
    tmp = RESULTS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    server = EchoServer()
    report: dict = {"repeats": args.repeats, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    with through_trace(server, 1e12, tmp) as proxy:  # effectively unshaped
        direct_bulk = [bulk_mbps(server.address, 50 << 20) for _ in range(args.repeats)]
        proxy_bulk = [bulk_mbps(proxy.address, 50 << 20) for _ in range(args.repeats)]
        direct_rtt = [rtt_ms(server.address) for _ in range(args.repeats)]
        proxy_rtt = [rtt_ms(proxy.address) for _ in range(args.repeats)]
    report["unshaped"] = {
        "direct_mbps": statistics.median(direct_bulk), "proxy_mbps": statistics.median(proxy_bulk),
        "direct_rtt_ms": statistics.median(direct_rtt), "proxy_rtt_ms": statistics.median(proxy_rtt),
    }
    u = report["unshaped"]
    print(f"unshaped bulk: direct {u['direct_mbps']:.0f} Mbit/s, through the proxy {u['proxy_mbps']:.0f} Mbit/s "
          f"({u['proxy_mbps'] / u['direct_mbps']:.2f}x)")
    print(f"64-byte round trip: direct {u['direct_rtt_ms']:.3f} ms, proxy {u['proxy_rtt_ms']:.3f} ms "
          f"(+{u['proxy_rtt_ms'] - u['direct_rtt_ms']:.3f} ms)")

    report["shaped"] = []
    print(f"{'target Mbit/s':>14} {'achieved':>9} {'ratio':>6}")
    for rate in args.rates_mbps:
        nbytes = int(rate * 1e6 / 8 * 2)  # about 2 s of transfer at the target rate
        with through_trace(server, rate * 1e6, tmp) as proxy:
            achieved = [bulk_mbps(proxy.address, nbytes) for _ in range(args.repeats)]
        row = {"target_mbps": rate, "achieved_mbps": statistics.median(achieved),
               "ratio": statistics.median(achieved) / rate, "bytes": nbytes}
        report["shaped"].append(row)
        print(f"{rate:14g} {row['achieved_mbps']:9.2f} {row['ratio']:6.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
