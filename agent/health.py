"""HTTP health probes of routed replicas, and the pure bookkeeping that turns
probe results into healthy / unhealthy (healthy_after / unhealthy_after)."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import aiohttp

from paas.model import Health


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int | None
    detail: str          # body excerpt or the error
    seconds: float


@dataclass(frozen=True)
class HealthState:
    healthy: bool = False
    successes: int = 0
    failures: int = 0
    last_probe: float = float("-inf")   # monotonic
    last: ProbeResult | None = None


def probe_due(state: HealthState, health: Health, now: float) -> bool:
    return now - state.last_probe >= health.interval


def after_probe(state: HealthState, result: ProbeResult, health: Health, now: float) -> HealthState:
    if result.ok:
        successes, failures = state.successes + 1, 0
        healthy = state.healthy or successes >= health.healthy_after
    else:
        successes, failures = 0, state.failures + 1
        healthy = state.healthy and failures < health.unhealthy_after
    return replace(state, healthy=healthy, successes=successes, failures=failures,
                   last_probe=now, last=result)


async def probe_http(session: aiohttp.ClientSession, host: str, port: int, path: str,
                     timeout: float) -> ProbeResult:
    """GET http://host:port/path; 2xx and 3xx are healthy."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            async with session.get(f"http://{host}:{port}{path}", allow_redirects=False) as resp:
                body = await resp.content.read(200)
                ok = 200 <= resp.status < 400
                return ProbeResult(ok, resp.status, body.decode("utf-8", "replace").strip(),
                                   time.monotonic() - started)
    except TimeoutError:
        return ProbeResult(False, None, f"timed out after {timeout:g}s", time.monotonic() - started)
    except (aiohttp.ClientError, OSError) as e:
        return ProbeResult(False, None, f"{type(e).__name__}: {e}", time.monotonic() - started)
