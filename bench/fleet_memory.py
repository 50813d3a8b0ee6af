"""Memory per emulated device: a fleet process's draft engines with one copy of the draft model shared by every
device (``draft_weights: shared``, the default) against a copy per device (``per-device``, as before).

For each fleet size a fresh process builds that many draft engines as ``tandem devices run`` does (the fleet's
default draft context), has each draft 16 tokens after a chat prompt (so its KV cache and compute buffers are
touched, as in a running fleet), and reports its memory beyond what the process held before the first engine:
proportional set size (Pss: shared pages divided among the processes that map them, so nothing is counted twice),
resident set size (Rss) and anonymous memory, per device.  Per-device fleets that would not fit in this machine's
memory are not run, and say so.

    .venv/bin/python bench/fleet_memory.py                 # 1, 10, 50, 200 devices; results/fleet-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bootstrap import RESULTS  # first: the repository on sys.path, one OpenMP thread

from device_client.fleet import FleetConfig
from tandem.models import DEFAULT_MODEL_NAME, default_data_dir, load_prepared

PROMPT = "Give three tips for learning a new language."
MODES = ("shared", "per-device")
PER_DEVICE_MB = 200  # a device with its own model, measured (for the fit check only)


def memory_mb() -> dict[str, float]:
    """This process's Pss, Rss and anonymous memory (smaps_rollup), in MB."""
    wanted = {"Pss:": "pss", "Rss:": "rss", "Anonymous:": "anonymous"}
    values = {}
    for line in open("/proc/self/smaps_rollup"):
        name, value, *_ = line.split()
        if name in wanted:
            values[wanted[name]] = int(value) / 1024
    return values


def child(devices: int, mode: str, draft: Path) -> dict:
    """Runs in the measured process: ``devices`` draft engines, each drafting 16 greedy tokens."""
    import numpy as np

    from device_client.draft import LlamaCppDraftEngine

    before = memory_mb()
    started = time.monotonic()
    engines = []
    for _ in range(devices):
        engine = LlamaCppDraftEngine(draft, n_ctx=FleetConfig.model_fields["draft_context"].default,
                                     shared_weights=mode == "shared")
        tokens = engine.encode_chat(PROMPT)
        for _ in range(16):
            tokens.append(int(np.argmax(engine.next_logits(tokens))))
        engines.append(engine)
    after = memory_mb()
    return {"devices": devices, "draft_weights": mode, "seconds": time.monotonic() - started,
            "process_mb": after, "per_device_mb": {k: (after[k] - before[k]) / devices for k in after}}


def available_mb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 10, 50, 200])
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet-memory.json")
    parser.add_argument("--child", nargs=2, metavar=("DEVICES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    draft = load_prepared(default_data_dir() / "models" / DEFAULT_MODEL_NAME).draft_gguf
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], draft)))
        return 0
    if any(n < 1 for n in args.devices):
        parser.error("--devices must be positive")
    rows = []
    for devices in args.devices:
        for mode in MODES:
            if mode == "per-device" and devices * PER_DEVICE_MB > 0.7 * available_mb():
                rows.append({"devices": devices, "draft_weights": mode, "skipped": f"needs about "
                             f"{devices * PER_DEVICE_MB / 1024:.0f} GB, {available_mb() / 1024:.0f} GB available"})
                print(f"{devices:4d} devices, {mode:10s}: not run ({rows[-1]['skipped']})", flush=True)
                continue
            done = subprocess.run([sys.executable, __file__, "--child", str(devices), mode], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            per = row["per_device_mb"]
            print(f"{devices:4d} devices, {mode:10s}: {per['pss']:6.1f} MB Pss per device ({per['rss']:6.1f} Rss, "
                  f"{per['anonymous']:6.1f} anonymous); process {row['process_mb']['pss']:7.0f} MB, "
                  f"built in {row['seconds']:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"draft": str(draft), "draft_context":
                                    FleetConfig.model_fields["draft_context"].default, "rows": rows}, indent=2))
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
