"""The digital twin batched: many episodes played at once, numpy over environments × users, for training
(``batch_game.py``; bench/twin_speed.py measures it).

It plays ``DigitalTwin``'s model (simulator.py) for the decisions the draft-length game makes — each user's edge and
draft length, equal shares on every edge, the controller's share floor — on the same edge model
(tandem/edge_model.py: every edge of every environment solved in one fixed-point pass), the same rounds through the
slot, prefills and migrations, outages and energy.  The environments of a batch have the same users and edges
(one scenario), each its own channel trace, arrival process, and seed.

Two things differ from ``DigitalTwin`` on purpose, neither in distribution:

- a round's acceptance is one uniform draw: the drafted tokens accepted before the first rejection are geometric
  (G ≥ j with probability α^j), so a k-token block accepts min(k, G) and psd's speculation survives when G > k —
  ``DigitalTwin`` draws token by token from each user's own stream (which pairs draws across policies, what
  evaluation needs and training does not);
- every request of an episode is drawn in a few vectorised calls (the same arrival process and lengths).

So a batched episode is not a replay of a ``DigitalTwin`` one, except where nothing is random:
tests/unit/test_batch_twin.py checks that the two agree exactly when every token is accepted or none is (the
requests handed over), and on average otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.estimator import BITS_DOWN_PER_ROUND, BITS_UP_PER_TOKEN
from controller.twin.scenario import Scenario, ScenarioError
from controller.twin.simulator import DOWN, UP, Request, SlotClock
from tandem.edge_model import Rounds, group_max, group_sums, round_given, solve_rounds, steps_between_services
from tandem.profiles import HardwareProfile
from tandem.shares import MIN_SHARE
from tandem.trace_format import ChannelTrace


# Each episode's random streams, from its seed: its requests, and (for the batch) the acceptance draws.
REQUEST_STREAM, ACCEPTANCE_STREAM = 1, 2


@dataclass
class Requests:
    """Every request of the batch (flat over environments), and each user's queue of them."""

    env: np.ndarray  # [R] the environment
    user: np.ndarray  # [R] the user's position in the scenario's users
    arrival: np.ndarray  # [R] seconds
    arrival_slot: np.ndarray  # [R] the slot it joins its user's queue at the start of
    prompt: np.ndarray  # [R] tokens
    answer: np.ndarray  # [R] tokens
    queue: np.ndarray  # [N·U, Q] each user's requests in order (−1 past its last)
    generated: np.ndarray = field(init=False)  # [R] tokens so far
    started: np.ndarray = field(init=False)  # [R] NaN until started
    first_token: np.ndarray = field(init=False)
    finished: np.ndarray = field(init=False)
    edge: np.ndarray = field(init=False)  # [R] position of the edge holding its context (−1: nowhere yet)
    migrations: np.ndarray = field(init=False)
    energy_j: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        count = len(self.env)
        self.generated = np.zeros(count, dtype=np.int64)
        self.started, self.first_token, self.finished = (np.full(count, np.nan) for _ in range(3))
        self.edge = np.full(count, -1, dtype=np.int64)
        self.migrations = np.zeros(count, dtype=np.int64)
        self.energy_j = np.zeros(count)

    @property
    def remaining(self) -> np.ndarray:
        return self.answer - self.generated


