#!/usr/bin/env bash
# Regenerates the committed Python stubs of the wire contracts (tandem/wire/v1/) from proto/.
# The stubs are committed so that installing Tandem needs no protoc; tests/system/test_wire_stubs.py fails when they
# are stale. Run from anywhere: bash proto/generate.sh [OUTPUT_ROOT]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
python -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root/proto/tandem/wire/v1/edge.proto" "$root/proto/tandem/wire/v1/linkemu.proto" \
  "$root/proto/tandem/wire/v1/control.proto"
