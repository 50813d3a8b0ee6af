#!/usr/bin/env bash
# Trains the shipped tma-masac policy on configs/twin-umi.yaml and installs it in policies/tma-masac
# (docs/twin.md: about 40 minutes and 1.4 GB here). Traces: seeds 0 and 1 train, seed 2 validates.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for seed in 0 1 2; do
  trace="traces/umi-5x50-s$seed.npz"
  [ -f "$trace" ] || .venv/bin/tandem traces generate --scenario umi --edges 5 --users 50 --slots 600 \
    --seed "$seed" -o "$trace"
done
.venv/bin/tandem train --scenario configs/twin-umi.yaml --iterations 200 --eval-every 10 --users 10 50 \
  --edges 3 4 5 --energy-weights 0 0.5 --train-trace traces/umi-5x50-s0.npz --train-trace traces/umi-5x50-s1.npz \
  --validation-trace traces/umi-5x50-s2.npz --out runs/masac-umi-5x50
rm -rf policies/tma-masac
cp -r runs/masac-umi-5x50/best policies/tma-masac
echo "installed policies/tma-masac"
