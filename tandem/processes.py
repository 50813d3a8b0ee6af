"""Start a daemon as a child process and wait for its readiness line (tandem/readiness.py).

Each daemon runs as `python -m MODULE ARGS`, its output going to a log file, and ``start`` returns once the daemon
announced its endpoints (or raises DaemonFailed with its last lines when it exits or times out first); one class
per daemon names its endpoints. Used by the testbed, the benches and the tests, and by `tandem generate --trace`,
which puts a link emulator between the device and its edge: a daemon is reached over its sockets, never imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tandem.readiness import parse_ready


class DaemonFailed(Exception):
    pass


class DaemonProcess:
    """`python -m MODULE ARGS` with its output in a log file, started and followed until its readiness line.

    ``detached``: the daemon gets its own session, so it outlives the process that started it (`tandem testbed
    up`) and a Ctrl-C in that terminal does not reach it; ``down`` stops it by pid.
    """

    module = ""

    def __init__(self, args: list[str], log_path: Path | None = None, env: dict[str, str] | None = None,
                 start_timeout: float = 600.0, detached: bool = False) -> None:
        self.args = args
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"tandem-{self.module}-", suffix=".log")
            os.close(handle)  # start() opens it by name
            log_path = Path(name)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.detached = detached
        self.label = self.module  # how the testbed names it (edge 0, controller, ...)
        self.announced: dict = {}
        self.process: subprocess.Popen | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def metrics_port(self) -> int | None:
        return self.announced.get("metrics_port")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, text=True,
                                            env=self.env, start_new_session=self.detached)
        deadline = time.monotonic() + self.start_timeout
        with open(self.log_path, errors="replace") as log:
            pending = ""
            while True:
                chunk = log.read()
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    if (announced := parse_ready(line)) is not None:
                        self.announced = announced
                        return
                if not chunk:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        why = "exited" if self.process.poll() is not None else "timed out"
                        self.stop()
                        raise DaemonFailed(f"{self.label} did not start ({why}; log {self.log_path}; "
                                           f"{' '.join(self.args)}):\n{self.tail()}")
                    time.sleep(0.1)

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


def vllm_cores(limit: int = 2) -> str:
    """Cores for VLLM_CPU_OMP_THREADS_BIND: at most ``limit`` of those this process may use.  vLLM pins its threads;
    unpinned they oversubscribe a small machine, and pinned to a core outside the process's affinity (a 1-core
    container) vLLM does not start."""
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0))[:limit])


def vllm_edge_env(cores: int = 2) -> dict[str, str]:
    """What a vLLM edge process adds to its environment: its threads pinned to at most ``cores`` of ours
    (vllm_cores), and one OpenMP thread for the rest of the process."""
    return {"VLLM_CPU_OMP_THREADS_BIND": vllm_cores(cores), "OMP_NUM_THREADS": "1"}


class EdgeProcess(DaemonProcess):
    """`python -m edge_server ARGS --port 0` (a later --port in ARGS wins)."""

    module = "edge_server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", "0", *self.args]

    @property
    def address(self) -> str | None:
        return self.announced.get("address")

    @property
    def verification_log(self) -> Path | None:
        """The file given with --verification-log, if any."""
        return Path(self.args[self.args.index("--verification-log") + 1]) if "--verification-log" in self.args else None


class LinkEmuProcess(DaemonProcess):
    """`python -m linkemu ARGS`; ``addresses`` maps each user to where its device connects."""

    module = "linkemu"

    @property
    def addresses(self) -> dict[int, str]:
        return {int(user): address for user, address in self.announced.get("users", {}).items()}

    @property
    def control_address(self) -> str | None:
        """LinkControl's address (with --control-listen)."""
        return self.announced.get("control")

    @property
    def address(self) -> str:
        """Where the device connects when the emulator carries one user."""
        (address,) = self.addresses.values()
        return address


class ControllerProcess(DaemonProcess):
    """`python -m controller ARGS`."""

    module = "controller"

    @property
    def address(self) -> str | None:
        return self.announced.get("address")
