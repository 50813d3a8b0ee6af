"""`tandem devices run`: many emulated devices in one process, each a user of the testbed running a workload.

Each device keeps what a phone would have of its own: a draft model context, a route to the controller (its
allocation watch and reports, under its user id), its radio link (its port on the link emulator), a hardware
pacer, its request queue.  Devices share only the process, the draft model's weights (loaded once: each device is a
llama.cpp context on them, ``draft_weights: shared``) and the metrics endpoint.  Requests arrive by the workload
(device_client/workload.py); a request that arrives while the device is busy waits, and its latency counts from its
arrival.  Every finished request is a JSON line in the results file, with its token ids (to check losslessness
afterwards).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_client.draft import DraftEngine, LlamaCppDraftEngine
from device_client.fleet_metrics import DeviceMetrics
from device_client.generate import GenerationRequest, generate
from device_client.edge_handle import EdgeError
from device_client.pacing import PacedDraftEngine
from device_client.routing import ControllerRoute
from device_client.workload import Workload
from tandem.addresses import ADDRESS_PATTERN, HOST_PATTERN
from tandem.pacing import MAX_VALID_OVERRUN_FRACTION, Pacer, PacingSettings
from tandem.profiles import HardwareProfile
from tandem.sampling import SamplingConfig
from tandem.tls import TlsSettings, load_transport

log = logging.getLogger(__name__)


class FleetUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, lt=1 << 32, description="the user's id in the controller's topology")
    via: str | None = Field(None, pattern=ADDRESS_PATTERN, description="its radio link: its port on the link "
                            "emulator (without: the device dials the edges directly)")


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    controller: str = Field(pattern=ADDRESS_PATTERN)
    users: list[FleetUser] = Field(min_length=1, max_length=1024)
    workload: Workload = Workload()
    draft: Path | None = Field(None, description="draft GGUF (default: the prepared one)")
    data_dir: Path | None = None
    draft_context: int = Field(1024, ge=128, le=1 << 16, description="each device's draft context (tokens)")
    draft_weights: Literal["shared", "per-device"] = Field(
        "shared", description="shared: one copy of the draft model in the process, every device a context on it "
        "(a device costs its KV cache, ~30 MB); per-device: each device loads its own (~190 MB each, as separate "
        "phones would)")
    pacing: PacingSettings = PacingSettings()
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", pattern=HOST_PATTERN)
    results: Path | None = Field(None, description="append one JSON line per finished request")
    connect_timeout_s: float = Field(30.0, gt=0, le=3600)
    tls: TlsSettings = Field(default_factory=TlsSettings, description="credentials; from a TLS folder each device "
                             "presents its own user's certificate (device-<user>)")

    @model_validator(mode="after")
    def _distinct(self) -> "FleetConfig":
        ids = [user.id for user in self.users]
        if len(set(ids)) != len(ids):
            raise ValueError("a user is listed twice")
        return self


class EmulatedDevice(threading.Thread):
    def __init__(self, fleet: "Fleet", user: FleetUser, draft: DraftEngine, route: ControllerRoute) -> None:
        super().__init__(name=f"device-{user.id}", daemon=True)
        self.fleet, self.user, self.draft, self.route = fleet, user, draft, route

    def run(self) -> None:
        fleet, workload = self.fleet, self.fleet.config.workload
        for seq, (arrival, prompt_index) in enumerate(workload.requests(self.user.id, len(fleet.prompts))):
            if not fleet.wait_until(arrival):
                return
            fleet.metrics.busy.inc()
            try:
                record = self._serve(seq, arrival, prompt_index)
            finally:
                fleet.metrics.busy.dec()
            fleet.record(record)
            if fleet.stopping.is_set():
                return

    def _serve(self, seq: int, arrival: float, prompt_index: int) -> dict:
        fleet, workload = self.fleet, self.fleet.config.workload
        started = fleet.now()
        request = GenerationRequest(fleet.prompts[prompt_index], workload.mode, workload.max_tokens,
                                    SamplingConfig(), draft_length=workload.draft_length,
                                    ignore_eos=workload.ignore_eos, psd_variant=workload.psd_variant)
        record = {"user": self.user.id, "seq": seq, "prompt": prompt_index, "arrival_s": arrival,
                  "start_s": started}
        try:
            # Times in the summary are emulated at the fleet's own dilation (its phones are paced at it).
            result, summary = generate(self.route, self.draft, request, user=self.user.id, dilation=fleet.dilation)
        except (EdgeError, OSError) as error:  # the request failed: counted, and the device goes on
            fleet.metrics.requests.labels(str(self.user.id), "error").inc()
            return record | {"error": str(error)}
        finished = fleet.now()
        tokens = summary["generated_tokens"]
        draft_s = summary["draft_s"]
        energy = fleet.profile.device.draft_power_w * draft_s if fleet.profile else None
        record |= {
            "finish_s": finished, "latency_s": finished - arrival,
            "ttft_s": (started - arrival) + summary["ttft_s"] if summary["ttft_s"] is not None else None,
            "prompt_tokens": summary["prompt_tokens"], "tokens": tokens,
            "tokens_per_s": tokens / (finished - started) if finished > started else None,
            "acceptance": summary["acceptance_rate"], "edges": summary["edges"], "migrations": summary["migrations"],
            "draft_s": draft_s, "energy_j": energy, "token_ids": summary["token_ids"], "mode": workload.mode,
            "psd_variant": summary["psd_variant"], "efficiency": summary["efficiency"],
            "bound_s_per_token": summary["bound_s_per_token"], "breakdown_s": summary["breakdown_s"]}
        m, user = fleet.metrics, str(self.user.id)
        m.requests.labels(user, "ok").inc()
        m.latency.observe(record["latency_s"])
        if record["ttft_s"] is not None:
            m.ttft.observe(record["ttft_s"])
        m.last_latency.labels(user).set(record["latency_s"])
        if record["tokens_per_s"] is not None:
            m.last_tokens_per_s.labels(user).set(record["tokens_per_s"])
        m.generated.labels(user).inc(tokens)
        m.drafted.inc(result.drafted_sent)
        m.accepted.inc(result.accepted)
        m.migrations.inc(summary["migrations"] or 0)
        if energy is not None:
            m.energy.inc(energy)
        m.count_rounds(summary["efficiency"], summary["breakdown_s"])
        return record


class Fleet:
    def __init__(self, config: FleetConfig, draft_gguf: Path, profile: HardwareProfile | None) -> None:
        self.config, self.profile = config, profile
        self.prompts = config.workload.load_prompts()
        self.metrics = DeviceMetrics()
        self.dilation = config.pacing.dilation
        self.time_scale = 1 / self.dilation if self.dilation > 0 else 1.0  # real seconds -> emulated seconds
        self.stopping = threading.Event()
        self._stopped_at = 0.0
        self._lock = threading.Lock()
        self._results = open(config.results, "a") if config.results else None
        self.completed = self.failed = 0
        self.devices: list[EmulatedDevice] = []
        self.pacers: list[Pacer] = []
        for user in config.users:
            pacer = Pacer(self.dilation, self.metrics.count_paced_step)
            draft: DraftEngine = LlamaCppDraftEngine(draft_gguf, n_ctx=config.draft_context,
                                                     shared_weights=config.draft_weights == "shared")
            if profile is not None and self.dilation > 0:
                draft = PacedDraftEngine(draft, profile.device, pacer)
            route = ControllerRoute(config.controller, user.id, user.via, config.connect_timeout_s, self.dilation,
                                    load_transport(config.tls, f"device-{user.id}"))
            self.pacers.append(pacer)
            self.devices.append(EmulatedDevice(self, user, draft, route))
        self._origin = time.monotonic()

    def now(self) -> float:
        """Emulated seconds since the fleet started."""
        return (time.monotonic() - self._origin) * self.time_scale

    def wait_until(self, emulated_s: float) -> bool:
        """Sleep until that emulated time; False when the fleet is stopping."""
        return not self.stopping.wait(max(0.0, emulated_s - self.now()) / self.time_scale)

    def record(self, record: dict) -> None:
        with self._lock:
            if "error" in record:
                self.failed += 1
            else:
                self.completed += 1
            if self._results:
                self._results.write(json.dumps(record) + "\n")
                self._results.flush()

    def start(self) -> None:
        self._origin = time.monotonic()
        for device in self.devices:
            device.start()

    def join(self, grace_s: float = 2.0) -> None:
        """Until every device is done, or ``grace_s`` after a stop (requests in flight are then abandoned)."""
        for device in self.devices:
            while device.is_alive():
                if self.stopping.is_set() and time.monotonic() > self._stopped_at + grace_s:
                    return
                device.join(0.2)

    def stop(self) -> None:
        self._stopped_at = time.monotonic()
        self.stopping.set()

    def pacing_summary(self) -> dict:
        steps = sum(p.steps for p in self.pacers)
        overruns = sum(p.overruns for p in self.pacers)
        fraction = overruns / steps if steps else 0.0
        return {"dilation": self.dilation, "steps": steps, "overruns": overruns, "overrun_fraction": fraction,
                "valid": fraction <= MAX_VALID_OVERRUN_FRACTION}

    def close(self) -> None:
        for device in self.devices:
            device.route.close()
        if self._results:
            self._results.close()
