"""`tandem profile`: measure this machine's engines into a hardware profile (tandem/profiles.py).

- device: the llama.cpp draft's decode step (median over a greedy generation) and its prefill per token;
- edge: the target engine's time to verify a block of k tokens at batch 1 for several k (warm prefix, median of
  repeats; fitted as base + per-position time), a step of n blocks relative to one (batch curve), prefill per
  token (teacher forcing of a fresh sequence);
- acceptance: on a prompt set, the target's greedy answer is scored by the draft (teacher forcing): α is the
  fraction of positions where the draft's argmax is the target's token, and for each draft length the mean number
  of drafted tokens a block starting at each position would have accepted.
Energy cannot be measured here (no power counters in a VM): the draft and transmit power are flags, recorded as
assumptions in the profile's sources.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_server.engines.base import ScoreRequest, TargetEngine
from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail
from tandem.profiles import AcceptanceProfile, BatchPoint, DeviceProfile, EdgeProfile, HardwareProfile
from tandem.sampling import Candidates, SamplingConfig

DRAFT_LENGTHS = (1, 2, 4, 8)
BATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class MeasureSettings:
    repeats: int = 5
    answer_tokens: int = 48
    draft_power_w: float = 15.0
    transmit_power_w: float = 0.2


def _median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _amedian_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_device(draft, draft_model: str, prompts: list[list[int]], settings: MeasureSettings,
                   progress: Callable[[str], None]) -> DeviceProfile:
    progress("device: draft decode step and prefill")
    steps = []
    for prompt in prompts:
        context = list(prompt)
        draft.next_logits(context)  # prefill outside the timing
        for _ in range(settings.answer_tokens):
            started = time.perf_counter()
            logits = draft.next_logits(context)
            steps.append(time.perf_counter() - started)
            context.append(int(np.argmax(logits)))
    longest = max(prompts, key=len)
    fresh = [(t + 7) % draft.vocab_size for t in longest]  # a sequence no cache holds

    def prefill() -> None:
        fresh[0] = (fresh[0] + 1) % draft.vocab_size
        draft.next_logits(fresh)

    return DeviceProfile(
        draft_model=draft_model, draft_seconds_per_token=statistics.median(steps),
        prefill_seconds_per_token=_median_seconds(prefill, settings.repeats) / len(fresh),
        draft_power_w=settings.draft_power_w, transmit_power_w=settings.transmit_power_w)


async def measure_edge(engine: TargetEngine, prompts: list[list[int]], settings: MeasureSettings,
                       progress: Callable[[str], None]) -> EdgeProfile:
    progress("edge: verification time by block length")
    fresh_tokens = iter(range(10, 1 << 30))

    def block(k: int) -> list[int]:
        """Tokens never scored before: a block whose prefix is cached and whose own positions are not."""
        return [next(fresh_tokens) % 5000 + 10 for _ in range(k)]

    prefix = prompts[0]
    await engine.score_blocks([ScoreRequest(prefix, block(1), 2)])  # warm the prefix
    block_times = {}
    for k in DRAFT_LENGTHS:
        block_times[k] = await _amedian_seconds(lambda: engine.score_blocks([ScoreRequest(prefix, block(k), 2)]),
                                                settings.repeats)
    positions = np.array([k + 1 for k in DRAFT_LENGTHS], dtype=float)
    per_position, base = np.polyfit(positions, np.array([block_times[k] for k in DRAFT_LENGTHS]), 1)
    progress("edge: batch curve")
    single = block_times[4]
    points = [BatchPoint(blocks=1, relative_time=1.0)]
    prefixes = [prompts[i % len(prompts)] + [11 + i] for i in range(max(BATCHES))]
    await engine.score_blocks([ScoreRequest(p, block(1), 2) for p in prefixes])  # warm every prefix
    for n in BATCHES[1:]:
        seconds = await _amedian_seconds(
            lambda: engine.score_blocks([ScoreRequest(p, block(4), 2) for p in prefixes[:n]]), settings.repeats)
        points.append(BatchPoint(blocks=n, relative_time=max(points[-1].relative_time, seconds / single)))
    progress("edge: prefill")
    longest = max(prompts, key=len)
    counter = iter(range(1 << 30))

    async def prefill() -> None:
        fresh = [next(counter) % 500 + 20] + list(longest)  # a new first token: nothing cached
        await engine.teacher_force(fresh, 1, 2)

    prefill_s = await _amedian_seconds(prefill, settings.repeats) / (len(longest) + 1)
    return EdgeProfile(target_model=Path(engine.info.model).name, verify_base_seconds=max(0.0, float(base)),
                       verify_seconds_per_token=max(0.0, float(per_position)),
                       prefill_seconds_per_token=prefill_s, batch_scaling=tuple(points))


async def measure_acceptance(engine: TargetEngine, draft, prompts: list[list[int]], settings: MeasureSettings,
                             progress: Callable[[str], None]) -> AcceptanceProfile:
    progress("acceptance: target answers scored by the draft")
    agreements: list[list[bool]] = []
    for prompt in prompts:
        answer: list[int] = []
        async for tokens in engine.generate(prompt, SamplingConfig(), settings.answer_tokens, []):
            answer.extend(tokens)
        context = list(prompt)
        flags = []
        for token in answer:
            flags.append(Candidates.top_of_logits(draft.next_logits(context), 1).argmax() == token)
            context.append(token)
        agreements.append(flags)
    alpha = float(np.mean([f for flags in agreements for f in flags]))
    by_length = {}
    for k in DRAFT_LENGTHS:
        accepted = []
        for flags in agreements:
            for start in range(len(flags) - k):
                run = 0
                while run < k and flags[start + run]:
                    run += 1
                accepted.append(run)
        by_length[k] = float(np.mean(accepted)) if accepted else 0.0
    return AcceptanceProfile(per_token=alpha, by_draft_length=by_length)


async def measure(engine: TargetEngine, draft, draft_model: str, prompts: list[list[int]], name: str, host: str,
                  settings: MeasureSettings, progress: Callable[[str], None]) -> HardwareProfile:
    await engine.start()
    try:
        device = measure_device(draft, draft_model, prompts, settings, progress)
        edge = await measure_edge(engine, prompts, settings, progress)
        acceptance = await measure_acceptance(engine, draft, prompts, settings, progress)
    finally:
        await engine.stop()
    return HardwareProfile(
        name=name, device=device, edge=edge, acceptance=acceptance, measured_on=host,
        sources=[f"measured by `tandem profile` on {host}: medians of {settings.repeats} repeats",
                 f"draft_power_w {settings.draft_power_w:g} and transmit_power_w {settings.transmit_power_w:g} are "
                 f"assumptions given on the command line (no power counters here)"])


def run_measure(engine: TargetEngine, draft, draft_model: str, prompts, name, host, settings,
                progress) -> HardwareProfile:
    return asyncio.run(measure(engine, draft, draft_model, prompts, name, host, settings, progress))


def run_profile(args: argparse.Namespace) -> int:
    """`tandem profile`: measure the engines of this machine and write the profile file."""
    import platform

    from edge_server.config import EdgeConfig
    from edge_server.engines import make_engine
    from tandem.models import DEFAULT_MODEL_NAME, ModelError, default_data_dir, load_prepared
    from tandem.profiles import save_profile

    if args.repeats < 1 or args.answer_tokens < 2:
        return fail("--repeats must be at least 1 and --answer-tokens at least 2", EXIT_USAGE)
    if not (0 <= args.draft_power_w <= 1000 and 0 <= args.transmit_power_w <= 100):
        return fail("--draft-power-w must lie in [0, 1000] and --transmit-power-w in [0, 100]", EXIT_USAGE)
    try:
        lines = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    except OSError as error:
        return fail(f"cannot read prompts {args.prompts}: {error.strerror}", EXIT_USAGE)
    if not lines:
        return fail(f"{args.prompts} holds no prompt", EXIT_USAGE)
    data_dir = args.data_dir or default_data_dir()
    try:
        prepared = load_prepared(data_dir / "models" / DEFAULT_MODEL_NAME)
    except ModelError as error:
        return fail(str(error), EXIT_USAGE)
    from device_client.draft import LlamaCppDraftEngine

    draft = LlamaCppDraftEngine(prepared.draft_gguf)
    prompts = [draft.encode_chat(line) for line in lines]
    # A warm context per concurrent block, as an edge sized for the batch would have (fewer would re-prefill).
    engine = make_engine(EdgeConfig(engine=args.engine, data_dir=data_dir, llamacpp={"slots": max(BATCHES)}))
    name = args.name or f"cpu-{args.engine}"
    host = f"{platform.node()} ({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}"
    profile = run_measure(engine, draft, prepared.draft_gguf.name, prompts, name, host,
                          MeasureSettings(args.repeats, args.answer_tokens, args.draft_power_w,
                                          args.transmit_power_w),
                          lambda step: print(f"[profile] {step}", file=sys.stderr, flush=True))
    out = args.out or Path("profiles") / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(profile, out)
    print(f"wrote {out}: draft {profile.device.draft_seconds_per_token * 1000:.2f} ms/token, verify k=4 "
          f"{profile.edge.block_seconds(4) * 1000:.2f} ms, acceptance {profile.acceptance.per_token:.2f}")
    return EXIT_OK
