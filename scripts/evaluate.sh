#!/usr/bin/env bash
# Every policy on held-out traces (seeds 10 and 11, never used in training or validation) over the layouts x loads
# of docs/evaluation.md: writes docs/evaluation.md and its plots in docs/evaluation/ (about 30 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for seed in 10 11; do
  trace="traces/umi-5x50-s$seed.npz"
  [ -f "$trace" ] || .venv/bin/tandem traces generate --scenario umi --edges 5 --users 50 --slots 600 \
    --seed "$seed" -o "$trace"
done
.venv/bin/tandem evaluate --scenario configs/twin-umi.yaml --trace traces/umi-5x50-s10.npz \
  --trace traces/umi-5x50-s11.npz --seeds 5 --edges 3 4 5 --loads 0.25 0.5 --modes psd --energy-weights 0 \
  --policy max-sinr-hysteresis --policy max-sinr-hysteresis:draft_lengths=tuned --policy least-loaded \
  --policy tma-equal --policy tma-equal:draft_lengths=tuned --policy oracle-lookahead \
  --out docs/evaluation --report docs/evaluation.md "$@"
