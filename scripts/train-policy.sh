#!/usr/bin/env bash
# Trains the mappo policy on configs/twin-umi.yaml with three training seeds side by side (each run is one process,
# so they share the cores), plots every seed's curves in docs/evaluation/training.png and installs the actor of the
# seed with the lowest validation time in system in policies/mappo (docs/twin.md).
# Traces: seed 0 trains, seed 2 validates (4 arrival seeds on it, full-horizon episodes); `tandem evaluate` holds
# out 10 and 11. 125 iterations of 8192 environment steps = 1.02 M steps per seed. SEEDS="0" trains one seed;
# extra `tandem train` flags pass through, e.g. --iterations 10 for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for seed in 0 2; do
  trace="traces/umi-5x50-s$seed.npz"
  [ -f "$trace" ] || .venv/bin/tandem traces generate --scenario umi --edges 5 --users 50 --slots 600 \
    --seed "$seed" -o "$trace"
done
mkdir -p runs
runs=() pids=()
for seed in ${SEEDS:-0 1 2}; do
  out="runs/mappo-umi-5x50-s$seed"
  runs+=("$out")
  .venv/bin/tandem train --scenario configs/twin-umi.yaml --iterations 125 --eval-every 25 --epochs 4 --users 10 50 \
    --edges 3 4 5 --episode-slots 900 --loads 0.25 0.5 --train-trace traces/umi-5x50-s0.npz \
    --validation-trace traces/umi-5x50-s2.npz --seed "$seed" --out "$out" --quiet "$@" > "$out.log" 2>&1 &
  pids+=($!)
done
for index in "${!pids[@]}"; do
  wait "${pids[$index]}" || { echo "training ${runs[$index]} failed: see ${runs[$index]}.log" >&2; exit 1; }
done
.venv/bin/tandem train-curves "${runs[@]}" -o docs/evaluation/training.png
best=$(.venv/bin/python - "${runs[@]}" <<'PY'
import json, sys
runs = [(json.load(open(f"{run}/summary.json"))["best_validation_time_in_system_s"], run) for run in sys.argv[1:]]
print(min(runs)[1])
PY
)
rm -rf policies/mappo
cp -r "$best/best" policies/mappo
echo "installed policies/mappo from $best"
