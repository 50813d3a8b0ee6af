#!/usr/bin/env bash
# Trains the shipped mappo policy on configs/twin-umi.yaml and installs it in policies/mappo (docs/twin.md).
# Traces: seed 0 trains, seed 2 validates (4 arrival seeds on it, full-horizon episodes); `tandem evaluate` holds
# out 10 and 11. Extra `tandem train` flags pass through, e.g. --seed 1 --out runs/mappo-umi-5x50-s1 for another
# training seed (then nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for seed in 0 2; do
  trace="traces/umi-5x50-s$seed.npz"
  [ -f "$trace" ] || .venv/bin/tandem traces generate --scenario umi --edges 5 --users 50 --slots 600 \
    --seed "$seed" -o "$trace"
done
out=runs/mappo-umi-5x50
.venv/bin/tandem train --scenario configs/twin-umi.yaml --iterations 100 --eval-every 10 --users 10 50 \
  --edges 3 4 5 --episode-slots 900 --train-trace traces/umi-5x50-s0.npz \
  --validation-trace traces/umi-5x50-s2.npz --out "$out" "$@"
if [ $# -eq 0 ]; then
  rm -rf policies/mappo
  cp -r "$out/best" policies/mappo
  echo "installed policies/mappo"
fi
