"""Fuzz the YAML config readers, each through the function its CLI reads a file with (config_files.load_config for
the daemons, the loaders of profiles, twin scenarios, trace scenarios and the testbed).

The first byte picks the reader; the rest is written, as raw bytes (invalid UTF-8 included), to the file it reads.
Each reader must refuse a bad file with its documented error, naming the file or the field: UsageError (the CLIs
exit 2 with it), ProfileError, ScenarioError.

    python fuzz/config_readers.py [libFuzzer args]     python fuzz/config_readers.py --write-seeds DIR
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import atheris

from common import main, rejected, scratch_file

with atheris.instrument_imports(include=["tandem.config_files", "tandem.profiles", "toolbox.traces.radio_scenario",
                                         "controller.config", "controller.twin.scenario", "edge_server.config",
                                         "linkemu.config", "testbed.config", "yaml"]):
    from controller.config import ControllerConfig
    from controller.twin.scenario import ScenarioError, load_scenario
    from device_client.fleet import FleetConfig
    from edge_server.config import EdgeConfig
    from linkemu.config import LinkEmuConfig
    from tandem.cli_support import UsageError
    from tandem.config_files import load_config
    from tandem.profiles import ProfileError, load_profile
    from testbed.config import load_testbed_config
    from toolbox.traces.radio_scenario import RadioScenarioError, load_radio_scenario

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Reader:
    read: Callable[[Path], object]
    refusal: type[Exception]  # the documented error for a bad file
    example: str  # a file of the repository that this reader reads, as the seed ("-": EDGE_EXAMPLE)


EDGE_EXAMPLE = b"""engine: llamacpp
port: 50051
metrics_port: 9100
max_sessions: 8
max_context: 2048
max_draft_length: 16
idle_timeout_s: 60
batch_window_s: 0.002
llamacpp: {threads: 1, slots: 4}
vllm: {top_n: 64, block_size: 32}
pacing: {profile: profiles/phone-1b-gpu-8b.yaml, dilation: 10, compute_scale: 0.5}
"""  # the repository has no edge config file: the daemons take flags


READERS = {
    "linkemu": Reader(partial(load_config, LinkEmuConfig, overrides={}, error=UsageError), UsageError,
                      "configs/linkemu.yaml"),
    "edge": Reader(partial(load_config, EdgeConfig, overrides={}, error=UsageError), UsageError, "-"),
    "controller": Reader(partial(load_config, ControllerConfig, overrides={}, error=UsageError), UsageError,
                         "configs/controller.yaml"),
    "devices": Reader(partial(load_config, FleetConfig, overrides={}, error=UsageError), UsageError,
                      "deploy/compose/devices.yaml"),
    "testbed": Reader(load_testbed_config, UsageError, "deploy/testbed.yaml"),
    "profile": Reader(load_profile, ProfileError, "profiles/phone-1b-gpu-8b.yaml"),
    "twin-scenario": Reader(load_scenario, ScenarioError, "configs/twin-umi.yaml"),
    "trace-scenario": Reader(partial(load_radio_scenario, scenario=None), RadioScenarioError,
                             "configs/scenario-umi.yaml"),
}
ORDER = list(READERS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    reader = READERS[ORDER[data[0] % len(ORDER)]]
    with rejected(reader.refusal), scratch_file("config.yaml", data[1:]) as path:
        reader.read(path)


def seeds() -> dict[str, bytes]:
    """The repository's own example of each config."""
    return {name: bytes([index]) + (EDGE_EXAMPLE if reader.example == "-" else (REPO / reader.example).read_bytes())
            for index, (name, reader) in enumerate(READERS.items())}


if __name__ == "__main__":
    main(test_one_input, seeds)
