"""The testbed's configuration (`deploy/testbed.yaml`): which twin scenario to bring up as real daemons, and how.

The scenario (controller/twin/scenario.py) names the trace, the hardware profile, the users and the edges with
their capacity and compute scale, and the arrivals: the testbed runs exactly what the digital twin simulates, so
the two can be compared (bench/testbed.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.cli_support import UsageError
from tandem.config_files import load_model_file

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "testbed.yaml"


class TestbedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: Path = Field(description="digital-twin scenario: trace, profile, users, edges, arrivals")
    engine: Literal["llamacpp", "vllm"] = Field("llamacpp", description="edge target engine (vllm: 4-5 GB each)")
    dilation: float = Field(10.0, ge=1, le=10_000, allow_inf_nan=False, description="time dilation D: every part "
                            "runs D times slower than the emulated hardware (hardware pacing)")
    policy: str = Field("tma-opt", min_length=1, description="the controller's policy at start")
    max_tokens: int = Field(32, ge=1, le=4096, description="tokens per answer (fixed length: EOS is ignored, as "
                            "the twin's fixed answer lengths)")
    until_s: float | None = Field(None, gt=0, allow_inf_nan=False, description="no arrivals after this emulated "
                                  "time (default: the scenario's; None there: run until `down`)")
    users_per_process: int = Field(25, ge=1, le=1024, description="emulated devices per device process")
    controller_slot_s: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False, description="emulated "
                                            "seconds between decisions (default: the trace's slot)")
    run_dir: Path = Field(Path("runs/testbed"), description="logs, generated configs, results and state")
    host: str = Field("127.0.0.1", description="where every daemon listens")
    tls: bool = Field(True, description="mutual TLS between every part, with a development CA and certificates made "
                      "in <run_dir>/tls at each `up`; admin commands use its admin certificate (False: plaintext, "
                      "logged as a warning by every daemon, admin calls need the random token made in "
                      "<run_dir>/admin-token at each `up`)")


def load_testbed_config(path: Path) -> TestbedConfig:
    """Read and validate; relative paths are taken from the file's folder. UsageError with the reason."""
    config = load_model_file(TestbedConfig, path, "testbed config", UsageError)
    base = Path(path).resolve().parent
    try:
        return config.model_copy(update={"scenario": (base / config.scenario).resolve(),
                                         "run_dir": (base / config.run_dir).resolve()})
    except ValueError as error:  # a path with a NUL byte ("\0" in a YAML string)
        raise UsageError(f"invalid testbed config {path}: {error}") from None
