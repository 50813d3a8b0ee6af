"""The digital twin: speculative decoding at the edge, slot by slot, on a channel trace and a hardware profile.

Each slot the twin shows the policy the same kind of observation the controller builds (spectral efficiency per
pair in that slot, each user's pending work, draft speed and acceptance, each edge's bandwidth, compute and
capacity), applies its decision, and plays every user's rounds through the slot:

- a round's time is the latency estimator's (``controller/estimator.py``: one model for the twin and the
  heuristics, so no policy looks better here by reading another): uplink and downlink at share × B_e × SE of the
  slot, verification at the compute share of an edge whose speed is the profile's single-block time improved by
  batching the blocks of its active users (the profile's batch curve), drafting overlapped (psd) or not (sd);
- a round drafts k tokens (fewer near the end, as the device does: a block longer than remaining − 1 is drafted
  in vain), accepts a truncated-geometric number of them (each with the profile's α) and emits accepted + 1;
- a request starts with a prefill (prompt upload and the edge's prefill at the user's compute share, the draft's
  prefill on the device in parallel), and pays the same again on the new edge when its association changes
  mid-request (lossless migration re-prefills the prompt and every committed token);
- an outage (spectral efficiency 0) stalls the user until a later slot;
- device energy: draft compute (the speculative drafting psd does while a block is in flight included) × draft
  power, plus transmit power × uplink time.

Rounds that start in a slot use that slot's decision and channel to the end.  Deterministic for a seed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from controller.estimator import EdgeState, UserState, pair_costs, round_seconds
from controller.policies.base import Decision, Observation, Policy
from controller.share_floor import with_share_floor
from controller.twin.scenario import Scenario
from tandem.profiles import HardwareProfile
from tandem.traces.format import ChannelTrace

UP, DOWN = 1, 0  # direction axis of the trace's arrays


@dataclass
class Request:
    user: int
    arrival: float
    prompt_tokens: int
    answer_tokens: int
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None
    generated: int = 0
    edge: int | None = None  # where its context is prefilled
    migrations: int = 0
    energy_j: float = 0.0

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def remaining(self) -> int:
        return self.answer_tokens - self.generated


@dataclass
class _User:
    index: int  # in the trace
    acceptance: np.random.Generator  # this user's own stream of acceptance draws
    queue: deque[Request] = field(default_factory=deque)
    clock: float = 0.0  # when the user's next round may start

    @property
    def current(self) -> Request | None:
        return self.queue[0] if self.queue else None


@dataclass(frozen=True)
class TwinSummary:
    completed: int
    unfinished: int
    mean_latency_s: float
    p95_latency_s: float
    mean_ttft_s: float
    mean_energy_j: float
    migrations: int
    mean_time_in_system_s: float  # every request, unfinished ones up to the end: not biased by what is left over

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class DigitalTwin:
    def __init__(self, scenario: Scenario, trace: ChannelTrace, profile: HardwareProfile, seed: int = 0,
                 arrivals: dict[int, list[float]] | None = None, trace_offset: int = 0) -> None:
        """``arrivals``: each user's request times (s), replacing the scenario's arrival process, and
        ``trace_offset``: the trace slot playing at time 0 — to replay what a testbed ran (bench/testbed.py)."""
        scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
        self.scenario, self.trace, self.profile = scenario, trace, profile
        self.given_arrivals, self.trace_offset = arrivals, trace_offset
        self.slot_s = trace.slot_s
        self.parallel = scenario.mode == "psd"
        self.edges = scenario.edges
        self.reset(seed)

    def reset(self, seed: int) -> Observation:
        # One random stream per purpose — arrivals, lengths, and each user's acceptance draws — so that whatever a
        # policy decides, every policy played with this seed gets the same requests and each user the same
        # acceptance of its i-th drafted token (a shared stream let one user's extra round shift everyone's draws).
        arrivals, lengths, acceptance = np.random.SeedSequence(seed).spawn(3)
        self.arrival_rng, self.length_rng = np.random.default_rng(arrivals), np.random.default_rng(lengths)
        user_ids = self.scenario.user_ids()
        self.slot = 0
        self.users = [_User(u, np.random.default_rng(stream)) for u, stream in zip(user_ids,
                                                                                  acceptance.spawn(len(user_ids)))]
        self.done: list[Request] = []
        self._active_on: dict[int, int] = {edge.id: 0 for edge in self.edges}  # users served last slot
        self._arrivals()
        return self.observation()

    @property
    def now(self) -> float:
        return self.slot * self.slot_s

    @property
    def finished(self) -> bool:
        return self.slot >= self.scenario.duration_slots

    def _trace_slot(self) -> int:
        return (self.slot + self.trace_offset) % self.trace.metadata.num_slots

    def _arrivals(self) -> None:
        """Requests arriving during the current slot."""
        arrivals = self.scenario.arrivals
        begin, end = self.now, self.now + self.slot_s
        for user in self.users:
            if self.given_arrivals is not None:
                times = [at for at in self.given_arrivals.get(user.index, ()) if begin <= at < end]
            elif arrivals.kind == "once":
                times = [arrivals.at_s] if begin <= arrivals.at_s < end else []
            else:
                count = self.arrival_rng.poisson(arrivals.rate_per_user_s * self.slot_s)
                times = sorted(self.arrival_rng.uniform(begin, end, count))
                if arrivals.until_s is not None:
                    times = [at for at in times if at < arrivals.until_s]
            for at in times:
                user.queue.append(Request(user.index, float(at), self.scenario.prompt_tokens.sample(self.length_rng),
                                          self.scenario.answer_tokens.sample(self.length_rng)))

    def _edge_states(self, active_on: dict[int, int]) -> tuple[EdgeState, ...]:
        meta = self.trace.metadata
        return tuple(EdgeState(edge.id, meta.edge_bandwidth_hz[edge.id],
                               edge.compute_scale * self.profile.edge.batching_speedup(active_on.get(edge.id, 0)),
                               edge.capacity) for edge in self.edges)

    def _user_state(self, user: _User, draft_length: int) -> UserState:
        slot = self._trace_slot()
        se = self.trace.se[:, slot, user.index, :]
        edge_ids = [edge.id for edge in self.edges]
        request = user.current
        device, edge = self.profile.device, self.profile.edge
        return UserState(
            user=user.index, se_up=tuple(float(se[UP, e]) for e in edge_ids),
            se_down=tuple(float(se[DOWN, e]) for e in edge_ids),
            draft_s_per_token=device.draft_seconds_per_token, acceptance=self.profile.acceptance.per_token,
            draft_length=draft_length, pending_tokens=max(1, request.remaining if request else 0),
            verify_work_per_token=edge.verify_seconds_per_token,
            verify_work_base=edge.verify_base_seconds + edge.verify_seconds_per_token, rtt_s=self.scenario.rtt_s,
            edge=edge_ids.index(request.edge) if request and request.edge is not None else None,
            context_tokens=request.prompt_tokens + request.generated if request else 0,
            prefill_work_per_token=edge.prefill_seconds_per_token,
            bits_per_context_token=8 * self.scenario.bytes_per_prompt_token)

    def observation(self) -> Observation:
        """What the controller would see at the start of this slot (edge speed from last slot's load)."""
        return Observation(self.slot, self._edge_states(self._active_on),
                           tuple(self._user_state(u, self.scenario.draft_length) for u in self.users))

    def step(self, decision: Decision) -> list[Request]:
        """Play one slot under ``decision``; returns the requests that finished in it."""
        observation = self.observation()
        decision.check(observation)
        busy = [u for u in self.users if u.current is not None]
        # As the controller applies it (busy: what the edges report as users with an open session).
        decision = with_share_floor(decision, self.scenario.share_floor, {u.index for u in busy})
        by_user = {a.user: a for a in decision.allocations}
        active_on = {edge.id: 0 for edge in self.edges}
        for user in busy:
            active_on[by_user[user.index].edge] += 1
        edges = self._edge_states(active_on)
        position = {e.edge: i for i, e in enumerate(edges)}
        begin, end = self.now, self.now + self.slot_s
        finished: list[Request] = []
        for user in busy:
            allocation = by_user[user.index]
            finished += self._play(user, allocation, edges, position[allocation.edge], begin, end)
        self._active_on = active_on
        self.done += finished
        self.slot += 1
        if not self.finished:
            self._arrivals()
        return finished

    def _play(self, user: _User, allocation, edges, edge_position: int, begin: float, end: float) -> list[Request]:
        device, profile_edge = self.profile.device, self.profile.edge
        alpha = self.profile.acceptance.per_token
        b, c = allocation.bandwidth_share, allocation.compute_share
        bandwidth = edges[edge_position].bandwidth_hz
        compute = edges[edge_position].compute
        se_up = float(self.trace.se[UP, self._trace_slot(), user.index, allocation.edge])
        finished = []
        user.clock = max(user.clock, begin)
        round_cache: dict[int, tuple[float, float]] = {}

        def round_time(k: int) -> tuple[float, float]:
            """(round seconds, uplink seconds) of a k-token block in this slot."""
            if k not in round_cache:
                state = self._user_state(user, k)
                costs = pair_costs([state], list(edges))
                seconds = float(round_seconds(costs, np.array([0]), np.array([edge_position]), np.array([b]),
                                              np.array([c]), self.parallel)[0])
                uplink = k * state.bits_up_per_token / (b * bandwidth * se_up) if se_up > 0 else math.inf
                round_cache[k] = (seconds, uplink)
            return round_cache[k]

        while user.clock < end and (request := user.current) is not None:
            if request.started is None:
                request.started = max(user.clock, request.arrival)
                user.clock = request.started
                if user.clock >= end:
                    break
            if request.edge != allocation.edge:  # first prefill, or a migration: the context is (re)built there
                context = request.prompt_tokens + request.generated
                if se_up <= 0:
                    user.clock = end  # outage: nothing reaches the edge this slot
                    break
                upload = 8 * self.scenario.bytes_per_prompt_token * context / (b * bandwidth * se_up)
                edge_prefill = profile_edge.prefill_seconds_per_token * context / (c * compute)
                device_prefill = device.prefill_seconds_per_token * context if request.edge is None else 0.0
                user.clock += max(device_prefill, upload + edge_prefill) + self.scenario.rtt_s
                request.energy_j += device.transmit_power_w * upload + device.draft_power_w * device_prefill
                if request.edge is not None:
                    request.migrations += 1
                request.edge = allocation.edge
                continue
            k = max(1, min(self.scenario.draft_length, request.remaining - 1))
            seconds, uplink = round_time(k)
            if not math.isfinite(seconds):
                user.clock = end  # outage: wait for a later slot
                break
            accepted = 0
            while accepted < k and user.acceptance.random() < alpha:
                accepted += 1
            drafting = k * device.draft_seconds_per_token
            if self.parallel:  # keeps drafting (up to k + 1 tokens) while the block is in flight
                drafting += min(max(0.0, seconds - drafting), (k + 1) * device.draft_seconds_per_token)
            request.energy_j += device.draft_power_w * drafting + device.transmit_power_w * uplink
            user.clock += seconds
            request.generated = min(request.answer_tokens, request.generated + accepted + 1)
            if request.first_token is None:
                request.first_token = user.clock
            if request.remaining == 0:
                request.finished = user.clock
                finished.append(user.queue.popleft())
        return finished

    def run(self, policy: Policy) -> "TwinRun":
        """Play the rest of the scenario (all of it after ``reset``) under ``policy``."""
        while not self.finished:
            self.step(policy.decide(self.observation()))
        return self.outcome()

    def outcome(self) -> "TwinRun":
        return TwinRun(list(self.done), [r for u in self.users for r in u.queue], self.now)

    def summary(self) -> "TwinSummary":
        return self.outcome().summary()


@dataclass
class TwinRun:
    completed: list[Request]
    unfinished: list[Request]
    end_s: float

    def summary(self) -> TwinSummary:
        latencies = np.array([r.latency for r in self.completed]) if self.completed else np.array([np.nan])
        ttfts = np.array([r.ttft for r in self.completed]) if self.completed else np.array([np.nan])
        energy = np.array([r.energy_j for r in self.completed]) if self.completed else np.array([np.nan])
        return TwinSummary(len(self.completed), len(self.unfinished), float(np.mean(latencies)),
                           float(np.percentile(latencies, 95)), float(np.mean(ttfts)), float(np.mean(energy)),
                           sum(r.migrations for r in self.completed), self.mean_time_in_system())

    def mean_time_in_system(self) -> float:
        """Seconds per request from arrival to its end or to the end of the run (NaN when none arrived)."""
        times = [r.latency for r in self.completed] + [self.end_s - r.arrival for r in self.unfinished]
        return float(np.mean(times)) if times else float("nan")
