"""The router role of an agent: endpoints + app domains -> nginx, level-triggered.

After nginx serves a new generation, the router records what it routes under
`/paas/routers/<node>` (on its lease), so `paas deploy` can wait until the
router really sends traffic to the new replicas.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.nginx import Nginx, NginxError
from agent.router import build_routes, render_nginx_config
from paas import store as keys
from paas.model import Node
from paas.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

RESYNC_SECONDS = 2.0
DEBOUNCE_SECONDS = 0.1
CONFIRM_SECONDS = 5.0


class RouterAgent:
    def __init__(self, store: Store, node: Node, nginx: Nginx, listen: str, cluster_domain: str,
                 ttl: int = 5):
        self.store, self.node, self.nginx = store, node, nginx
        self.listen, self.cluster_domain, self.ttl = listen, cluster_domain, ttl
        self.lease: int | None = None
        self.applied: str | None = None
        self.published: dict | None = None
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._keep_lease())
            tg.create_task(self._watch(keys.prefix("endpoints")))
            tg.create_task(self._watch(keys.prefix("apps")))
            tg.create_task(self._route_forever())

    async def _keep_lease(self) -> None:
        while True:
            try:
                if self.lease is None or not await self.store.refresh_lease(self.lease):
                    self.lease = await self.store.grant_lease(self.ttl)
                    await self.store.put(keys.node_key(self.node.name), self.node.to_dict(), lease=self.lease)
                    self.published = None
                    self.wakeup.set()
            except StoreUnavailable as e:
                log.warning("%s", e)
            await asyncio.sleep(max(0.5, self.ttl / 4))

    async def _watch(self, prefix: str) -> None:
        async for _ in self.store.watch(prefix):
            self.wakeup.set()

    async def _route_forever(self) -> None:
        while True:
            try:
                await self.route_once()
            except StoreUnavailable as e:
                log.warning("%s (nginx keeps serving the last config)", e)
            except NginxError as e:
                log.error("%s", e)
            except Exception:
                log.exception("router cycle failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_SECONDS):
                    await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(DEBOUNCE_SECONDS)   # let a burst of endpoint changes land together

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
        if record != self.published and self.lease is not None:
            await self.store.put(keys.router_key(self.node.name), record, lease=self.lease)
            self.published = record

    async def _wait_serving(self, generation: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        while loop.time() < deadline:
            if await self.nginx.serving_generation() == generation:
                return
            await asyncio.sleep(0.05)
        raise NginxError(f"nginx did not serve generation {generation} within {CONFIRM_SECONDS:g}s")
