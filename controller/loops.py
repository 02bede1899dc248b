"""The controller's reconcile loop: snapshot etcd, run the pure planner, commit.

Level-triggered: a watch event on apps, nodes or status only wakes the loop;
each pass reads the whole desired and actual state again, and a timer resyncs
even when no event arrives. Commits are fenced by the leader key.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from controller.leader import Leadership
from controller.reconcile import Plan, Release, plan_assignments
from paas import store as keys
from paas.model import AppSpec, Assignment, Node
from paas.store import Delete, Put, Store, StoreUnavailable

log = logging.getLogger(__name__)
RESYNC_SECONDS = 2.0


class ReleaseCache:
    """Releases never change once written, so each is read from etcd once."""

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


class Reconciler:
    def __init__(self, store: Store, leadership: Leadership):
        self.store, self.leadership = store, leadership
        self.releases = ReleaseCache(store)
        self.wakeup = asyncio.Event()
        self.pending_written: dict[str, dict] = {}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for kind in ("apps", "nodes", "status", "assignments"):
                tg.create_task(self._watch(keys.prefix(kind)))
            tg.create_task(self._forever())

    async def _watch(self, prefix: str) -> None:
        async for _ in self.store.watch(prefix):
            self.wakeup.set()

    async def _forever(self) -> None:
        while True:
            try:
                if self.leadership.is_leader:
                    await self.reconcile_once()
            except StoreUnavailable as e:
                log.warning("%s", e)
            except Exception:
                log.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_SECONDS):
                    await self.wakeup.wait()
            self.wakeup.clear()

    async def snapshot(self) -> tuple[dict[str, Release], dict[str, Node], list[Assignment], set[str]]:
        apps = await self.store.values(keys.prefix("apps"))
        releases = {}
        for app in apps:
            name = app["spec"]["name"]
            release = await self.releases.get(name, app["release"])
            if release is not None:
                releases[name] = release
        nodes = {n.name: n for n in map(Node.from_dict, await self.store.values(keys.prefix("nodes")))
                 if "worker" in n.roles}
        assignments = [Assignment.from_dict(v) for v in await self.store.values(keys.prefix("assignments"))]
        healthy = {s["id"] for s in await self.store.values(keys.prefix("status")) if s.get("healthy")}
        return releases, nodes, assignments, healthy

    async def reconcile_once(self) -> Plan | None:
        releases, nodes, assignments, healthy = await self.snapshot()
        missing = {a.node for a in assignments} - set(nodes)
        if missing and self.leadership.leader_for() < self.leadership.ttl + 1:
            # a new leader gives agents one lease TTL to show up before it calls their nodes lost
            log.info("waiting for nodes %s to register before rescheduling", ", ".join(sorted(missing)))
            return None
        plan = plan_assignments(releases, nodes, assignments, healthy, suffix=lambda: secrets.token_hex(2))
        if not plan.empty:
            ops = [Put(keys.assignment_key(a.node, a.id), a.to_dict()) for a in plan.create]
            ops += [Delete(keys.assignment_key(a.node, a.id)) for a in plan.delete]
            if await self.store.commit(ops, expect=self.leadership.fence()):
                for a in plan.create:
                    log.info("assigned %s to %s", a.id, a.node)
                for a in plan.delete:
                    log.info("unassigned %s from %s", a.id, a.node)
            else:
                log.warning("lost leadership while committing; plan dropped")
        await self._write_pending(plan, releases)
        return plan

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
