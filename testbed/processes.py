"""Tandem's daemons as child processes (tandem/processes.py), each with the endpoints it announced: used by the
testbed, the benches and the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tandem.processes import DaemonProcess


def vllm_cores(limit: int = 2) -> str:
    """Cores for VLLM_CPU_OMP_THREADS_BIND: at most ``limit`` of those this process may use.  vLLM pins its threads;
    unpinned they oversubscribe a small machine, and pinned to a core outside the process's affinity (a 1-core
    container) vLLM does not start."""
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0))[:limit])


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
