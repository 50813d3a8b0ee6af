"""The digital twin: speculative decoding at the edge, slot by slot, on a channel trace and a hardware profile.

Each slot the twin shows the policy the same kind of observation the controller builds (spectral efficiency per
pair in that slot, each user's pending work, draft speed and acceptance, each edge's bandwidth, step timing and
capacity), applies its decision, and plays every user's rounds through the slot on the one edge model
(tandem/edge_model.py: what the estimator predicts and the edges' pacing runs; ``controller/estimator.py`` turns
it into rounds):

- an edge's users with a request share batched steps: a block waits out the step in flight, then its own
  (remote = uplink + downlink at share × B_e × SE of the slot + rtt + T · (1 + ρ/2)); when their blocks overflow
  the step budget the scheduler's weights (compute shares) divide it and a user's rounds cannot be shorter than
  its steps between services × T; idle users hold nothing;
- a round drafts k tokens (fewer near the end, as the device does: a block longer than remaining − 1 is drafted
  in vain), accepts a truncated-geometric number of them (each with the profile's α) and emits accepted + 1;
  under psd the drafting overlaps the remote part only when the whole block is accepted and the bonus token is
  the one the device drafted on (another draw at α), else the device re-drafts after the verdict;
- a request starts with a prefill (prompt upload, then its prefill in the step of its first block; the draft's
  prefill on the device in parallel), and pays the same again on the new edge when its association changes mid-request
  (lossless migration re-prefills the prompt and every committed token);
- an outage (spectral efficiency 0) stalls the user until a later slot;
- device energy: draft compute (the speculative drafting psd does while a block is in flight included) × draft
  power, plus transmit power × uplink time.

Rounds that start in a slot use that slot's decision, channel and edge load to the end.  Deterministic for a seed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from controller.estimator import BITS_UP_PER_TOKEN, EdgeState, UserState, pair_costs, served
from controller.policies.base import Decision, Observation, Policy
from controller.share_floor import with_share_floor
from controller.twin.scenario import Scenario
from tandem.edge_model import EdgeTiming, Rounds, round_given
from tandem.profiles import HardwareProfile
from tandem.trace_format import ChannelTrace

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
class _Service:
    """What one busy user gets from its edge this slot (a row of the edge's Rounds)."""

    rounds: Rounds
    row: int
    timing: EdgeTiming
    bandwidth_share: float
    uplink_per_token_s: float  # a drafted token's upload at the user's share of the slot's uplink

    @property
    def remote_s(self) -> float:
        return float(self.rounds.remote_s[self.row])

    @property
    def cycle_s(self) -> float:
        return float(self.rounds.cycle_s[self.row])

    def remote_for(self, k: int, full_k: int) -> float:
        """The remote part of a round with a shorter block than the slot was estimated for: a shorter upload, and a
        shorter step only when the block has its steps to itself (others' blocks set the step's longest length)."""
        shorter = (full_k - k) * self.uplink_per_token_s
        if k < full_k and self.rounds.blocks_per_step[self.row] <= 1 + 1e-9:
            shorter += float(self.timing.step_seconds(1, full_k) - self.timing.step_seconds(1, k))
        return self.remote_s - shorter


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


class SlotClock:
    """A twin's time: ``slot`` slots of ``slot_s`` played, out of its scenario's duration."""

    slot: int
    slot_s: float
    scenario: Scenario

    @property
    def now(self) -> float:
        return self.slot * self.slot_s

    @property
    def finished(self) -> bool:
        return self.slot >= self.scenario.duration_slots


class DigitalTwin(SlotClock):
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
        self._observed: Observation | None = None
        self.users = [_User(u, np.random.default_rng(stream)) for u, stream in zip(user_ids,
                                                                                  acceptance.spawn(len(user_ids)))]
        self.done: list[Request] = []
        self._requests = self._draw_requests()
        self._arrivals()
        return self.observation()

    def _trace_slot(self) -> int:
        return (self.slot + self.trace_offset) % self.trace.metadata.num_slots

    def _draw_requests(self) -> list[list[Request]]:
        """Every request of the run, by arrival slot, drawn up front (the same draws, in the same order, whatever
        a policy does: one slot after another, user after user), so an oracle may look ahead (``upcoming``)."""
        arrivals = self.scenario.arrivals
        by_slot: list[list[Request]] = []
        for slot in range(self.scenario.duration_slots):
            begin, end = slot * self.slot_s, (slot + 1) * self.slot_s
            requests = []
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
                requests += [Request(user.index, float(at), self.scenario.prompt_tokens.sample(self.length_rng),
                                     self.scenario.answer_tokens.sample(self.length_rng)) for at in times]
            by_slot.append(requests)
        return by_slot

    def _arrivals(self) -> None:
        """Requests arriving during the current slot join their users' queues."""
        queues = {user.index: user.queue for user in self.users}
        for request in self._requests[self.slot]:
            queues[request.user].append(request)

    @property
    def requests_by_slot(self) -> list[list[Request]]:
        """Every request of the run by arrival slot, drawn at reset (the batched twin replays them in tests)."""
        return self._requests

    def upcoming(self, slots: int) -> list[Request]:
        """The requests arriving in the next ``slots`` slots (after this one): what only an oracle knows."""
        return [request for later in self._requests[self.slot + 1:self.slot + 1 + slots] for request in later]

    def _edge_states(self) -> tuple[EdgeState, ...]:
        meta = self.trace.metadata
        return tuple(EdgeState(edge.id, meta.edge_bandwidth_hz[edge.id],
                               EdgeTiming(self.profile.edge, edge.compute_scale, edge.step_tokens), edge.capacity)
                     for edge in self.edges)

    def _user_state(self, user: _User) -> UserState:
        slot = self._trace_slot()
        se = self.trace.se[:, slot, user.index, :]
        edge_ids = [edge.id for edge in self.edges]
        request = user.current
        return UserState(
            user=user.index, se_up=tuple(float(se[UP, e]) for e in edge_ids),
            se_down=tuple(float(se[DOWN, e]) for e in edge_ids),
            draft_s_per_token=self.profile.device.draft_seconds_per_token,
            acceptance=self.profile.acceptance.per_token, draft_length=self.scenario.draft_length,
            pending_tokens=request.remaining if request else 0, rtt_s=self.scenario.rtt_s,
            edge=edge_ids.index(request.edge) if request and request.edge is not None else None,
            context_tokens=request.prompt_tokens + request.generated if request else 0,
            bits_per_context_token=8 * self.scenario.bytes_per_prompt_token,
            max_draft_length=self.scenario.longest_draft)

    def observation(self) -> Observation:
        """What the controller would see at the start of this slot (built once per slot: the policy and the slot's
        play read the same one)."""
        if self._observed is None or self._observed.slot != self.slot:
            self._observed = Observation(self.slot, self._edge_states(), tuple(self._user_state(u) for u in self.users))
        return self._observed

    def step(self, decision: Decision) -> list[Request]:
        """Play one slot under ``decision``; returns the requests that finished in it."""
        observation = self.observation()
        decision.check(observation)
        busy = [u for u in self.users if u.current is not None]
        # As the controller applies it (busy: what the edges report as users with an open session).
        decision = with_share_floor(decision, self.scenario.share_floor, {u.index for u in busy})
        by_user = {a.user: a for a in decision.allocations}
        service = self._service(observation, busy, by_user)
        begin, end = self.now, self.now + self.slot_s
        finished: list[Request] = []
        for user in busy:
            finished += self._play(user, by_user[user.index], service.get(user.index), begin, end)
        self.done += finished
        self.slot += 1
        if not self.finished:
            self._arrivals()
        return finished

    def _service(self, observation: Observation, busy: list[_User], by_user: dict) -> dict[int, "_Service"]:
        """Each reachable busy user's service this slot, from the edge model over its edge's busy users."""
        if not busy:
            return {}
        chosen = [by_user[user.index] for user in busy]
        observed = {state.user: state for state in observation.users}  # this slot's states, built once
        states = [replace(observed[user.index], draft_length=self._draft_length(allocation))
                  for user, allocation in zip(busy, chosen)]
        costs = pair_costs(states, list(observation.edges))
        position = {e.edge: i for i, e in enumerate(observation.edges)}
        edges = np.array([position[a.edge] for a in chosen])
        b = np.array([a.bandwidth_share for a in chosen])
        c = np.array([a.compute_share for a in chosen])
        reachable = np.isfinite(costs.comm[np.arange(len(busy)), edges])
        result: dict[int, _Service] = {}
        for edge in np.unique(edges):
            rows = np.flatnonzero((edges == edge) & reachable)
            if not len(rows):
                continue
            rounds = served(costs, rows, int(edge), b[rows], c[rows], self.parallel)
            timing = observation.edges[edge].timing
            bandwidth = observation.edges[edge].bandwidth_hz
            for i, row in enumerate(rows):
                uplink = BITS_UP_PER_TOKEN / (b[row] * bandwidth * states[row].se_up[edge])
                result[busy[row].index] = _Service(rounds, i, timing, float(b[row]), float(uplink))
        return result

    def _draft_length(self, allocation) -> int:
        """The block length the device drafts: the policy's, up to the longest the device drafts."""
        return max(1, min(allocation.draft_length, self.scenario.longest_draft))

    def _play(self, user: _User, allocation, service: "_Service | None", begin: float, end: float) -> list[Request]:
        device = self.profile.device
        alpha = self.profile.acceptance.per_token
        bandwidth = float(self.trace.metadata.edge_bandwidth_hz[allocation.edge])
        se_up = float(self.trace.se[UP, self._trace_slot(), user.index, allocation.edge])
        finished = []
        user.clock = max(user.clock, begin)
        while user.clock < end and (request := user.current) is not None:
            if request.started is None:
                request.started = max(user.clock, request.arrival)
                user.clock = request.started
                if user.clock >= end:
                    break
            if service is None:
                user.clock = end  # outage: nothing reaches the edge this slot
                break
            if request.edge != allocation.edge:  # first prefill, or a migration: the context is (re)built there
                context = request.prompt_tokens + request.generated
                upload = 8 * self.scenario.bytes_per_prompt_token * context / (service.bandwidth_share * bandwidth
                                                                               * se_up)
                edge_prefill = float(service.timing.prefill_seconds(context))  # joins its first block's step
                device_prefill = device.prefill_seconds_per_token * context if request.edge is None else 0.0
                user.clock += max(device_prefill, upload + edge_prefill) + self.scenario.rtt_s
                request.energy_j += device.transmit_power_w * upload + device.draft_power_w * device_prefill
                if request.edge is not None:
                    request.migrations += 1
                request.edge = allocation.edge
                continue
            full = self._draft_length(allocation)
            k = max(1, min(full, request.remaining - 1))
            accepted = 0
            while accepted < k and user.acceptance.random() < alpha:
                accepted += 1
            # psd's speculation survives when the block is all accepted and the bonus is the drafted next token.
            survives = accepted == k and user.acceptance.random() < alpha
            drafting = k * device.draft_seconds_per_token
            remote = service.remote_for(k, full)
            seconds = max(float(round_given(drafting, device.draft_seconds_per_token, remote, survives,
                                            self.parallel)), service.cycle_s)
            uplink = k * service.uplink_per_token_s
            if self.parallel:  # keeps drafting (up to k + 1 tokens) while the block is in flight
                drafting += min(remote, (k + 1) * device.draft_seconds_per_token)
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
        """Play the rest of the scenario (all of it after ``reset``) under ``policy``; ValueError first when the
        policy cannot play this scenario."""
        policy.check_scenario(self.scenario)
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
