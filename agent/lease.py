"""A node's record in etcd, on a lease this agent keeps alive. Status, endpoint
and router keys ride on the same lease, so they all vanish with a dead host."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from paas import store as keys
from paas.model import Node
from paas.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class NodeLease:
    def __init__(self, store: Store, node: Node, ttl: int, on_new_lease: Callable[[], None]):
        self.store, self.node, self.ttl, self.on_new_lease = store, node, ttl, on_new_lease
        self.id: int | None = None

    async def register(self) -> None:
        self.id = await self.store.grant_lease(self.ttl)
        await self.store.put(keys.node_key(self.node.name), self.node.to_dict(), lease=self.id)
        log.info("node %s registered at %s (lease %x)", self.node.name, self.node.address, self.id)
        self.on_new_lease()      # whatever rode on the old lease is gone or going: write it again

    async def run(self) -> None:
        while True:
            try:
                if self.id is None or not await self.store.refresh_lease(self.id):
                    await self.register()
            except StoreUnavailable as e:
                log.warning("%s", e)
            await asyncio.sleep(max(0.5, self.ttl / 4))