def draw_requests(scenarios: list[Scenario], users: int, slot_s: float, seeds: list[int]) -> Requests:
    """Each environment's requests from its scenario's arrival process and lengths, in a few vectorised draws."""
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ("env", "user", "arrival", "arrival_slot", "prompt",
                                                                 "answer")}
    for env, (scenario, seed) in enumerate(zip(scenarios, seeds)):
        rng = np.random.default_rng([seed, REQUEST_STREAM])
        arrivals, duration = scenario.arrivals, scenario.duration_slots
        if arrivals.kind == "once":
            at_slot = int(arrivals.at_s // slot_s)
            user = np.arange(users) if at_slot < duration else np.zeros(0, dtype=int)
            arrival, slot = np.full(len(user), arrivals.at_s), np.full(len(user), at_slot)
        else:
            counts = rng.poisson(arrivals.rate_per_user_s * slot_s, size=(duration, users))
            slot, user = np.nonzero(counts)
            slot, user = np.repeat(slot, counts[slot, user]), np.repeat(user, counts[slot, user])
            arrival = (slot + rng.random(len(slot))) * slot_s
            if arrivals.until_s is not None:
                keep = arrival < arrivals.until_s
                user, arrival, slot = user[keep], arrival[keep], slot[keep]
        columns["env"].append(np.full(len(user), env))
        columns["user"].append(user)
        columns["arrival"].append(arrival)
        columns["arrival_slot"].append(slot)
        columns["prompt"].append(_lengths(scenario.prompt_tokens, rng, len(user)))
        columns["answer"].append(_lengths(scenario.answer_tokens, rng, len(user)))
    return _table(**{key: np.concatenate(parts) for key, parts in columns.items()}, users=users, envs=len(seeds))


def requests_of(by_slot: list[list[list[Request]]], user_ids: list[int], slot_s: float) -> Requests:
    """The batch's requests from ``DigitalTwin``'s (one list of requests per slot, per environment): to play what
    a ``DigitalTwin`` plays."""
    position = {user: index for index, user in enumerate(user_ids)}
    rows = [(env, position[r.user], r.arrival, slot, r.prompt_tokens, r.answer_tokens)
            for env, slots in enumerate(by_slot) for slot, requests in enumerate(slots) for r in requests]
    columns = [np.array(column) for column in zip(*rows)] if rows else [np.zeros(0)] * 6
    return _table(*columns, users=len(user_ids), envs=len(by_slot))


def _lengths(count, rng: np.random.Generator, size: int) -> np.ndarray:
    return np.full(size, count.value) if count.kind == "fixed" else rng.integers(count.low, count.high + 1, size)


def _table(env, user, arrival, arrival_slot, prompt, answer, users: int, envs: int) -> Requests:
    order = np.lexsort((arrival, user, env))  # each user's requests by arrival
    env, user, arrival = env[order].astype(int), user[order].astype(int), arrival[order].astype(float)
    owner = env * users + user
    count = np.bincount(owner, minlength=envs * users)
    queue = np.full((envs * users, max(int(count.max(initial=0)), 1)), -1, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    queue[owner, np.arange(len(owner)) - first[owner]] = np.arange(len(owner))
    return Requests(env, user, arrival, arrival_slot[order].astype(np.int64), prompt[order].astype(np.int64),
                    answer[order].astype(np.int64), queue)


@dataclass(frozen=True)
class Slot:
    """What the environments show at the start of a slot (arrays over environments × users, flat: N·U)."""

    se_up: np.ndarray  # [N·U, E] bit/s/Hz to each edge (0: outage)
    se_down: np.ndarray  # [N·U, E]
    current: np.ndarray  # [N·U] each user's request in progress or queued first (−1: none)
    pending: np.ndarray  # [N·U] tokens it has left (0: idle)
    context: np.ndarray  # [N·U] prompt + committed tokens
    context_edge: np.ndarray  # [N·U] position of the edge holding its context (−1: nowhere)

    @property
    def busy(self) -> np.ndarray:
        return self.current >= 0


class BatchTwin(SlotClock):
    def __init__(self, scenarios: list[Scenario], traces: list[ChannelTrace], profile: HardwareProfile) -> None:
        """One scenario and one trace per environment; the scenarios differ in their arrival process at most."""
        if not scenarios or len(scenarios) != len(traces):
            raise ScenarioError("a batch needs one scenario and one trace per environment")
        shared = {key: value for key, value in scenarios[0].model_dump().items() if key not in ("arrivals", "name")}
        for scenario, trace in zip(scenarios, traces):
            if {key: value for key, value in scenario.model_dump().items() if key in shared} != shared:
                raise ScenarioError("the scenarios of a batch may differ in their arrivals only")
            scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
        if len({trace.se.shape[1] for trace in traces}) != 1 or len({trace.slot_s for trace in traces}) != 1:
            raise ScenarioError("the traces of a batch need the same number of slots and slot length")
        self.scenarios, self.profile = scenarios, profile
        self.scenario = scenario = scenarios[0]
        self.envs, self.users, self.edges = len(scenarios), len(scenario.user_ids()), len(scenario.edges)
        self.slot_s = traces[0].slot_s
        self.parallel = scenario.mode == "psd"
        users, edges = np.array(scenario.user_ids()), np.array([edge.id for edge in scenario.edges])
        # [N, 2, S, U, E]: each environment's channel, its users and edges only (traces are shared, not copied
        # per environment, when environments play the same one).
        unique = {id(trace): trace for trace in traces}
        stacked = np.stack([trace.se[:, :, users][..., edges] for trace in unique.values()])
        self._se = stacked
        self._trace_of = np.array([list(unique).index(id(trace)) for trace in traces])
        self.bandwidth = np.stack([np.asarray(trace.metadata.edge_bandwidth_hz, dtype=float)[edges]
                                   for trace in traces])
        self.compute_scale = np.array([edge.compute_scale for edge in scenario.edges], dtype=float)
        self.step_tokens = np.array([edge.step_tokens for edge in scenario.edges], dtype=float)
        self.env_of = np.repeat(np.arange(self.envs), self.users)  # [N·U]
        self.slot, self.requests = 0, None

    # -- the episode -------------------------------------------------------------------------------------------

    def reset(self, seeds: list[int], requests: Requests | None = None) -> Slot:
        """New episodes, one per seed (``requests``: play these instead of drawing them)."""
        if len(seeds) != self.envs:
            raise ValueError(f"{self.envs} seeds are needed, got {len(seeds)}")
        self.requests = requests or draw_requests(self.scenarios, self.users, self.slot_s, seeds)
        self.rng = np.random.default_rng([*seeds, ACCEPTANCE_STREAM])
        self.slot = 0
        self.head = np.zeros(self.envs * self.users, dtype=np.int64)  # each user's first unfinished request
        self.clock = np.zeros(self.envs * self.users)  # when each user's next round may start
        self._observed: Slot | None = None
        return self.observe()

    def _current(self) -> np.ndarray:
        queue = self.requests.queue
        index = queue[np.arange(len(queue)), np.minimum(self.head, queue.shape[1] - 1)]
        index = np.where(self.head < queue.shape[1], index, -1)
        arrived = np.zeros(len(index), dtype=bool)
        arrived[index >= 0] = self.requests.arrival_slot[index[index >= 0]] <= self.slot
        return np.where(arrived, index, -1)

    def observe(self) -> Slot:
        """The start of the current slot (built once per slot)."""
        if self._observed is not None and self._observed_slot == self.slot:
            return self._observed
        trace_slot = self.slot % self._se.shape[2]
        se = self._se[self._trace_of, :, trace_slot]  # [N, 2, U, E]
        current = self._current()
        has = current >= 0
        pending, context, edge = np.zeros(len(current), dtype=np.int64), np.zeros(len(current), dtype=np.int64), \
            np.full(len(current), -1, dtype=np.int64)
        r = self.requests
        pending[has] = r.remaining[current[has]]
        context[has] = r.prompt[current[has]] + r.generated[current[has]]
        edge[has] = r.edge[current[has]]
        self._observed = Slot(se[:, UP].reshape(-1, self.edges), se[:, DOWN].reshape(-1, self.edges), current,
                              pending, context, edge)
        self._observed_slot = self.slot
        return self._observed

    # -- shares and service ------------------------------------------------------------------------------------

    def groups(self, association: np.ndarray) -> np.ndarray:
        """[N·U] each user's (environment, edge) as one id in 0..N·E−1."""
        return self.env_of * self.edges + association

    def equal_shares(self, association: np.ndarray) -> np.ndarray:
        """[N·U] each user's share of its edge's bandwidth and compute when every edge splits them equally."""
        groups = self.groups(association)
        return 1.0 / group_sums(groups, np.ones(len(groups)), self.envs * self.edges)[groups]

    def floored_shares(self, association: np.ndarray, busy: np.ndarray) -> np.ndarray:
        """Equal shares with the controller's floor under busy members (controller/share_floor.py: a busy member
        keeps at least min(floor, 1 − MIN_SHARE × idle members) / busy members of its edge)."""
        share, floor = self.equal_shares(association), self.scenario.share_floor
        if floor <= 0:
            return share
        groups, count = self.groups(association), self.envs * self.edges
        busy_members = group_sums(groups, busy.astype(float), count)[groups]
        idle_members = group_sums(groups, (~busy).astype(float), count)[groups]
        least = np.minimum(floor, 1.0 - MIN_SHARE * idle_members) / np.maximum(busy_members, 1.0)
        return np.where(busy, np.maximum(share, least), share)

    def link(self, rows: np.ndarray, association: np.ndarray, draft_length: np.ndarray,
             share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(comm, per-token upload) of the users at ``rows`` on their edges: a block of ``draft_length`` tokens up
        and a verdict down at their ``share`` of the slot's link, plus the rtt; a drafted token's upload."""
        observed, edge = self.observe(), association[rows]
        bandwidth = share[rows] * self.bandwidth[self.env_of[rows], edge]
        se_up, se_down = observed.se_up[rows, edge], observed.se_down[rows, edge]
        per_token = BITS_UP_PER_TOKEN / (bandwidth * se_up)
        return draft_length[rows] * per_token + BITS_DOWN_PER_ROUND / (bandwidth * se_down) + self.scenario.rtt_s, \
            per_token

    def step_seconds(self, edge: np.ndarray, blocks: np.ndarray, longest: np.ndarray) -> np.ndarray:
        """T(m, k) of steps on the edges at positions ``edge`` (EdgeTiming.step_seconds, element-wise)."""
        profile = self.profile.edge
        return profile.block_seconds(longest) * profile.relative_time(blocks) / self.compute_scale[edge]

    def rounds(self, rows: np.ndarray, association: np.ndarray, draft_length: np.ndarray, share: np.ndarray,
               comm: np.ndarray) -> Rounds:
        """The edge model's steady state of the users at ``rows`` (busy and reachable; ``comm``: their ``link``),
        each edge's users at ``rows`` sharing it: ``edge_rounds`` of every edge of every environment at once."""
        groups, count = self.groups(association)[rows], self.envs * self.edges
        k, edge = draft_length[rows].astype(float), association[rows]
        token = np.full(len(rows), self.profile.device.draft_seconds_per_token)
        steps = steps_between_services(k + 1, share[rows], np.tile(self.step_tokens, self.envs), groups)
        fit = group_sums(groups, 1.0 / steps, count)[groups]
        longest = group_max(groups, k, count)[groups]
        hit = self.profile.acceptance.per_token ** (k + 1)
        return solve_rounds(lambda m: self.step_seconds(edge, m, longest),
                            lambda r: group_sums(groups, 1.0 / r, count)[groups], fit, steps, k * token, token,
                            comm, hit, self.parallel)

    def reachable(self, association: np.ndarray) -> np.ndarray:
        """[N·U] whether each user's link to its edge carries anything this slot."""
        observed, rows = self.observe(), np.arange(self.envs * self.users)
        return (observed.se_up[rows, association] > 0) & (observed.se_down[rows, association] > 0)

    # -- the slot ------------------------------------------------------------------------------------------------

    def step(self, association: np.ndarray, draft_length: np.ndarray) -> None:
        """Play the slot: each user ([N·U]) on the edge at position ``association``, drafting ``draft_length``
        (up to the longest the device drafts) with the floored equal shares."""
        observed = self.observe()
        busy = observed.busy
        share = self.floored_shares(association, busy)
        full = np.clip(draft_length, 1, self.scenario.longest_draft).astype(np.int64)
        served = np.flatnonzero(busy & self.reachable(association))
        remote, cycle, blocks, per_token_up = (np.zeros(len(busy)) for _ in range(4))
        if len(served):
            comm, per_token_up[served] = self.link(served, association, full, share)
            state = self.rounds(served, association, full, share, comm)
            remote[served], cycle[served], blocks[served] = state.remote_s, state.cycle_s, state.blocks_per_step
        service = np.zeros(len(busy), dtype=bool)
        service[served] = True
        self._play(observed.current.copy(), association, full, share, service, remote, cycle, blocks, per_token_up)
        self.slot += 1

    def _play(self, current, association, full, share, service, remote_full, cycle, blocks, per_token_up) -> None:
        r, device, alpha = self.requests, self.profile.device, self.profile.acceptance.per_token
        t_draft = device.draft_seconds_per_token
        begin, end = self.now, self.now + self.slot_s
        self.clock = np.maximum(self.clock, begin)
        edge_prefill = self.profile.edge.prefill_seconds_per_token / self.compute_scale
        context_bits = 8 * self.scenario.bytes_per_prompt_token
        while True:
            users = np.flatnonzero((self.clock < end) & (current >= 0))
            if not len(users):
                return
            request = current[users]
            fresh = np.isnan(r.started[request])
            r.started[request[fresh]] = np.maximum(self.clock[users[fresh]], r.arrival[request[fresh]])
            self.clock[users[fresh]] = r.started[request[fresh]]
            live = self.clock[users] < end
            outage = live & ~service[users]
            self.clock[users[outage]] = end  # nothing reaches the edge this slot
            live &= service[users]
            users, request = users[live], request[live]
            edge = association[users]
            moving = r.edge[request] != edge  # first prefill, or a migration: the context is (re)built there
            self._prefill(users[moving], request[moving], edge[moving], share, context_bits, edge_prefill)
            users, request = users[~moving], request[~moving]
            k_full = full[users]
            k = np.maximum(1, np.minimum(k_full, r.remaining[request] - 1))
            leading = self._accepted_before_rejection(len(users), alpha)
            accepted, survives = np.minimum(k, leading), leading > k
            drafting = k * t_draft
            remote = remote_full[users] - (k_full - k) * per_token_up[users]
            alone = (k < k_full) & (blocks[users] <= 1 + 1e-9)  # a shorter block shortens a step of its own only
            edge = association[users]
            remote -= np.where(alone, self.step_seconds(edge, 1.0, k_full) - self.step_seconds(edge, 1.0, k), 0.0)
            seconds = np.maximum(round_given(drafting, t_draft, remote, survives, self.parallel), cycle[users])
            if self.parallel:  # keeps drafting (up to k + 1 tokens) while the block is in flight
                drafting = drafting + np.minimum(remote, (k + 1) * t_draft)
            r.energy_j[request] += device.draft_power_w * drafting + device.transmit_power_w * k * per_token_up[users]
            self.clock[users] += seconds
            r.generated[request] = np.minimum(r.answer[request], r.generated[request] + accepted + 1)
            first = np.isnan(r.first_token[request])
            r.first_token[request[first]] = self.clock[users[first]]
            done = r.remaining[request] == 0
            r.finished[request[done]] = self.clock[users[done]]
            self.head[users[done]] += 1
            current[users[done]] = self._next(users[done])

    def _prefill(self, users, request, edge, share, context_bits, edge_prefill) -> None:
        r, device = self.requests, self.profile.device
        observed = self.observe()
        context = r.prompt[request] + r.generated[request]
        upload = context_bits * context / (share[users] * self.bandwidth[self.env_of[users], edge]
                                           * observed.se_up[users, edge])
        first = r.edge[request] < 0
        device_prefill = np.where(first, device.prefill_seconds_per_token * context, 0.0)
        self.clock[users] += np.maximum(device_prefill, upload + edge_prefill[edge] * context) + self.scenario.rtt_s
        r.energy_j[request] += device.transmit_power_w * upload + device.draft_power_w * device_prefill
        r.migrations[request] += ~first
        r.edge[request] = edge

    def _accepted_before_rejection(self, count: int, alpha: float) -> np.ndarray:
        """G: how many drafted tokens in a row are accepted (P(G >= j) = α^j), a large number for α = 1."""
        if alpha >= 1.0:
            return np.full(count, np.iinfo(np.int32).max, dtype=np.int64)
        if alpha <= 0.0:
            return np.zeros(count, dtype=np.int64)
        uniform = 1.0 - self.rng.random(count)  # in (0, 1]
        return np.floor(np.log(uniform) / np.log(alpha)).astype(np.int64)

    def _next(self, users: np.ndarray) -> np.ndarray:
        """The request each of ``users`` turns to after finishing one: its next queued one, if it has arrived."""
        queue, head = self.requests.queue, self.head[users]
        index = np.where(head < queue.shape[1], queue[users, np.minimum(head, queue.shape[1] - 1)], -1)
        arrived = np.zeros(len(users), dtype=bool)
        arrived[index >= 0] = self.requests.arrival_slot[index[index >= 0]] <= self.slot
        return np.where(arrived, index, -1)

    # -- outcomes ----------------------------------------------------------------------------------------------

    def time_in_system(self) -> np.ndarray:
        """[N] each environment's mean seconds per request from arrival to its end or to now (NaN: none)."""
        r = self.requests
        arrived = r.arrival_slot < self.slot  # in the system during a slot played
        end = np.where(np.isnan(r.finished), self.now, r.finished)
        total = np.bincount(r.env[arrived], weights=(end - r.arrival)[arrived], minlength=self.envs)
        count = np.bincount(r.env[arrived], minlength=self.envs)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count
