"""Start daemons as child processes and wait until they are ready (used by the demo, benches and tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

EDGE_READY = re.compile(
    r"edge ready on (?P<host>[^\s]+):(?P<port>\d+)(?:.*metrics on http://[^:]+:(?P<metrics>\d+))?")
LINKEMU_READY = re.compile(r"linkemu ready: user (?P<user>\d+) on (?P<address>[^\s]+) ->")
METRICS_NOTE = re.compile(r"metrics on http://[^\s]+:(?P<metrics>\d+)/metrics")
LINKEMU_CONTROL = re.compile(r"linkemu control on (?P<address>[^\s]+)")
CONTROLLER_READY = re.compile(r"controller ready on (?P<address>[^\s]+) ")


def vllm_cores(limit: int = 2) -> str:
    """Cores for VLLM_CPU_OMP_THREADS_BIND: at most ``limit`` of those this process may use.  vLLM pins its threads;
    unpinned they oversubscribe a small machine, and pinned to a core outside the process's affinity (a 1-core
    container) vLLM does not start."""
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0))[:limit])


class DaemonFailed(Exception):
    pass


class DaemonProcess:
    """`python -m MODULE ARGS`, followed until it printed its ready line(s) (``_on_line`` returns True)."""

    module = ""

    def __init__(self, args: list[str], log_path: Path | None = None, env: dict[str, str] | None = None,
                 start_timeout: float = 600.0) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.metrics_port: int | None = None
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def _on_line(self, line: str) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=self.env)
        ready = threading.Event()
        threading.Thread(target=self._follow, args=(ready,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "".join(self.output[-30:])
                self.stop()
                raise DaemonFailed(f"{self.module} did not start ({' '.join(self.args)}):\n{tail}")

    def _follow(self, ready: threading.Event) -> None:
        log = open(self.log_path, "w") if self.log_path else None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]
            if log:
                log.write(line)
                log.flush()
            if not ready.is_set() and self._on_line(line):
                ready.set()
        if log:
            log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


    def kill(self) -> None:
        """SIGKILL: no chance to clean up (what a crash looks like)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class EdgeProcess(DaemonProcess):
    """`python -m edge_server ARGS --port 0`; ``address`` is set once it printed its ready line."""

    module = "edge_server"
    address: str | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", "0", *self.args]

    @property
    def verification_log(self) -> Path | None:
        """The file given with --verification-log, if any."""
        return Path(self.args[self.args.index("--verification-log") + 1]) if "--verification-log" in self.args else None

    def _on_line(self, line: str) -> bool:
        if match := EDGE_READY.search(line):
            self.address = f"{match['host']}:{match['port']}"
            self.metrics_port = int(match["metrics"]) if match["metrics"] else None
        return self.address is not None


class LinkEmuProcess(DaemonProcess):
    """`python -m linkemu ARGS`; ``addresses`` maps each of ``num_users`` users to where its device connects."""

    module = "linkemu"

    def __init__(self, args: list[str], num_users: int = 1, **kwargs) -> None:
        super().__init__(args, **kwargs)
        self.num_users = num_users
        self.addresses: dict[int, str] = {}
        self.control_address: str | None = None  # with --control-listen

    @property
    def address(self) -> str:
        """Where the device connects when the emulator carries one user."""
        (address,) = self.addresses.values()
        return address

    def _on_line(self, line: str) -> bool:
        if control := LINKEMU_CONTROL.search(line):
            self.control_address = control["address"]
        if match := LINKEMU_READY.search(line):
            self.addresses[int(match["user"])] = match["address"]
            if metrics := METRICS_NOTE.search(line):
                self.metrics_port = int(metrics["metrics"])
        return len(self.addresses) >= self.num_users


class ControllerProcess(DaemonProcess):
    """`python -m controller ARGS`; ``address`` is set once it printed its ready line."""

    module = "controller"
    address: str | None = None

    def _on_line(self, line: str) -> bool:
        if match := CONTROLLER_READY.search(line):
            self.address = match["address"]
            if metrics := METRICS_NOTE.search(line):
                self.metrics_port = int(metrics["metrics"])
        return self.address is not None
