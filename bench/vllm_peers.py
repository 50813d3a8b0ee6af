"""Peers for bench/psd.py: vLLM alone on the same target, autoregressive and with its own speculative decoding.

Runs one peer per process (one engine at a time fits this machine) and prints its figures as one JSON line.
usage: python bench/vllm_peers.py --peer {vllm-ar,vllm-ngram,vllm-draft-model} --target DIR --draft-hf DIR
       --prompts-json FILE --max-tokens N --repeats R
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def spec_counters(llm) -> dict[str, float]:
    """vLLM's speculative-decoding counters (drafts, draft tokens, accepted tokens), summed over labels."""
    totals: dict[str, float] = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode_num_") and hasattr(metric, "value"):
            key = metric.name.removeprefix("vllm:spec_decode_")
            totals[key] = totals.get(key, 0.0) + metric.value
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True, choices=["vllm-ar", "vllm-ngram", "vllm-draft-model"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft-hf", required=True)
    parser.add_argument("--prompts-json", required=True, help="list of token-id lists")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draft-length", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.load(open(args.prompts_json))
    peers = {
        "vllm-ar": None,
        "vllm-ngram": {"method": "ngram", "num_speculative_tokens": args.draft_length, "prompt_lookup_max": 4,
                       "prompt_lookup_min": 2},
        "vllm-draft-model": {"method": "draft_model", "model": args.draft_hf,
                             "num_speculative_tokens": args.draft_length},
    }
    name, speculative = args.peer, peers[args.peer]
    try:
        llm = LLM(model=args.target, dtype="bfloat16", max_model_len=2048, enforce_eager=True,
                  speculative_config=speculative, disable_log_stats=False)
    except Exception as error:  # report and go on: a peer that cannot run here is a finding, not a crash
        print(json.dumps({"peer": name, "error": f"{type(error).__name__}: {error}"[:500]}), flush=True)
        return
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], params, use_tqdm=False)  # warm-up
    before = spec_counters(llm)
    runs = []
    for _ in range(args.repeats):
        for prompt in prompts:
            started = time.perf_counter()
            output = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0]
            elapsed = time.perf_counter() - started
            runs.append({"elapsed_s": elapsed, "tokens": len(output.outputs[0].token_ids)})
    after = spec_counters(llm)
    drafts = after.get("num_drafts", 0) - before.get("num_drafts", 0)
    drafted = after.get("num_draft_tokens", 0) - before.get("num_draft_tokens", 0)
    accepted = after.get("num_accepted_tokens", 0) - before.get("num_accepted_tokens", 0)
    print(json.dumps({
        "peer": name,
        "tokens_per_s": statistics.median(r["tokens"] / r["elapsed_s"] for r in runs),
        "per_token_latency_s": statistics.median(r["elapsed_s"] / r["tokens"] for r in runs),
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_accepted_length": accepted / drafts if drafts else None,
        "runs": len(runs),
    }), flush=True)


if __name__ == "__main__":
    main()
