"""Rolling deploys under steady load through the router, on a real local cluster.

An app of the busybox base image (httpd serving "VERSION $VERSION from
$PAAS_REPLICA") with 3 replicas, rollout max_surge 1 / max_unavailable 0, drain
1s, gets 10 consecutive rolling deploys, each changing the VERSION env var, while
a paced load (open loop: one new connection per request, --rps a second, bounded
by --max-requests and --max-seconds) goes to the router on 127.0.0.1 with
`Host: <app>.localhost`. Prints each deploy's duration, the requests, the failed
ones with their first reasons, the rate achieved and p50/p99 latency; then the
same latency figures for a short burst at the same rate to the idle router and
straight to one replica's endpoint (from `paas ps APP --json`), for comparison.

Run: .venv/bin/python benchmarks/rollout.py [--deploys N] [--rps R]
It starts its own cluster (`paas up`) under a temporary $PAAS_HOME with ports
of its own, and stops it at the end. Prints figures; asserts nothing on time.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from common import LocalCluster, local_cluster, percentile, spread

APP = "steady"
SPEC = """\
name: {name}
image: {registry}/paas/busybox:latest
env: {{VERSION: "{version}"}}
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "VERSION $VERSION from $PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: 3
    port: 8000
    health: {{path: /, interval: 0.5s, timeout: 0.5s}}
    resources: {{cpu: 0.05, memory: 16Mi}}
    drain: 1s
    stop_timeout: 2s
