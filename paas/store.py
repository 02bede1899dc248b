"""The etcd adapter: the only module that imports aetcd.

It owns the key layout (DESIGN.md), JSON values, compare-and-swap transactions
on mod revisions, leases, and watches that come back after etcd restarts.
Every etcd failure becomes one `StoreUnavailable` naming the endpoints.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions

log = logging.getLogger(__name__)

PREFIX = "/paas"


def app_key(app: str) -> str:
    return f"{PREFIX}/apps/{app}"


def release_key(app: str, number: int) -> str:
    # zero-padded so that etcd's key order is release order
    return f"{PREFIX}/releases/{app}/{number:08d}"


def assignment_key(node: str, replica: str) -> str:
    return f"{PREFIX}/assignments/{node}/{replica}"


def node_key(node: str) -> str:
    return f"{PREFIX}/nodes/{node}"


def status_key(node: str, replica: str) -> str:
    return f"{PREFIX}/status/{node}/{replica}"


def endpoint_key(app: str, replica: str) -> str:
    return f"{PREFIX}/endpoints/{app}/{replica}"


def router_key(node: str) -> str:
    return f"{PREFIX}/routers/{node}"


def rollout_key(app: str) -> str:
    return f"{PREFIX}/rollouts/{app}"


def build_key(app: str, source_hash: str) -> str:
    return f"{PREFIX}/builds/{app}/{source_hash}"


def drain_key(node: str) -> str:
    return f"{PREFIX}/drains/{node}"


def seen_node_key(node: str) -> str:
    return f"{PREFIX}/nodes-seen/{node}"


def scheduling_key(app: str) -> str:
    return f"{PREFIX}/scheduling/{app}"


def prefix(kind: str, *parts: str) -> str:
    return "/".join([PREFIX, kind, *parts]) + "/"


MAX_MESSAGE = 512 * 1024 * 1024


class StoreUnavailable(Exception):
    """etcd cannot be reached (or answered with an error we cannot act on)."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Put:
    key: str
    value: Any
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


