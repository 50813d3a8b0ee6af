"""The committed gRPC stubs are exactly what proto/generate.sh makes from the .proto files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_current(tmp_path):
    env_path = Path(sys.executable).parent
    subprocess.run(
        ["bash", str(ROOT / "proto" / "generate.sh"), str(tmp_path)], check=True,
        env={"PATH": f"{env_path}:/usr/bin:/bin"},
    )
    for name in [f"{contract}{suffix}" for contract in ("edge", "linkemu", "control") for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]:
        fresh = (tmp_path / "tandem" / "wire" / "v1" / name).read_text()
        committed = (ROOT / "tandem" / "wire" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run `bash proto/generate.sh`"
