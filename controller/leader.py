"""Leader election on an etcd lease: one controller reconciles, the others wait.

The leader key's mod revision is the fencing token: every write of the leader
compares it, so a controller that lost its lease cannot write stale decisions.
"""
from __future__ import annotations

import asyncio
import logging
import time

from paas import store as keys
from paas.store import Put, Store, StoreUnavailable

log = logging.getLogger(__name__)
LEADER_KEY = f"{keys.PREFIX}/leader"


class Leadership:
    def __init__(self, store: Store, identity: str, ttl: int = 5):
        self.store, self.identity, self.ttl = store, identity, ttl
        self.lease: int | None = None
        self.revision: int | None = None       # mod revision of our leader key
        self.since = 0.0
        self.changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self.revision is not None

    def leader_for(self) -> float:
        return time.monotonic() - self.since if self.is_leader else 0.0

    async def resign(self) -> None:
        """Give up at once (clean shutdown), so a standby need not wait for the TTL."""
        if self.lease is not None:
            await self.store.revoke_lease(self.lease)
        self._lose("resigned")

    def fence(self) -> dict[str, int]:
        assert self.revision is not None
        return {LEADER_KEY: self.revision}

    async def run(self) -> None:
        while True:
            try:
                await self._step()
            except StoreUnavailable as e:
                log.warning("%s", e)
                self._lose("etcd unreachable")
            await asyncio.sleep(max(0.5, self.ttl / 4))

    async def _step(self) -> None:
        if self.is_leader:
            if not await self.store.refresh_lease(self.lease):
                self._lose("lease expired")
            return
        current = await self.store.get(LEADER_KEY)
        if current is not None:
            return
        self.lease = await self.store.grant_lease(self.ttl)
        if await self.store.commit([Put(LEADER_KEY, {"id": self.identity}, self.lease)], expect={LEADER_KEY: 0}):
            entry = await self.store.get(LEADER_KEY)
            if entry is not None and entry.value.get("id") == self.identity:
                self.revision = entry.mod_revision
                self.since = time.monotonic()
                log.info("%s is the leader", self.identity)
                self.changed.set()
                return
        await self.store.revoke_lease(self.lease)
        self.lease = None

    def _lose(self, why: str) -> None:
        if self.is_leader:
            log.warning("%s lost leadership: %s", self.identity, why)
            self.changed.set()
        self.revision = None
        self.lease = None
