"""Bring a testbed up as local processes, follow it, take it down.

The daemons start in dependency order — edges, the link emulator, the controller, the device fleets — each with a
log file in the run folder, each detached (it outlives `tandem testbed up`); their pids and announced endpoints go
to ``state.json`` there, which `status` and `down` read.  Over TLS (the default) every part presents its own
certificate from a CA made at each `up`, and admin commands the admin certificate; in plaintext the admin-only
services (EdgeControl, LinkControl, ControllerAdmin) take a random token made at each `up` (<run_dir>/admin-token,
0600) and refuse calls without it.  Everything runs paced at the config's dilation D
(tandem/pacing.py): edges and devices hold each step for the profile's time x D, the link emulator stretches its
trace and delays D times.  If a daemon fails to start, the error names it and everything already started is
stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from controller.twin.scenario import Scenario, TwinEdge, load_scenario
from tandem.auth import ADMIN_TOKEN_ENV, read_token_file
from tandem.cli_support import UsageError
from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, load_prepared
from tandem.private_files import write_private
from tandem.processes import (ControllerProcess, DaemonFailed, DaemonProcess, EdgeProcess, LinkEmuProcess,
                              vllm_edge_env)
from tandem.profiles import HardwareProfile, load_profile
from tandem.tls import INSECURE_ENV, TLS_DIR_ENV, TlsSettings, Transport, load_transport
from tandem.trace_format import ChannelTrace, load_trace
from testbed.config import TestbedConfig
from toolbox.certs import init_certs

STATE_FILE = "state.json"
ADMIN_TOKEN_FILE = "admin-token"
STOP_TIMEOUT_S = 15.0
OUTAGE_LIMIT_S = 2.0  # emulated seconds of outage before the link emulator breaks a connection


class DevicesProcess(DaemonProcess):
    """`python -m tandem devices run ARGS`: a device fleet."""

    module = "tandem"

    def __init__(self, args: list[str], results: Path, **kwargs) -> None:
        super().__init__(args, **kwargs)
        self.results = results  # where its devices append one JSON line per finished request

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "devices", "run", *self.args]


@dataclass
class Testbed:
    config: TestbedConfig
    scenario: Scenario = field(init=False)
    profile: HardwareProfile = field(init=False)
    trace: ChannelTrace = field(init=False)
    daemons: list[DaemonProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self.scenario = load_scenario(self.config.scenario)
            self.profile = load_profile(self.scenario.profile)
        except ValueError as error:  # ScenarioError, ProfileError
            raise UsageError(str(error)) from None
        self.run_dir = self.config.run_dir
        self.tls_dir = self.run_dir / "tls"
        self.admin_token_file = self.run_dir / ADMIN_TOKEN_FILE
        self.trace = self._trace()
        meta = self.trace.metadata
        self.scenario.check_against(meta.num_users, meta.num_edges)
        try:
            self.draft_gguf = load_prepared(default_data_dir() / "models" / DEFAULT_MODEL_NAME).draft_gguf
        except ModelError as error:
            raise UsageError(f"{error} (run `tandem models prepare` first)") from None

    @property
    def dilation(self) -> float:
        return self.config.dilation

    def client_env(self) -> dict[str, str]:
        """The environment that gives a daemon or a client command of this testbed its credentials: each takes
        its own identity's certificate from the TLS folder (edge-<id>, linkemu, controller, device-<user>, admin)."""
        return {TLS_DIR_ENV: str(self.tls_dir)} if self.config.tls else {INSECURE_ENV: "1"}

    def admin_env(self) -> dict[str, str]:
        """What admin-only calls need besides ``client_env``: in plaintext this run's admin token (the edges and the
        link emulator check the controller's pushes with it, `tandem policy` sends it); over TLS nothing, the admin
        (or controller) certificate is the credential and a token would grant nothing."""
        return {} if self.config.tls else {ADMIN_TOKEN_ENV: read_token_file(self.admin_token_file)}

    def client_transport(self, name: str) -> Transport:
        """Credentials of an in-process client of this testbed (a bench's device, ...)."""
        return load_transport(TlsSettings(dir=self.tls_dir) if self.config.tls else TlsSettings(insecure=True), name)

    def _trace(self) -> ChannelTrace:
        path = self.scenario.trace
        if not path.exists():
            from tandem.trace_format import save_trace
            from toolbox.traces.generate import TraceRequest, generate_trace
            from toolbox.traces.radio_scenario import load_radio_scenario

            edges = max(edge.id for edge in self.scenario.edges) + 1
            users = max(self.scenario.user_ids()) + 1
            print(f"generating the Sionna UMi trace {path.name} ({edges} edges x {users} users x "
                  f"{self.scenario.duration_slots} slots)...", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_trace(generate_trace(TraceRequest(load_radio_scenario(None, "umi"), edges, users,
                                                   self.scenario.duration_slots, 100.0, 0), quiet=True), path)
        return load_trace(path)

    # -- bring-up ------------------------------------------------------------------------------------------------

    def up(self, devices: bool = True) -> None:
        """Start every daemon (the device fleets only with ``devices``); raises DaemonFailed naming the one that
        did not start, after stopping the others."""
        if (self.run_dir / STATE_FILE).exists() and any(_alive(d["pid"]) for d in read_state(self.run_dir)["daemons"]):
            raise UsageError(f"a testbed is already up in {self.run_dir}: `tandem testbed down` first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("controller.sqlite", "controller.sqlite-wal", "controller.sqlite-shm"):
            (self.run_dir / stale).unlink(missing_ok=True)  # a fresh testbed starts from a fresh decision history
        self.admin_token_file.unlink(missing_ok=True)  # never a token of an earlier run
        if self.config.tls:
            init_certs(self.tls_dir, edges=max(spec.id for spec in self.scenario.edges) + 1,
                       devices=max(self.scenario.user_ids()) + 1, hosts=[self.config.host], force=True)
        else:
            write_private(self.admin_token_file, f"{secrets.token_urlsafe(32)}\n".encode())
        try:
            edges = [self._start(self._edge(spec), f"edge {spec.id}")
                     for spec in self.scenario.edges]
            linkemu = self._start(self._linkemu(edges), "link emulator")
            self._start(self._controller(edges, linkemu), "controller")
            self.write_state()
            if devices:
                self.start_devices("devices", self.config.until_s or self.scenario.arrivals.until_s)
        except DaemonFailed:
            self.down()
            raise

    def _start(self, daemon: DaemonProcess, name: str) -> DaemonProcess:
        daemon.label = name
        daemon.env.update(self.client_env())
        print(f"  starting {name}...", end="", flush=True)
        started = time.monotonic()
        try:
            daemon.start()
        except DaemonFailed as error:
            print(" failed")
            raise DaemonFailed(f"{name} failed to start: {error}") from None
        print(f" ready in {time.monotonic() - started:.1f} s", flush=True)
        self.daemons.append(daemon)
        return daemon

    def _edge(self, spec: TwinEdge) -> EdgeProcess:
        env = vllm_edge_env(1) if self.config.engine == "vllm" else {}
        env.update(self.admin_env())
        return EdgeProcess(
            ["--engine", self.config.engine, "--edge-id", str(spec.id), "--host", self.config.host,
             "--metrics-port", "0", "--max-sessions", str(2 * spec.capacity + 4), "--idle-timeout", "120",
             "--profile", str(self.scenario.profile), "--dilation", str(self.dilation),
             "--compute-scale", str(spec.compute_scale),
             # The step budget the twin plays (the emulated GPU batches the blocks, its batch_scaling paces the
             # step); llama.cpp scores them one by one inside the step's dilated budget.
             "--step-tokens", str(spec.step_tokens),
             *(["--slots", str(min(spec.capacity, 8))] if self.config.engine == "llamacpp" else [])],
            log_path=self.run_dir / f"edge-{spec.id}.log", env=env, detached=True)

    def _linkemu(self, edges: list[EdgeProcess]) -> LinkEmuProcess:
        users = self.scenario.user_ids()
        first = self.scenario.edges[0].id
        path = self.run_dir / "linkemu.yaml"
        path.write_text(yaml.safe_dump({
            "trace": str(self.scenario.trace), "base_delay_ms": 1000 * self.scenario.rtt_s / 2,
            # A radio link failure after 2 s without service (NR's T310 is 1-2 s; the emulator stretches it D
            # times). Bytes already queued into a fade keep the rates they were scheduled at, so a longer limit
            # holds a request that the controller moved away for as long as the fade lasts (docs/testbed.md).
            "outage_limit_s": OUTAGE_LIMIT_S, "control_listen": f"{self.config.host}:0", "metrics_port": 0,
            "metrics_host": self.config.host, "dilation": self.dilation,
            "edges": [{"index": spec.id, "address": edge.address} for spec, edge in zip(self.scenario.edges, edges)],
            "users": [{"user": u, "edge": first, "share": 1 / len(users), "listen": f"{self.config.host}:0"}
                      for u in users]}))
        return LinkEmuProcess(["--config", str(path)], log_path=self.run_dir / "linkemu.log", env=self.admin_env(),
                              detached=True)

    def _controller(self, edges: list[EdgeProcess], linkemu: LinkEmuProcess) -> ControllerProcess:
        slot = (self.config.controller_slot_s or self.trace.slot_s) * self.dilation
        meta = self.trace.metadata
        path = self.run_dir / "controller.yaml"
        path.write_text(yaml.safe_dump({
            # Each edge as it runs (tandem/edge_model.py): the profile's steps at its scale and step budget.
            "profile": str(self.scenario.profile),
            "edges": [{"id": spec.id, "address": edge.address, "bandwidth_hz": float(meta.edge_bandwidth_hz[spec.id]),
                       "compute_scale": spec.compute_scale, "step_tokens": spec.step_tokens,
                       "capacity": spec.capacity} for spec, edge in zip(self.scenario.edges, edges)],
            "users": [{"id": u, "draft_length": self.scenario.draft_length,
                       "max_draft_length": self.scenario.longest_draft, "rtt_s": self.scenario.rtt_s}
                      for u in self.scenario.user_ids()],
            "linkemu": linkemu.control_address, "slot_s": slot, "failover_after_s": 5 * slot,
            "policy": {"name": self.config.policy},
            # Every phone is the profile's: no report is believed to draft much faster than it does.
            "assume": {"draft_seconds_per_token": self.profile.device.draft_seconds_per_token,
                       "min_draft_seconds_per_token": 0.75 * self.profile.device.draft_seconds_per_token,
                       "acceptance": self.profile.acceptance.per_token,
                       "min_acceptance": min(0.2, self.profile.acceptance.per_token),
                       "pending_tokens": self.config.max_tokens},
            "listen": f"{self.config.host}:0", "metrics_port": 0,
            **({} if self.config.tls else {"admin_token_file": str(self.admin_token_file)}),
            "state": str(self.run_dir / "controller.sqlite")}))
        return ControllerProcess(["--config", str(path)], log_path=self.run_dir / "controller.log", detached=True)

    def start_devices(self, phase: str, until_s: float | None, seed: int = 0, mode: str | None = None,
                      rate_per_user_s: float | None = None, psd_variant: str | None = None,
                      draft_weights: str | None = None) -> list[DevicesProcess]:
        """Start the device fleets of a workload phase; with ``until_s`` they exit once its last request ended.
        Their results go to <run_dir>/<phase>-<i>.jsonl (emptied first).  ``draft_weights``: the fleets' (default:
        shared, one copy of the draft model per process)."""
        controller = self.find("controller")
        linkemu = self.find("link emulator")
        users = self.scenario.user_ids()
        chunks = [users[i:i + self.config.users_per_process] for i in range(0, len(users),
                                                                             self.config.users_per_process)]
        variant = {"psd_variant": psd_variant} if psd_variant else {}
        fleets = []
        for index, chunk in enumerate(chunks):
            results = self.run_dir / f"{phase}-{index}.jsonl"
            results.unlink(missing_ok=True)
            path = self.run_dir / f"{phase}-{index}.yaml"
            path.write_text(yaml.safe_dump({
                "controller": controller.address,
                "users": [{"id": u, "via": linkemu.addresses[u]} for u in chunk],
                "workload": {"rate_per_user_s": rate_per_user_s or self.scenario.arrivals.rate_per_user_s,
                             "until_s": until_s,
                             "max_tokens": self.config.max_tokens, "ignore_eos": True,
                             "mode": mode or self.scenario.mode,
                             # The longest block: the controller's allocation sets each round's (at most this).
                             "draft_length": self.scenario.longest_draft, "seed": seed} | variant,
                "pacing": {"profile": str(self.scenario.profile), "dilation": self.dilation},
                "metrics_port": 0, "metrics_host": self.config.host, "results": str(results),
                "draft": str(self.draft_gguf)} | ({"draft_weights": draft_weights} if draft_weights else {})))
            fleet = DevicesProcess(["--config", str(path)], results, log_path=self.run_dir / f"{phase}-{index}.log",
                                   detached=True)
            fleets.append(self._start(fleet, f"{phase} {index} (users {chunk[0]}-{chunk[-1]})"))
        self.write_state()
        return fleets

    def find(self, label: str) -> DaemonProcess:
        return next(d for d in self.daemons if d.label == label)

    # -- state -----------------------------------------------------------------------------------------------------

    def write_state(self) -> None:
        (self.run_dir / STATE_FILE).write_text(json.dumps({
            "dilation": self.dilation, "admin_token_file": None if self.config.tls else str(self.admin_token_file),
            "client_env": self.client_env(),
            "daemons": [{"name": d.label, "pid": d.pid, "log": str(d.log_path), "announced": d.announced}
                        for d in self.daemons]}, indent=2))

    def down(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons.clear()
        stop_recorded(self.run_dir)


def read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    if not path.exists():
        raise UsageError(f"no testbed in {run_dir} (no {STATE_FILE}): `tandem testbed up` first")
    return json.loads(path.read_text())


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def stop_recorded(run_dir: Path) -> list[str]:
    """SIGTERM every daemon recorded in the run folder (devices first), SIGKILL what is left after a while;
    returns the names of those that had to be killed."""
    path = run_dir / STATE_FILE
    if not path.exists():
        return []
    daemons = list(reversed(json.loads(path.read_text())["daemons"]))
    for daemon in daemons:
        if _alive(daemon["pid"]):
            os.kill(daemon["pid"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_alive(d["pid"]) for d in daemons):
        time.sleep(0.2)
    killed = []
    for daemon in daemons:
        if _alive(daemon["pid"]):
            os.kill(daemon["pid"], signal.SIGKILL)
            killed.append(daemon["name"])
    path.unlink()
    return killed
