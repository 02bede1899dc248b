"""The controller's reconcile loop: snapshot etcd, run the pure planner and the
rollout step, commit.

Level-triggered: a watch event on apps, nodes, status, routers or assignments
only wakes the loop; each pass reads the whole desired and actual state again,
and a timer resyncs even when no event arrives. Commits are fenced by the
leader key, and app changes by the app's mod revision.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from controller import rollout as ro
from controller.leader import Leadership
from controller.reconcile import Observed, Plan, Release, plan_assignments
from paas import store as keys
from paas.model import AppSpec, Assignment, Node
from paas.passes import run_passes, wake_on_changes
from paas.store import Delete, Entry, Put, Store, StoreUnavailable

log = logging.getLogger(__name__)
RESYNC_SECONDS = 2.0
TXN_OPS = 100          # etcd refuses a transaction of more than 128 operations (--max-txn-ops)
LOG_AT_MOST = 20
RESCHEDULE_AFTER = 5    # restarts of one replica on one node before it is placed on another


def _plan_ops(plan: Plan) -> list[Put | Delete]:
    ops: list[Put | Delete] = [Put(keys.assignment_key(a.node, a.id), a.to_dict()) for a in plan.create + plan.drain]
    return ops + [Delete(keys.assignment_key(a.node, a.id)) for a in plan.delete]


class ReleaseCache:
    """A release's image, env and spec never change once written: read each once."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[tuple[str, int], Release] = {}

    async def get(self, app: str, number: int) -> Release | None:
        cached = self._cache.get((app, number))
        if cached is None:
            entry = await self.store.get(keys.release_key(app, number))
            if entry is None:
                return None
            cached = self._cache[(app, number)] = release_from_value(app, entry.value)
        return cached


def release_from_value(app: str, value: dict) -> Release:
    return Release(app=app, number=value["number"], image=value["image"],
                   spec=AppSpec.from_dict(value["spec"]), env=value.get("env", {}))


@dataclass
class Snapshot:
    apps: dict[str, Entry]
    releases: dict[str, Release]
    nodes: dict[str, Node]
    assignments: list[Assignment]
    statuses: dict[str, dict[str, Any]]
    observed: Observed
    rollouts: dict[str, Entry]


def observe(assignments: list[Assignment], statuses: dict[str, dict], routers: list[dict]) -> Observed:
    """Available: healthy, and for a routed process, served by every live router."""
    routed_by_all, routed_by_any = set(), set()
    for a in assignments:
        seen = [a.id in r.get("routes", {}).get(a.app, []) for r in routers]
        if seen and all(seen):
            routed_by_all.add(a.id)
        if any(seen):
            routed_by_any.add(a.id)
    available = {a.id for a in assignments if statuses.get(a.id, {}).get("healthy")
                 and (a.port is None or a.id in routed_by_all)}
    crashing = {a.id for a in assignments if statuses.get(a.id, {}).get("restarts", 0) >= RESCHEDULE_AFTER
                and a.id not in available}
    return Observed(available=frozenset(available), routed=frozenset(routed_by_any),
                    crashing=frozenset(crashing))


