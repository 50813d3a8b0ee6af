"""Are the engines' numbers batch- and cache-invariant here, what would invariance cost, and where do runs of
the same request part ways when the numbers differ?  (docs/design.md, "Reproducibility")

1. vLLM target, in process: the same blocks scored in one uncached pass (teacher forcing: the shape a
   cache- and batch-invariant verification would always use), alone through the prefix cache (today's path), and
   batched with three other sessions' blocks; are the raw log-probabilities bit-identical, and what does each
   cost per block?
2. llama.cpp (draft and target): logits of the same positions from one batch, one token at a time, blocks of 5,
   and the draft's "last prompt token after a rollback".
3. End to end on a vLLM edge daemon: 4 psd sessions (T=0.7, top-k 10) alone, then together, for several seeds;
   decisions compared through the edge's verification log.
4. The analysis on real divergences: the same requests (same seeds) verified by the vLLM edge (bf16 checkpoint)
   and by a llama.cpp edge (Q4_1 GGUF of the same weights) -- two engines whose numbers differ -- and, for the
   first decision where each pair parts, the numbers each run decided from.

Writes results/reproducibility.json.

    OMP_NUM_THREADS=1 .venv/bin/python bench/reproducibility.py [--seeds 3] [--tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bootstrap import RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from device_client.draft import LlamaCppDraftEngine
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from edge_server.engines.base import ScoreRequest
from tandem.llamacpp import LlamaContext, load_weights
from tandem.models import default_data_dir
from toolbox.models import prepare_models
from tandem.processes import EdgeProcess, vllm_cores, vllm_edge_env
from tandem.sampling import Candidates, SamplingConfig
from tandem.verification_log import first_divergence, logprob_difference, read_log

plaintext_on_loopback()

PROMPTS = (
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about cats.",
    "Count from one to ten.",
)
BLOCK = 4
TOP = 10


def max_difference(a: list[Candidates], b: list[Candidates]) -> float:
    return max(logprob_difference(x, y, TOP) for x, y in zip(a, b))


async def vllm_engine_figures(prepared, draft, tokens: int) -> dict:
    from edge_server.engines.vllm_engine import VllmTargetEngine

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", vllm_cores())
    engine = VllmTargetEngine(prepared.target_hf, 2048, 64, 32, True, 1)
    await engine.start()
    try:
        sequences = []
        for prompt in PROMPTS:
            ids = draft.encode_chat(prompt)
            answer = []
            async for new in engine.generate(ids, SamplingConfig(), tokens, []):
                answer += new
            sequences.append((len(ids), ids + answer))
        figures = {"one_pass_vs_cached": [], "one_pass_vs_batched": []}
        seconds = {"one_pass": [], "cached_alone": [], "batched_per_block": []}
        # Each block is scored through the cache (alone at even offsets, batched at odd ones) before its one-pass
        # teacher forcing, so that the cache holds exactly the earlier positions, as during decoding.
        for step, offset in enumerate(range(1, tokens - BLOCK, BLOCK + 1)):
            requests = [ScoreRequest(full[: n + offset], full[n + offset: n + offset + BLOCK], TOP)
                        for n, full in sequences]
            started = time.perf_counter()
            if step % 2 == 0:
                cached = [(await engine.score_blocks([request]))[0] for request in requests]
                seconds["cached_alone"].append((time.perf_counter() - started) / len(requests))
            else:
                cached = await engine.score_blocks(requests)
                seconds["batched_per_block"].append((time.perf_counter() - started) / len(requests))
            name = "one_pass_vs_cached" if step % 2 == 0 else "one_pass_vs_batched"
            for request, scored in zip(requests, cached):
                started = time.perf_counter()
                one_pass = await engine.teacher_force(list(request.prefix) + list(request.block), len(request.prefix),
                                                      TOP)
                seconds["one_pass"].append(time.perf_counter() - started)
                figures[name].append(max_difference([p.candidates for p in one_pass], scored.candidates[:BLOCK]))
        misses = engine.cache_misses
    finally:
        await engine.stop()
    return {
        **{name: {"blocks": len(values), "bit_identical": sum(v == 0.0 for v in values),
                  "max_logprob_difference": max(values)} for name, values in figures.items()},
        "median_ms": {name: 1000 * statistics.median(values) for name, values in seconds.items()},
        "cache_recomputes": misses,  # blocks whose cached path fell back to a recompute (should be 0)
    }


def llamacpp_figures(prepared, draft, tokens: int) -> dict:
    ids = draft.encode_chat(PROMPTS[2])
    out = {}
    for name, gguf in (("draft_q4_0", prepared.draft_gguf), ("target_q4_1", prepared.target_gguf)):
        sequence = list(ids)
        context = LlamaContext(load_weights(gguf), 2048, 1, all_logits=True)
        for _ in range(tokens):
            sequence.append(int(np.argmax(context.logits(sequence, len(sequence) - 1)[-1])))
        first = len(ids) - 1
        one_batch = LlamaContext(load_weights(gguf), 2048, 1, all_logits=True).logits(sequence, first)
        single = LlamaContext(load_weights(gguf), 2048, 1, all_logits=True)
        one_at_a_time = [single.logits(sequence[: n + 1], n)[-1] for n in range(first, len(sequence))]
        blocks_context = LlamaContext(load_weights(gguf), 2048, 1, all_logits=True)
        blocks = list(blocks_context.logits(sequence[: first + 1], first))
        for start in range(first + 1, len(sequence), BLOCK + 1):
            blocks += list(blocks_context.logits(sequence[: start + BLOCK + 1], start))
        last_only = LlamaContext(load_weights(gguf), 2048, 1, all_logits=False)
        prefill = last_only.logits(ids, first)[0]
        last_only.logits(sequence, len(sequence) - 1)
        rolled_back = last_only.logits(ids, first)[0]  # the last prompt token evaluated alone
        out[name] = {
            "one_batch_vs_one_at_a_time_max_logit_difference": float(max(
                np.abs(a - b).max() for a, b in zip(one_batch, one_at_a_time))),
            "one_batch_vs_blocks_of_5_max_logit_difference": float(max(
                np.abs(a - b).max() for a, b in zip(one_batch, blocks))),
            "last_row_only_prefill_vs_rollback_max_logit_difference": float(np.abs(prefill - rolled_back).max()),
        }
    return out


def run_sessions(address: str, drafts, sampling: SamplingConfig, tokens: int, together: bool) -> list:
    def run(index: int):
        connection = EdgeConnection(address)
        try:
            return generate(connection, drafts[index], GenerationRequest(PROMPTS[index], "psd", tokens, sampling))[0]
        finally:
            connection.close()

    if not together:
        return [run(i) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(run, range(len(PROMPTS))))


def divergences(log_a: Path, runs_a, log_b: Path, runs_b) -> list[dict]:
    records_a, records_b = read_log(log_a), read_log(log_b)
    found = []
    for index, (a, b) in enumerate(zip(runs_a, runs_b)):
        split = first_divergence(records_a[a.session_id], records_b[b.session_id], top=TOP)
        if split is not None:
            found.append({"prompt": index, "same_inputs": split.same_inputs, **split.summary()})
    return found


def end_to_end(prepared, data_dir: Path, seeds: int, tokens: int, workdir: Path) -> dict:
    drafts = [LlamaCppDraftEngine(prepared.draft_gguf) for _ in PROMPTS]
    common = ["--data-dir", str(data_dir), "--max-sessions", "64"]
    vllm_log, llama_log = workdir / "vllm.jsonl", workdir / "llamacpp.jsonl"
    vllm_env = vllm_edge_env()
    result = {"solo_vs_concurrent_vllm": [], "vllm_vs_llamacpp": []}
    with EdgeProcess(["--engine", "vllm", "--verification-log", str(vllm_log), *common], env=vllm_env,
                     log_path=workdir / "edge-vllm.log") as vllm, \
            EdgeProcess(["--engine", "llamacpp", "--verification-log", str(llama_log), *common],
                        log_path=workdir / "edge-llamacpp.log") as llama:
        for seed in range(seeds):
            sampling = SamplingConfig(temperature=0.7, top_k=TOP, seed=100 + seed)
            solo = run_sessions(vllm.address, drafts, sampling, tokens, together=False)
            together = run_sessions(vllm.address, drafts, sampling, tokens, together=True)
            other_engine = run_sessions(llama.address, drafts, sampling, tokens, together=False)
            result["solo_vs_concurrent_vllm"].append({
                "seed": sampling.seed, "sessions": len(PROMPTS),
                "equal_tokens": sum(a.token_ids == b.token_ids for a, b in zip(solo, together)),
                "divergences": divergences(vllm_log, solo, vllm_log, together)})
            result["vllm_vs_llamacpp"].append({
                "seed": sampling.seed, "sessions": len(PROMPTS),
                "equal_tokens": sum(a.token_ids == b.token_ids for a, b in zip(solo, other_engine)),
                "divergences": divergences(vllm_log, solo, llama_log, other_engine)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the end-to-end runs (default 3)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per session (default 32)")
    parser.add_argument("--out", type=Path, default=RESULTS / "reproducibility.json")
    args = parser.parse_args()
    data_dir = default_data_dir()
    prepared = prepare_models(data_dir, progress=lambda message: None)
    draft = LlamaCppDraftEngine(prepared.draft_gguf)
    print("1/3 vLLM: one uncached pass vs prefix cache vs batched ...", flush=True)
    figures = {"cpu": _cpu_flags(), "vllm_engine": asyncio.run(vllm_engine_figures(prepared, draft, args.tokens))}
    print(json.dumps(figures["vllm_engine"], indent=2))
    print("2/3 llama.cpp: batch shapes ...", flush=True)
    figures["llamacpp"] = llamacpp_figures(prepared, draft, args.tokens)
    print(json.dumps(figures["llamacpp"], indent=2))
    print("3/3 end to end: solo vs concurrent (vLLM edge), vLLM vs llama.cpp edge ...", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        figures["end_to_end"] = end_to_end(prepared, data_dir, args.seeds, args.tokens, Path(workdir))
    for name, runs in figures["end_to_end"].items():
        for run in runs:
            print(f"{name} seed {run['seed']}: {run['equal_tokens']}/{run['sessions']} sessions token-identical, "
                  f"{len(run['divergences'])} with a divergent decision")
            for split in run["divergences"]:
                print("   ", json.dumps(split))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")


def _cpu_flags() -> dict:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"model": model, **{flag: flag in flags for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile")}}


if __name__ == "__main__":
    main()
