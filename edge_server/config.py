"""Configuration of an edge server, validated at the boundary (CLI flags or a config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.pacing import PacingSettings
from tandem.tls import TlsSettings


class VllmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_n: int = Field(64, ge=2, le=1024, description="candidates per position; sampling needs top_k <= top_n")
    block_size: int = Field(32, ge=32, description="KV block size; small blocks let the prefix cache reuse more")
    enforce_eager: bool = Field(True, description="skip torch.compile: starts in ~20 s instead of ~100 s")
    kv_cache_gib: int = Field(1, ge=1, description="KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")


class LlamaCppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: int = Field(1, ge=1, le=256)
    slots: int = Field(4, ge=1, le=64, description="contexts kept warm, one per concurrent session")


class PacingOptions(PacingSettings):
    compute_scale: float = Field(1.0, gt=0, le=1000, allow_inf_nan=False, description="this edge's compute "
                                 "relative to the profiled one (the twin scenario's compute_scale)")


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["vllm", "llamacpp"] = "llamacpp"
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus /metrics; None = off")
    model: Path | None = Field(None, description="HF dir (vllm) or GGUF (llamacpp); default: prepared target")
    data_dir: Path | None = None
    max_sessions: int = Field(8, ge=1, le=4096)
    max_sessions_per_identity: int = Field(4, ge=1, le=4096, description="sessions (open or detached) and Score "
                                           "calls one client identity may hold at once (mutual TLS)")
    open_rate_per_s: float = Field(2.0, gt=0, le=10_000, allow_inf_nan=False, description="sessions an identity "
                                   "may open per second (after a burst of 8)")
    max_request_tokens: int = Field(1024, ge=2, le=1 << 20, description="longest Score (teacher forcing) accepted: "
                                    "one exclusive engine step")
    drain_s: float = Field(10.0, ge=0, le=3600, allow_inf_nan=False, description="on SIGTERM, how long blocks in "
                           "flight may take to finish before the server stops")
    max_context: int = Field(2048, ge=64, le=1 << 20)
    max_draft_length: int = Field(16, ge=1, le=256)
    idle_timeout_s: float = Field(60.0, gt=0, le=86_400, allow_inf_nan=False, description="how long a detached "
                                  "session waits for its device to attach again")
    commit_idle_s: float = Field(30.0, gt=0, le=86_400, allow_inf_nan=False, description="an attached session "
                                 "that commits nothing this long is closed: holding a slot costs a verified block "
                                 "at least this often")
    max_message_bytes: int = Field(4 << 20, ge=1024)
    batch_window_s: float = Field(0.002, ge=0, le=1)
    step_tokens: int | None = Field(None, ge=1, le=1 << 16, description="target work (tokens) one engine step may "
                                    "batch; smaller steps follow compute shares more closely, larger ones batch more. "
                                    "Default: 64 on vLLM (batching pays), 1 on llama.cpp (it scores blocks one by "
                                    "one anyway, so one block per step costs nothing and follows shares exactly)")

    @property
    def engine_step_tokens(self) -> int:
        return self.step_tokens or (64 if self.engine == "vllm" else 1)
    edge_id: int | None = Field(None, ge=0, description="this edge's index in the controller's topology (reported "
                                "in GetInfo so that a device can check which edge it reached)")
    verification_log: Path | None = Field(None, description="append every verification's inputs and verdict here "
                                          "(JSON lines; tandem.verification_log reads and replays them)")
    vllm: VllmOptions = VllmOptions()
    llamacpp: LlamaCppOptions = LlamaCppOptions()
    pacing: PacingOptions = PacingOptions()
    tls: TlsSettings = TlsSettings()