rollout: {{max_surge: 1, max_unavailable: 0, progress_deadline: 30s}}
"""


@dataclass
class LoadResult:
    sent: int = 0
    seconds: float = 0.0                      # from the first request sent to the last answer
    latencies: list[float] = field(default_factory=list)      # of the 200s, seconds
    failures: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    max_lag: float = 0.0                      # how late the pacer sent a request, worst case

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def figures(self) -> str:
        if not self.latencies:
            return "no successful request"
        ms = [s * 1000 for s in self.latencies]
        return (f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
                f"max {max(ms):.2f} ms over {len(ms)} answers")


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        sys.exit(f"refusing to send load to {url}: only 127.0.0.0/8")


async def paced_load(url: str, host: str | None, rps: float, max_requests: int, max_seconds: float,
                     stop: threading.Event, label: list[str], result: LoadResult) -> None:
    """Send GET url at `rps` (open loop) until `stop`, `max_requests` or `max_seconds`."""
    check_loopback(url)
    headers = {"Host": host} if host else {}
    # a new connection per request (as curl or the tests' Load do): no keep-alive connection
    # that nginx closes on a reload can fail a request on the client's side of the race
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=5)

    async def one(session: aiohttp.ClientSession, sent_at: float) -> None:
        t0 = time.perf_counter()
        try:
            async with session.get(url, headers=headers, allow_redirects=False) as resp:
                body = (await resp.text()).strip()
                if resp.status == 200:
                    result.latencies.append(time.perf_counter() - t0)
                    result.versions[body.split(" from ")[0]] += 1
                    return
                reason = f"HTTP {resp.status}: {body[:100]!r}"
        except Exception as e:  # noqa: BLE001 - every kind of failure counts
            reason = f"{type(e).__name__}: {e}"
        result.failures.append(f"t={sent_at:.2f}s during {label[0]}: {reason}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        start = time.monotonic()
        for i in range(max_requests):
            now = time.monotonic()
            if stop.is_set() or now - start > max_seconds:
                break
            result.max_lag = max(result.max_lag, now - (start + i / rps))
            tasks.append(asyncio.create_task(one(session, now - start)))
            result.sent += 1
            await asyncio.sleep(max(0.0, start + (i + 1) / rps - time.monotonic()))
        await asyncio.gather(*tasks)
        result.seconds = time.monotonic() - start


class Load:
    """paced_load in a thread of its own, so that `paas deploy` runs meanwhile."""

    def __init__(self, url: str, host: str | None, rps: float, max_requests: int, max_seconds: float):
        self.result, self.label, self._stop = LoadResult(), ["warm-up"], threading.Event()
        self._error: BaseException | None = None

        def run() -> None:
            try:
                asyncio.run(paced_load(url, host, rps, max_requests, max_seconds, self._stop, self.label,
                                       self.result))
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                self._error = e
        self._thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._error is not None and exc[0] is None:
            raise self._error


def burst(url: str, host: str | None, rps: float, count: int) -> LoadResult:
    result = LoadResult()
    asyncio.run(paced_load(url, host, rps, count, count / rps + 5, threading.Event(), ["burst"], result))
    return result


def deploy(cluster: LocalCluster, version: int) -> tuple[float, int, str]:
    spec = cluster.home / f"{APP}-{version}.yaml"
    spec.write_text(SPEC.format(name=APP, registry=cluster.registry, version=version))
    t0 = time.monotonic()
    result = cluster.paas("deploy", str(spec), "--timeout", "120")
    return time.monotonic() - t0, result.returncode, result.stderr


def report_load(title: str, load: LoadResult) -> None:
    print(f"{title}: {load.sent} requests in {load.seconds:.1f} s = {load.sent / max(load.seconds, 1e-9):.1f} "
          f"req/s achieved (pacer at most {load.max_lag * 1000:.0f} ms late), {len(load.failures)} failed")
    print(f"  latency of the 200s: {load.figures()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploys", type=int, default=10, help="consecutive rolling deploys under load")
    parser.add_argument("--rps", type=float, default=50, help="requests a second, through the router")
    parser.add_argument("--max-seconds", type=float, default=600, help="bound on the load's duration")
    parser.add_argument("--max-requests", type=int, default=30000, help="bound on the load's requests")
    parser.add_argument("--burst", type=int, default=250, help="requests of each comparison burst")
    parser.add_argument("--keep-logs", type=Path, help="copy the cluster's logs to this directory at the end")
    args = parser.parse_args()
    host = f"{APP}.localhost"
    with local_cluster("bench-rollout", port_offset=3, keep_logs=args.keep_logs) as cluster:
        router_url = f"http://{cluster.router}/"
        seconds, code, err = deploy(cluster, 0)
        if code != 0:
            sys.exit(f"first deploy failed:\n{err}\n{cluster.logs_tail()}")
        print(f"first deploy, 3 replicas to healthy+routed: {seconds:.2f} s")

        times, failed_deploys = [], []
        with Load(router_url, host, args.rps, args.max_requests, args.max_seconds) as load:
            time.sleep(2)
            for version in range(1, args.deploys + 1):
                load.label[0] = f"deploy v{version + 1} (VERSION={version})"
                seconds, code, err = deploy(cluster, version)
                times.append(seconds)
                if code != 0:
                    failed_deploys.append(f"VERSION={version} exit {code}: {err.strip()[-400:]}")
                print(f"  deploy {version:2d}/{args.deploys}: {seconds:.2f} s" + ("" if code == 0 else " FAILED"),
                      flush=True)
            load.label[0] = "after the deploys"
            time.sleep(2)
        result = load.result

        print(f"rolling deploy of 3 replicas (max_surge 1, max_unavailable 0, drain 1s) under load: {spread(times)}"
              .replace("runs", "deploys"))
        for line in failed_deploys:
            print(f"  failed deploy: {line}")
        report_load(f"load through the router {cluster.router} during the deploys", result)
        for reason in result.failures[:5]:
            print(f"  failure: {reason}")
        if len(result.failures) > 5:
            print(f"  ... and {len(result.failures) - 5} more")
        print("  answers by version: " + ", ".join(f"{v}: {n}" for v, n in sorted(
            result.versions.items(), key=lambda kv: int(kv[0].split()[-1]) if kv[0].split()[-1].isdigit() else -1)))

        idle = burst(router_url, host, args.rps, args.burst)
        report_load("burst through the idle router", idle)
        replicas = cluster.paas_json("ps", APP)
        endpoint = next(r["endpoint"] for r in replicas if r.get("endpoint") and r.get("healthy"))
        direct = burst(f"http://{endpoint}/", None, args.rps, args.burst)
        report_load(f"burst straight to replica endpoint {endpoint}", direct)
        for reason in (idle.failures + direct.failures)[:5]:
            print(f"  failure: {reason}")
        cluster.paas_ok("destroy", APP)


if __name__ == "__main__":
    main()
