"""The router role of an agent: endpoints + app domains -> nginx, level-triggered.

After nginx serves a new generation, the router records what it routes under
`/paas/routers/<node>` (on its lease), so `paas deploy` can wait until the
router really sends traffic to the new replicas.
"""
from __future__ import annotations

import asyncio
import logging

from agent.lease import NodeLease
from agent.nginx import Nginx, NginxError
from agent.router import build_routes, render_nginx_config
from paas import store as keys
from paas.model import Node
from paas.passes import run_passes, wake_on_changes
from paas.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

RESYNC_SECONDS = 2.0
DEBOUNCE_SECONDS = 0.1
CONFIRM_SECONDS = 5.0


class RouterAgent:
    def __init__(self, store: Store, node: Node, nginx: Nginx, listen: str, cluster_domain: str,
                 ttl: int = 5):
        self.store, self.node, self.nginx = store, node, nginx
        self.listen, self.cluster_domain = listen, cluster_domain
        self.node_lease = NodeLease(store, node, ttl, self._on_new_lease)
        self.applied: str | None = None
        self.published: dict | None = None
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.node_lease.run())
            for kind in ("endpoints", "apps"):
                tg.create_task(wake_on_changes(self.store, keys.prefix(kind), self.wakeup))
            # a burst of endpoint changes lands in one reload
            tg.create_task(run_passes(self.route_once, self.wakeup, lambda: RESYNC_SECONDS,
                                      expected=(StoreUnavailable, NginxError), settle=DEBOUNCE_SECONDS))

    def _on_new_lease(self) -> None:
        self.published = None
        self.wakeup.set()

    async def route_once(self) -> None:
        apps = await self.store.values(keys.prefix("apps"))
        endpoints = await self.store.values(keys.prefix("endpoints"))
        routes = build_routes(apps, endpoints, self.cluster_domain)
        text, generation = render_nginx_config(routes, self.listen, str(self.nginx.workdir))
        if text != self.applied or self.nginx.pid() is None:
            await self.nginx.apply(text)
            await self._wait_serving(generation)
            self.applied = text
            log.info("nginx serves generation %s (%d apps)", generation, len(routes))
        record = {"node": self.node.name, "generation": generation,
                  "routes": {r.app: list(r.replicas) for r in routes}}
        if record != self.published and self.node_lease.id is not None:
            await self.store.put(keys.router_key(self.node.name), record, lease=self.node_lease.id)
            self.published = record

    async def _wait_serving(self, generation: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        while loop.time() < deadline:
            if await self.nginx.serving_generation() == generation:
                return
            await asyncio.sleep(0.05)
        raise NginxError(f"nginx did not serve generation {generation} within {CONFIRM_SECONDS:g}s")
