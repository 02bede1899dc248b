"""The node agent: keeps this host's containers equal to its assignments in etcd.

Level-triggered: every cycle (a watch event on its assignments, or the resync
timer) reads all its assignments and all its containers, plans with the pure
`plan_sync`, and applies. It registers its node under a lease it keeps alive;
status and endpoint keys ride on the same lease, so they vanish with the host.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp

from agent import images, sync
from agent.health import HealthState, after_probe, probe_due, probe_http
from agent.lease import NodeLease
from agent.runtime import Container, DockerRuntime, RuntimeFailed, RuntimeUnavailable
from paas import store as keys
from paas.model import Assignment, Health, Node
from paas.passes import run_passes, wake_on_changes
from paas.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

RESYNC_SECONDS = 1.0
FULL_REWRITE_SECONDS = 30.0
STABLE_AFTER = 30.0   # a replica running this long since its last restart has its backoff reset
IMAGE_GC_SECONDS = 60.0
LOGS_EVERY = 5.0       # how often the last log lines of a failing replica are read again
LOG_LINES = 10
PREVIOUS_LOG_LINES = 50


class NodeAgent:
    def __init__(self, store: Store, runtime: DockerRuntime, node: Node, ttl: int = 5,
                 rng: random.Random | None = None, keep_releases: int = images.KEEP_RELEASES):
        self.store, self.runtime, self.node = store, runtime, node
        self.keep_releases = keep_releases
        self.pulling: dict[str, str] = {}
        self.logs: dict[str, tuple[float, list[str]]] = {}
        self.finished_at: dict[str, float] = {}
        self.assigned: dict[str, Assignment] = {}
        self.previous: dict[str, dict[str, Any]] = {}   # the last dead container of each replica
        self.rng = rng or random.Random()
        self.node_lease = NodeLease(store, node, ttl, self._on_new_lease)
        self.restarts: dict[str, sync.RestartState] = {}
        self.health: dict[str, HealthState] = {}
        self.errors: dict[str, str] = {}
        self.in_flight: dict[str, asyncio.Task] = {}
        self.written: dict[str, Any] = {}
        self.last_full_write = 0.0
        self.wakeup = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.node_lease.run())
                tg.create_task(wake_on_changes(self.store, keys.prefix("assignments", self.node.name), self.wakeup))
                tg.create_task(run_passes(self._sync_if_registered, self.wakeup, lambda: RESYNC_SECONDS,
                                          expected=(StoreUnavailable, RuntimeUnavailable)))
                tg.create_task(self._collect_images_forever())
        finally:
            await self.http.close()

    @property
    def lease(self) -> int | None:
        return self.node_lease.id

    def _on_new_lease(self) -> None:
        self.written.clear()
        self.wakeup.set()

    # -- the sync cycle ----------------------------------------------------------------

    async def _sync_if_registered(self) -> None:
        if self.lease is not None:
            await self.sync_once()

    async def sync_once(self) -> None:
        entries, _ = await self.store.list(keys.prefix("assignments", self.node.name))
        assignments = {a.id: a for a in (Assignment.from_dict(e.value) for e in entries.values())}
        self.assigned = assignments
        listed_at = time.monotonic()
        containers = await self.runtime.list_containers()
        now = time.monotonic()
        by_id = {c.id: c for c in containers}
        for action in sync.plan_sync(assignments, containers, self.restarts, now):
            if self.finished_at.get(action.replica, 0.0) < listed_at:   # else the listing predates our own change
                seen = None if isinstance(action, sync.Create) else by_id.get(action.container_id)
                self._start_action(action, now, seen)
        running = {c.replica: c for c in containers if c.state == "running" and c.replica in assignments}
        await self._probe(assignments, running, now)
        await self._read_failing_logs(assignments, containers, now)
        self._forget(assignments)
        await self._publish(assignments, containers, now)

    def _start_action(self, action: sync.Action, now: float, container: Container | None) -> None:
        replica = action.replica
        task = self.in_flight.get(replica)
        if task is not None and not task.done():
            return
        if isinstance(action, sync.Restart):
            # counted when decided, so a container that will not start still backs off
            self._back_off(replica, now)
        self.in_flight[replica] = asyncio.create_task(self._apply(replica, action, container))

    async def _keep_previous(self, replica: str, dead: Container) -> None:
        """Exit details and last log lines of a dead container, for `paas logs --previous`."""
        logs = await self.runtime.logs(dead.id, PREVIOUS_LOG_LINES)
        self.previous[replica] = {"exit_code": dead.exit_code, "oom_killed": dead.oom_killed,
                                  "finished_at": dead.finished_at, "logs": logs[-PREVIOUS_LOG_LINES:]}

    def _back_off(self, replica: str, now: float) -> None:
        policy = self.assigned[replica].restart if replica in self.assigned else None
        self.restarts[replica] = sync.after_restart(
            self.restarts.get(replica, sync.RestartState()), now, self.rng.random(),
            base=policy.backoff if policy else sync.RESTART_BASE, cap=policy.max_backoff if policy else sync.RESTART_CAP)

    async def _apply(self, replica: str, action: sync.Action, container: Container | None) -> None:
        """`container`: what the listing that decided the action saw of its container."""
        try:
            if isinstance(action, sync.Create):
                log.info("creating %s", replica)
                await self.runtime.create_and_start(
                    action.assignment, lambda text: self.pulling.__setitem__(replica, text))
            elif isinstance(action, sync.Restart):
                log.info("restarting crashed %s", replica)
                if container is not None:
                    await self._keep_previous(replica, container)
                await self.runtime.start(action.container_id)
            else:
                log.info("removing %s: %s", replica, action.reason)
                await self.runtime.remove(action.container_id)
            self.errors.pop(replica, None)
        except (RuntimeFailed, RuntimeUnavailable) as e:
            log.warning("%s: %s", replica, e)
            self.errors[replica] = str(e)
            if isinstance(action, sync.Create):
                self._back_off(replica, time.monotonic())
        finally:
            self.finished_at[replica] = time.monotonic()
            self.pulling.pop(replica, None)
            self.wakeup.set()

    async def _probe(self, assignments: dict[str, Assignment], running: dict[str, Container],
                     now: float) -> None:
        due = []
        for replica, c in running.items():
            a = assignments[replica]
            if a.port is None or c.host_port is None:
                continue
            health = a.health or Health()
            if probe_due(self.health.get(replica, HealthState()), health, now):
                due.append((replica, c, health))
        results = await asyncio.gather(*(
            probe_http(self.http, self.node.address, c.host_port, h.path, h.timeout) for _, c, h in due))
        for (replica, _, health), result in zip(due, results, strict=True):
            self.health[replica] = after_probe(self.health.get(replica, HealthState()), result, health, now)
        for replica in list(self.health):
            if replica not in running:
                del self.health[replica]   # a stopped container starts over as unhealthy

    async def _read_failing_logs(self, assignments: dict[str, Assignment], containers: list[Container],
                                 now: float) -> None:
        """Keep the last lines of replicas that exited or fail their probe, so
        `paas deploy` can show why a release was rolled back."""
        for c in containers:
            a = assignments.get(c.replica)
            if a is None:
                continue
            h = self.health.get(c.replica)
            failing = c.state != "running" or (h is not None and h.failures > 0)
            seen = self.logs.get(c.replica)
            if failing and (seen is None or not seen[1] or now - seen[0] >= LOGS_EVERY):
                try:
                    self.logs[c.replica] = (now, (await self.runtime.logs(c.id, LOG_LINES))[-LOG_LINES:])
                except (RuntimeFailed, RuntimeUnavailable):
                    pass

    def _forget(self, assignments: dict[str, Assignment]) -> None:
        for table in (self.restarts, self.errors, self.logs, self.finished_at, self.previous):
            for replica in [r for r in table if r not in assignments]:
                del table[replica]
        for replica in [r for r, task in self.in_flight.items() if task.done()]:
            del self.in_flight[replica]

    async def _collect_images_forever(self) -> None:
        while True:
            await asyncio.sleep(IMAGE_GC_SECONDS)
            try:
                await self.collect_images()
            except (StoreUnavailable, RuntimeUnavailable) as e:
                log.warning("image clean-up skipped: %s", e)

    async def collect_images(self) -> list[str]:
        """Remove app images no recent release and no assignment of this node uses."""
        releases = await self.store.values(keys.prefix("releases"))
        assigned = await self.store.values(keys.prefix("assignments", self.node.name))
        kept = images.images_to_keep(releases, [a["image"] for a in assigned], self.keep_releases)
        removed = []
        for image_id in images.images_to_remove(await self.runtime.list_app_images(), kept):
            if await self.runtime.remove_image(image_id):
                log.info("removed image %s (no recent release uses it)", image_id[:19])
                removed.append(image_id)
        return removed

    # -- status and endpoints --------------------------------------------------------

    def _status(self, a: Assignment, c: Container | None, now: float) -> dict[str, Any]:
        restart = self.restarts.get(a.id, sync.RestartState())
        if c is not None and c.state == "running" and now - restart.not_before > STABLE_AFTER:
            restart = self.restarts[a.id] = sync.RestartState()
        h = self.health.get(a.id, HealthState())
        endpoint = f"{self.node.address}:{c.host_port}" if c is not None and c.host_port else None
        task = self.in_flight.get(a.id)
        if c is None and a.id in self.pulling:
            state = "pulling"
        elif c is None:
            state = "failed" if a.id in self.errors else "creating" if task and not task.done() else "pending"
        elif c.state != "running" and sync.is_crash_looping(restart, now):
            state = "crash-looping"
        else:
            state = c.state
        healthy = c is not None and c.state == "running" and (a.port is None or h.healthy)
        if a.draining_since is not None and c is not None and c.state == "running":
            state = "draining"
        probe = None
        if h.last is not None:
            probe = {"ok": h.last.ok, "status": h.last.status, "detail": h.last.detail[:200],
                     "seconds": round(h.last.seconds, 4)}
        return {
            "id": a.id, "app": a.app, "process": a.process, "release": a.release, "node": self.node.name,
            "container": c.id[:12] if c else None, "state": state, "healthy": healthy,
            "restarts": restart.restarts, "exit_code": c.exit_code if c else None,
            "oom_killed": c.oom_killed if c else False, "image": a.image,
            "endpoint": endpoint if a.port else None, "error": self.errors.get(a.id), "probe": probe,
            "progress": self.pulling.get(a.id), "draining": a.draining_since is not None,
            "logs": self.logs.get(a.id, (0, None))[1] if not healthy else None,
            "previous": self.previous.get(a.id),
        }

    async def _publish(self, assignments: dict[str, Assignment], containers: list[Container],
                       now: float) -> None:
        by_replica = {c.replica: c for c in containers if c.replica in assignments}
        desired: dict[str, Any] = {}
        for c in containers:
            if c.replica not in assignments:
                # still there until removed: `paas destroy` waits for these to go
                desired[keys.status_key(self.node.name, c.replica)] = {
                    "id": c.replica, "app": c.app, "node": self.node.name, "container": c.id[:12],
                    "state": "stopping", "healthy": False}
        for a in assignments.values():
            status = self._status(a, by_replica.get(a.id), now)
            desired[keys.status_key(self.node.name, a.id)] = status
            # a draining replica leaves the router before it is stopped
            if a.port is not None and status["healthy"] and status["endpoint"] and a.draining_since is None:
                desired[keys.endpoint_key(a.app, a.id)] = {
                    "replica": a.id, "app": a.app, "process": a.process, "release": a.release,
                    "node": self.node.name, "address": status["endpoint"]}
        if now - self.last_full_write > FULL_REWRITE_SECONDS or not self.written:
            await self._load_written()
            self.last_full_write = now
        for key, value in desired.items():
            if _significant(self.written.get(key)) != _significant(value):
                await self.store.put(key, value, lease=self.lease)
                self.written[key] = value
        for key in [k for k in self.written if k not in desired]:
            await self.store.delete(key)
            del self.written[key]

    async def _load_written(self) -> None:
        """What etcd really holds for this node, so stale keys (from before a restart) go."""
        self.written = {}
        statuses, _ = await self.store.list(keys.prefix("status", self.node.name))
        endpoints, _ = await self.store.list(keys.prefix("endpoints"))
        for e in statuses.values():
            self.written[e.key] = e.value if e.lease == self.lease else None
        for e in endpoints.values():
            if isinstance(e.value, dict) and e.value.get("node") == self.node.name:
                self.written[e.key] = e.value if e.lease == self.lease else None


def _significant(value: Any) -> Any:
    """A status without the probe's timing, which changes every probe: writing it
    each time would churn etcd for nothing."""
    if isinstance(value, dict) and isinstance(value.get("probe"), dict):
        return {**value, "probe": {k: v for k, v in value["probe"].items() if k != "seconds"}}
    return value
