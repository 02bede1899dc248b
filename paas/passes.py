"""The level-triggered loop every process runs: a pass over the whole state, then
sleep until something changes (an etcd watch sets the wake-up event) or the
resync period ends, whichever is first. A failed pass is logged and the next
one starts from scratch; no event is trusted to have arrived."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from paas.store import Store

log = logging.getLogger(__name__)


async def run_passes(one_pass: Callable[[], Awaitable[object]], wakeup: asyncio.Event,
                     period: Callable[[], float], expected: tuple[type[Exception], ...] = (),
                     settle: float = 0.0) -> None:
    """Forever: `one_pass()`, then wait. `expected` errors (a service down) are one
    warning line; anything else is logged with its traceback. `settle` waits a
    little after a wake-up so a burst of changes lands in one pass."""
    while True:
        try:
            await one_pass()
        except expected as e:
            log.warning("%s", e)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("a call of the pass was cancelled under it (a closed connection); next pass")
        except Exception:
            log.exception("pass failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(period()):
                await wakeup.wait()
        wakeup.clear()
        if settle:
            await asyncio.sleep(settle)


async def wake_on_changes(store: Store, prefix: str, wakeup: asyncio.Event) -> None:
    """Set `wakeup` on every change under the prefix (and after every watch reconnect)."""
    async for _ in store.watch(prefix):
        wakeup.set()
