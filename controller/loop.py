"""The controller's slot loop: probe, observe, decide, check, persist, push.

Every slot: probe each edge's load (an edge failing its probes for ``failover_after_s`` leaves the topology, so
the policy moves its users: a failover), build the observation from the newest telemetry, run the active policy,
check the decision against the share rules, raise every member of an edge to the share floor
(controller/share_floor.py: what bounds how far one user's reports can move the others), give it the next version,
persist it, and push it — association and bandwidth share to the link emulator, compute shares to each edge,
allocations to the devices' watches.  A policy that fails or decides something invalid leaves the last decision in
force (and is counted); a component that misses a push gets the full state again with the next slot's version.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from controller.board import AllocationBoard
from controller.clients import Dialer, EdgeClient, LinkEmuClient, PushRefused
from controller.config import ControllerConfig, PolicySpec
from controller.metrics import ControllerMetrics
from controller.policies import make_policy
from controller.policies.base import Decision, Observation, Policy
from controller.share_floor import with_share_floor
from controller.state import ControllerState, VersionedDecision
from controller.telemetry import Telemetry
from tandem.shares import MAX_VERSION
from tandem.tls import Transport

log = logging.getLogger(__name__)
DECISION_BUDGET_S = 30.0  # the least a policy is given before the slot goes without a new decision


class ControlLoop:
    def __init__(self, config: ControllerConfig, state: ControllerState, policy: PolicySpec,
                 metrics: ControllerMetrics, transport: Transport | None = None,
                 admin_token: str | None = None) -> None:
        """``transport``: how the controller reaches edges and the link emulator (plaintext when None);
        ``admin_token``: sent on its control calls (their servers accept it in place of a controller certificate)."""
        self.config = config
        self.state = state
        self.metrics = metrics
        self.telemetry = Telemetry(config)
        self.board = AllocationBoard()
        dial = Dialer(transport or Transport(), admin_token)
        self.edges = {edge.id: EdgeClient(edge.id, edge.address, dial) for edge in config.edges}
        self.linkemu = LinkEmuClient(config.linkemu, dial) if config.linkemu else None
        self.policy_spec = policy
        self.policy = self.make(policy)
        stored = state.load_decision()
        # Versions only grow (edges refuse older ones), even when the stored decision no longer fits the topology.
        self.version = stored.version if stored else 0
        self.latest = stored if stored and self._fits(stored) else None
        if stored and self.latest is None:
            log.warning("the stored decision (version %d) names users or edges outside the topology: not resumed",
                        stored.version)
        self.slot = stored.decision.slot + 1 if stored else 0
        self._deciding: asyncio.Future | None = None  # a policy still running past its slot
        self.decision_seconds = 0.0
        self.estimated_mean_latency = 0.0
        self._association_changed = False
        self._probe_timeout = min(0.5, config.slot_s / 2)
        self._decision_budget = max(10 * config.slot_s, DECISION_BUDGET_S)
        metrics.policy.labels(policy.name).set(1)

    def _fits(self, stored: VersionedDecision) -> bool:
        edges = {edge.id for edge in self.config.edges}
        users = sorted(user.id for user in self.config.users)
        allocations = stored.decision.allocations
        return sorted(a.user for a in allocations) == users and all(a.edge in edges for a in allocations)

    def make(self, spec: PolicySpec) -> Policy:
        """The policy ``spec`` names (ValueError when it cannot be made); a learned one's checkpoint is looked up
        by name in the configured policy directory only.  Loading can take a moment: the admin service calls this
        off the event loop."""
        return make_policy(spec.name, spec.seed, self.config.policy_dir, **spec.params)

    def set_policy(self, spec: PolicySpec, policy: Policy | None = None) -> Policy:
        """Swap the active policy (it decides the next slot) for ``policy``, made from ``spec`` when not given;
        ValueError, and nothing changes, when it cannot be made."""
        policy = policy or self.make(spec)
        self.state.save_policy(spec)
        self.metrics.policy.clear()
        self.metrics.policy.labels(spec.name).set(1)
        self.policy_spec, self.policy = spec, policy
        log.info("policy set: %s %s", spec.name, spec.params or "")
        return policy

    async def run(self) -> None:
        watcher = asyncio.create_task(self.linkemu.watch(self.telemetry.record_measurements)) if self.linkemu else None
        try:
            if self.latest is not None:  # resumed from the state file: let every component reconcile at once
                log.info("resuming from decision version %d (slot %d)", self.latest.version, self.latest.decision.slot)
                await self.push(self.latest)
            while True:
                began = time.monotonic()
                await self.step()
                await asyncio.sleep(max(0.0, began + self.config.slot_s - time.monotonic()))
        finally:
            if watcher is not None:
                watcher.cancel()

    async def step(self) -> None:
        await self.probe_edges()
        try:
            # The acceptance the edges counted was over the blocks of the decision in force.
            drafting = {a.user: a.draft_length for a in self.latest.decision.allocations} if self.latest else None
            observation = self.telemetry.observation(self.slot, drafting)
        except ValueError as error:
            log.error("slot %d: no decision: %s", self.slot, error)
            self.metrics.decision_errors.labels("observation").inc()
            return
        if self._deciding is not None and not self._deciding.done():
            self.metrics.decision_errors.labels("policy-busy").inc()  # still deciding an earlier slot
            return
        began = time.perf_counter()
        # A policy is pure and may take a while (a solver): off the event loop, so the services keep answering,
        # and bounded, so a policy that hangs cannot stop probes, failover and pushes.
        self._deciding = asyncio.ensure_future(asyncio.to_thread(self.policy.decide, observation))
        self._deciding.add_done_callback(lambda done: done.cancelled() or done.exception())  # late ones: read
        try:
            decision = await asyncio.wait_for(asyncio.shield(self._deciding), self._decision_budget)
            decision.check(observation)  # the policy's own decision must be valid: the floor only redistributes
            decision = with_share_floor(decision, self.config.share_floor, self.telemetry.busy_users())
        except asyncio.TimeoutError:
            log.error("slot %d: policy %s took over %.1f s; the last decision stays in force", self.slot,
                      self.policy_spec.name, self._decision_budget)
            self.metrics.decision_errors.labels("policy-timeout").inc()
            return
        except Exception as error:  # a policy is user code: its failure must not stop the control plane
            log.error("slot %d: policy %s failed (%s); the last decision stays in force", self.slot,
                      self.policy_spec.name, error)
            self.metrics.decision_errors.labels("policy").inc()
            return
        self.decision_seconds = time.perf_counter() - began
        self.metrics.decision_seconds.observe(self.decision_seconds)
        self._count_moves(decision)
        # Past whatever an edge holds too (a controller that lost its state must not be refused by the edges).
        held = max((h.load.shares_version for h in self.telemetry.edges.values()
                    if h.load and h.load.shares_version < MAX_VERSION), default=0)
        self.version = max(self.version, held) + 1
        self.latest = VersionedDecision(self.version, time.time(), decision)
        self.state.save_decision(self.latest)
        self.slot += 1
        self._record(observation, decision)
        await self.push(self.latest)

    async def probe_edges(self) -> None:
        loads = await asyncio.gather(*(client.load(self._probe_timeout) for client in self.edges.values()))
        for edge, load in zip(self.edges, loads):
            if self.telemetry.probe_result(edge, load):
                state = "back" if self.telemetry.edges[edge].healthy else "down: its users move"
                log.warning("edge %d %s", edge, state)
            self.metrics.edge_healthy.labels(str(edge)).set(1 if self.telemetry.edges[edge].healthy else 0)

    async def push(self, decision: VersionedDecision) -> None:
        allocations = decision.decision.allocations
        links_follow = True
        if self.linkemu is not None:
            carried = {user for user, _ in self.telemetry.spectral_efficiency}
            try:
                await self.linkemu.assign([a for a in allocations if a.user in carried], self._probe_timeout)
            except PushRefused as error:
                log.error("assignment not applied: %s", error)
                self.metrics.push_errors.labels("linkemu").inc()
                links_follow = False
        healthy = set(self.telemetry.healthy_edges())
        pushes = {edge: client.set_shares(decision.version, {a.user: a.compute_share for a in allocations
                                                             if a.edge == edge}, self._probe_timeout)
                  for edge, client in self.edges.items() if edge in healthy}
        for edge, outcome in zip(pushes, await asyncio.gather(*pushes.values(), return_exceptions=True)):
            if isinstance(outcome, Exception):
                log.error("compute shares not applied on edge %d: %s", edge, outcome)
                self.metrics.push_errors.labels("edge").inc()
        # Devices dial every edge through their radio link, which routes by the emulator's table: while that table
        # lags the decision, devices keep the previous one (the next slot pushes again).
        if links_follow:
            await self.board.publish(decision)

    def _count_moves(self, decision: Decision) -> None:
        before = {a.user: a.edge for a in self.latest.decision.allocations} if self.latest else {}
        self._association_changed = before != {a.user: a.edge for a in decision.allocations}
        for allocation in decision.allocations:
            previous = before.get(allocation.user)
            if previous is None or previous == allocation.edge:
                continue
            failed = previous in self.telemetry.edges and not self.telemetry.edges[previous].healthy
            (self.metrics.failovers if failed else self.metrics.migrations).inc()

    def _record(self, observation: Observation, decision: Decision) -> None:
        self.metrics.version.set(self.latest.version)
        latency = decision.estimated_latency(observation)
        rounds = decision.estimated_round_seconds(observation)
        finite = latency[np.isfinite(latency)]
        self.estimated_mean_latency = float(finite.mean()) if finite.size else float("inf")
        by_user = {a.user: a for a in decision.allocations}
        chosen = [by_user[u.user] for u in observation.users]
        self.metrics.assignment.clear()
        for user, allocation, estimate, round_s in zip(observation.users, chosen, latency, rounds):
            label = str(user.user)
            self.metrics.assignment.labels(label, str(allocation.edge)).set(1)
            self.metrics.bandwidth_share.labels(label).set(allocation.bandwidth_share)
            self.metrics.compute_share.labels(label).set(allocation.compute_share)
            self.metrics.estimated_latency.labels(label).set(estimate)
            self.metrics.estimated_round.labels(label).set(round_s)
            report = self.telemetry.reports.get(user.user)
            if report is not None and report.round_seconds > 0:
                self.metrics.observed_round.labels(label).set(report.round_seconds)
        # One line per slot at DEBUG; at INFO only when the association changed (a structured line either way).
        level = logging.INFO if self._association_changed else logging.DEBUG
        log.log(level, "decision version=%d slot=%d policy=%s seconds=%.4f est_mean_latency_s=%.3f assoc=%s",
                self.latest.version, decision.slot, self.policy_spec.name, self.decision_seconds,
                 self.estimated_mean_latency, ",".join(f"{a.user}:{a.edge}" for a in decision.allocations))

    async def close(self) -> None:
        for client in self.edges.values():
            await client.close()
        if self.linkemu is not None:
            await self.linkemu.close()