class Store:
    """A connection to etcd over one or more client endpoints ("host:port").

    Calls go to one endpoint; on a connection error the next one is tried, so a
    multi-member cluster keeps answering while one member is down.
    """

    def __init__(self, endpoints: Iterable[str], timeout: float = 5.0):
        self.endpoints = list(endpoints)
        if not self.endpoints:
            raise ValueError("no etcd endpoints")
        self.timeout = timeout
        self._current = 0
        self._client: aetcd.Client | None = None

    def describe(self) -> str:
        return ",".join(self.endpoints)

    def _new_client(self) -> aetcd.Client:
        host, _, port = self.endpoints[self._current].rpartition(":")
        # a whole-cluster read (every assignment) is far over gRPC's 4 MiB default
        return aetcd.Client(host=host, port=int(port), timeout=self.timeout,
                            options={"grpc.max_receive_message_length": MAX_MESSAGE,
                                     "grpc.max_send_message_length": MAX_MESSAGE})

    def _client_now(self) -> aetcd.Client:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def _drop_client(self, failed: aetcd.Client) -> None:
        """Move to the next endpoint, unless another call already did (several calls in
        flight fail together when a member dies: one switch, not one per call)."""
        if self._client is not failed:
            return
        self._client = None
        self._current = (self._current + 1) % len(self.endpoints)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(failed.close(), 2)

    async def _call(self, fn: Callable[[aetcd.Client], Any]) -> Any:
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            client = self._client_now()
            try:
                return await asyncio.wait_for(fn(client), self.timeout + 1)
            except asyncio.CancelledError as e:
                if _really_cancelled():
                    raise
                last = e      # gRPC cancels the calls of a channel that was closed under them
                await self._drop_client(client)
            except (TimeoutError, aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
                    aetcd.exceptions.InternalError, OSError) as e:
                last = e
                await self._drop_client(client)
            except aetcd.exceptions.ClientError as e:     # etcd answered, with an error we cannot act on
                raise StoreUnavailable(f"etcd at {self.endpoints[self._current]} refused the call: "
                                       f"{type(e).__name__}: {e}") from e
        raise StoreUnavailable(
            f"etcd is not reachable at {self.describe()} ({type(last).__name__}: {last}); "
            "start the cluster with `paas up`")

    async def close(self) -> None:
        if self._client is not None:
            await self._drop_client(self._client)

    async def ping(self) -> int:
        """The current revision; raises StoreUnavailable when etcd is down."""
        result = await self._call(lambda c: c.get(f"{PREFIX}/leader".encode()))
        if result is None:
            listing = await self._call(lambda c: c.get_prefix(b"/paas/__ping__", keys_only=True))
            return listing.header.revision
        return result.header.revision

    async def get(self, key: str) -> Entry | None:
        kv = await self._call(lambda c: c.get(key.encode()))
        return _entry(kv) if kv is not None else None

    async def list(self, key_prefix: str) -> tuple[dict[str, Entry], int]:
        """Every entry under a prefix, and the store revision the read saw."""
        result = await self._call(lambda c: c.get_prefix(key_prefix.encode()))
        entries = {}
        for kv in result:
            entry = _entry(kv)
            entries[entry.key] = entry
        return entries, result.header.revision

    async def values(self, key_prefix: str) -> list[Any]:
        entries, _ = await self.list(key_prefix)
        return [e.value for e in entries.values()]

    async def put(self, key: str, value: Any, lease: int | None = None) -> None:
        data = _encode(value)
        await self._call(lambda c: c.put(key.encode(), data, lease=lease))

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(key.encode()))

    async def delete_prefix(self, key_prefix: str) -> None:
        await self._call(lambda c: c.delete_prefix(key_prefix.encode()))

    async def commit(self, ops: Iterable[Put | Delete],
                     expect: dict[str, int] | None = None) -> bool:
        """Apply all ops atomically if every key in `expect` still has that mod revision
        (0: the key must not exist). Returns False when another writer got there first."""
        ops = list(ops)

        def build(c: aetcd.Client):
            compares = [c.transactions.mod(k.encode()) == rev for k, rev in (expect or {}).items()]
            success = []
            for op in ops:
                if isinstance(op, Put):
                    success.append(c.transactions.put(op.key.encode(), _encode(op.value), lease=op.lease))
                elif op.prefix:
                    end = aetcd.utils.prefix_range_end(op.key.encode())
                    success.append(c.transactions.delete(op.key.encode(), range_end=end))
                else:
                    success.append(c.transactions.delete(op.key.encode()))
            return c.transaction(compare=compares, success=success, failure=[])

        ok, _ = await self._call(build)
        return ok

    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl))
        return lease.id

    async def refresh_lease(self, lease_id: int) -> bool:
        """Keep a lease alive; False when it has already expired."""
        reply = await self._call(lambda c: c.refresh_lease(lease_id))
        return reply is not None and reply.TTL > 0

    async def revoke_lease(self, lease_id: int) -> None:
        with contextlib.suppress(Exception):
            await self._call(lambda c: c.revoke_lease(lease_id))

    async def watch(self, key_prefix: str) -> AsyncIterator[None]:
        """Yields once per batch of changes under the prefix, and once after every
        reconnect (events may have been missed: the caller resyncs). Never ends."""
        backoff = 0.2
        while True:
            watch = None
            client = self._client_now()
            try:
                watch = await asyncio.wait_for(client.watch_prefix(key_prefix.encode()), self.timeout)
                backoff = 0.2
                yield None
                async for _event in watch:
                    yield None
            except asyncio.CancelledError:
                if _really_cancelled():
                    raise
                log.info("watch on %s was cancelled by its channel; reconnecting", key_prefix)
                await self._drop_client(client)
            except Exception as e:  # noqa: BLE001 - any watch failure means: reconnect, resync
                log.info("watch on %s broke (%s: %s); reconnecting", key_prefix, type(e).__name__, e)
                await self._drop_client(client)
            finally:
                if watch is not None:
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(watch.cancel(), 1)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 3.0)


def _really_cancelled() -> bool:
    """True when our own task is being cancelled, not just a gRPC call under it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _entry(kv: Any) -> Entry:
    return Entry(key=kv.key.decode(), value=json.loads(kv.value), mod_revision=kv.mod_revision, lease=kv.lease)