class Reconciler:
    def __init__(self, store: Store, leadership: Leadership):
        self.store, self.leadership = store, leadership
        self.releases = ReleaseCache(store)
        self.wakeup = asyncio.Event()
        self.pending_written: dict[str, dict] = {}
        self.seen_written: set[str] = set()
        self.draining: list[Assignment] = []

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for kind in ("apps", "nodes", "status", "assignments", "routers"):
                tg.create_task(wake_on_changes(self.store, keys.prefix(kind), self.wakeup))
            tg.create_task(run_passes(self._reconcile_if_leader, self.wakeup, self.next_pass_in,
                                      expected=(StoreUnavailable,)))

    async def _reconcile_if_leader(self) -> None:
        if self.leadership.is_leader:
            await self.reconcile_once()

    def next_pass_in(self) -> float:
        """The resync period, or sooner when a draining replica's grace ends (no event says so)."""
        ends = [a.draining_since + a.drain - time.time() for a in self.draining]
        return max(0.05, min([RESYNC_SECONDS, *ends]))

    async def snapshot(self) -> Snapshot:
        apps = {e.value["spec"]["name"]: e for e in (await self.store.list(keys.prefix("apps")))[0].values()}
        releases = {}
        for name, entry in apps.items():
            release = await self.releases.get(name, entry.value["release"])
            if release is not None:
                releases[name] = release
        drained = {e.key.rsplit("/", 1)[1] for e in (await self.store.list(keys.prefix("drains")))[0].values()}
        nodes = {n.name: dataclasses.replace(n, draining=n.name in drained)
                 for n in map(Node.from_dict, await self.store.values(keys.prefix("nodes"))) if "worker" in n.roles}
        assignments = [Assignment.from_dict(v) for v in await self.store.values(keys.prefix("assignments"))]
        statuses = {s["id"]: s for s in await self.store.values(keys.prefix("status"))}
        routers = await self.store.values(keys.prefix("routers"))
        rollouts = {e.key.rsplit("/", 1)[1]: e for e in (await self.store.list(keys.prefix("rollouts")))[0].values()}
        return Snapshot(apps, releases, nodes, assignments, statuses, observe(assignments, statuses, routers),
                        rollouts)

    async def reconcile_once(self) -> Plan | None:
        snap = await self.snapshot()
        await self._remember_nodes(snap.nodes)
        missing = {a.node for a in snap.assignments} - set(snap.nodes)
        if missing and self.leadership.leader_for() < self.leadership.ttl + 1:
            # a new leader gives agents one lease TTL to show up before it calls their nodes lost
            log.info("waiting for nodes %s to register before rescheduling", ", ".join(sorted(missing)))
            return None
        if await self._advance_rollouts(snap):
            return None   # an app changed release: plan from a fresh snapshot next pass
        self.draining = [a for a in snap.assignments if a.draining_since is not None]
        scale = {name: e.value.get("scale", {}) for name, e in snap.apps.items()}
        # in a thread: planning a large cluster takes seconds, and the event loop must
        # keep renewing the leader lease meanwhile
        plan = await asyncio.to_thread(plan_assignments, snap.releases, snap.nodes, snap.assignments,
                                       snap.observed, time.time(), lambda: secrets.token_hex(2), scale)
        if not plan.empty:
            await self.commit_plan(plan)
        self.draining += plan.drain
        await self._write_pending(plan, snap.releases)
        return plan

    async def _remember_nodes(self, nodes: dict[str, Node]) -> None:
        """Nodes seen once are remembered (no lease), so `paas nodes` can show a lost one."""
        for name in set(nodes) - self.seen_written:
            n = nodes[name]
            await self.store.put(keys.seen_node_key(name), {"name": name, "address": n.address,
                                                            "roles": list(n.roles), "first_seen": time.time()})
            self.seen_written.add(name)

    async def commit_plan(self, plan: Plan) -> bool:
        """Write a plan in transactions fenced by the leader key. etcd takes at most 128
        operations a transaction, so a large plan goes in chunks: a pass cut short by a
        lost leadership leaves a consistent part applied, and the next leader plans the rest."""
        ops = await asyncio.to_thread(_plan_ops, plan)
        for start in range(0, len(ops), TXN_OPS):
            if not await self.store.commit(ops[start:start + TXN_OPS], expect=self.leadership.fence()):
                log.warning("lost leadership while committing; the rest of the plan is dropped")
                return False
        for verb, items in (("assigned", plan.create), ("draining", plan.drain), ("unassigned", plan.delete)):
            for a in items[:LOG_AT_MOST]:
                log.info("%s %s on %s", verb, a.id, a.node)
            if len(items) > LOG_AT_MOST:
                log.info("... and %d more %s", len(items) - LOG_AT_MOST, verb)
        return True

    async def _advance_rollouts(self, snap: Snapshot) -> bool:
        """Step every rolling rollout; revert failed ones and start queued releases.
        True when an app's release pointer moved."""
        moved = False
        now = time.time()
        for name, app_entry in snap.apps.items():
            entry = snap.rollouts.get(name)
            app = app_entry.value
            if entry is not None and ro.is_rolling(entry.value):
                step = ro.rollout_step(entry.value, self._observe_release(snap, name, app), now)
                if step != entry.value:
                    moved |= await self._commit_rollout(name, app_entry, entry, step)
            elif app.get("queued") and (entry is None or not ro.is_rolling(entry.value)):
                moved |= await self._start_queued(name, app_entry, entry, now)
        return moved

    def _observe_release(self, snap: Snapshot, name: str, app: dict) -> ro.ReleaseObservation:
        release = snap.releases.get(name)
        number = app["release"]
        mine = [a for a in snap.assignments if a.app == name]
        new = [a for a in mine if a.release == number and a.draining_since is None]
        desired = 0
        if release is not None:
            desired = sum(app.get("scale", {}).get(p, proc.replicas) for p, proc in release.spec.processes.items())
        failing = [snap.statuses.get(a.id, {"id": a.id, "node": a.node, "state": "pending"})
                   for a in new if a.id not in snap.observed.available]
        return ro.ReleaseObservation(desired=desired, available=sum(a.id in snap.observed.available for a in new),
                                     old_left=len(mine) - len(new), failing=failing)

    async def _commit_rollout(self, name: str, app_entry: Entry, entry: Entry, step: dict) -> bool:
        ops: list[Put | Delete] = [Put(keys.rollout_key(name), step)]
        expect = {**self.leadership.fence(), keys.app_key(name): app_entry.mod_revision,
                  keys.rollout_key(name): entry.mod_revision}
        reverted = step["phase"] == ro.ROLLED_BACK
        if reverted:
            ops.append(Put(keys.app_key(name), {**app_entry.value, "release": step["previous"],
                                                "updated": time.time()}))
        if step["phase"] != ro.ROLLING:
            ops += await self._outcome_ops(name, step)
        if await self.store.commit(ops, expect=expect):
            log.info("rollout of %s v%s: %s%s", name, step["release"], step["phase"],
                     f" ({step['reason']})" if step.get("reason") else "")
            return reverted
        return False

    async def _outcome_ops(self, name: str, step: dict) -> list[Put]:
        entry = await self.store.get(keys.release_key(name, step["release"]))
        if entry is None:
            return []
        outcome = {ro.DONE: "deployed", ro.ROLLED_BACK: f"failed, rolled back to v{step['previous']}",
                   ro.FAILED: "failed"}[step["phase"]]
        if step.get("reason"):
            outcome += f": {step['reason']}"
        return [Put(entry.key, {**entry.value, "outcome": outcome})]

    async def _start_queued(self, name: str, app_entry: Entry, entry: Entry | None, now: float) -> bool:
        app = app_entry.value
        release = await self.releases.get(name, app["queued"])
        if release is None:
            return False
        rollout = ro.start_rollout(app["queued"], app["release"], release.spec.rollout.progress_deadline, now)
        ops = [Put(keys.app_key(name), {**app, "release": app["queued"], "queued": None, "updated": now}),
               Put(keys.rollout_key(name), rollout)]
        expect = {**self.leadership.fence(), keys.app_key(name): app_entry.mod_revision,
                  keys.rollout_key(name): entry.mod_revision if entry else 0}
        if await self.store.commit(ops, expect=expect):
            log.info("rollout of %s v%s started (was queued)", name, app["queued"])
            return True
        return False

    async def _write_pending(self, plan: Plan, releases: dict[str, Release]) -> None:
        """Why replicas wait for a node, for `paas ps` and `paas status`."""
        for app in set(releases) | set(self.pending_written):
            pending = dict(plan.pending.get(app, {}))
            if self.pending_written.get(app) == pending:
                continue
            if app in releases:
                await self.store.put(keys.scheduling_key(app), {"pending": pending})
                self.pending_written[app] = pending
            else:
                await self.store.delete(keys.scheduling_key(app))
                self.pending_written.pop(app, None)
