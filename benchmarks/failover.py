"""Failover: seconds from kill -9 of a host (its agent and its containers) until
its replicas serve again elsewhere, and the requests that failed meanwhile.

An app of the busybox base image with 3 replicas (one per node) gets a steady,
bounded load through the router (--rps a second, one thread, 127.0.0.1 only).
Each run kills one node's agent with SIGKILL and `docker kill`s its containers,
then measures: until the router stops sending to the dead replica (its node
lease expires: TTL 5 s), until all 3 replicas are healthy and routed again on
the other nodes, and the failed requests in that window. The node is brought
back with `paas up` between runs.

Run: .venv/bin/python benchmarks/failover.py [--runs N] [--rps R]
Starts its own cluster (port slot 4) and stops it at the end. Prints figures only.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from common import LocalCluster, local_cluster, spread

APP = "failover"
SPEC = """\
name: {name}
image: {registry}/paas/busybox:latest
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "$PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: 3
    port: 8000
    health: {{path: /, interval: 0.5s, timeout: 0.5s}}
    resources: {{cpu: 0.05, memory: 16Mi}}
"""


class Load(threading.Thread):
    """GETs through the router at a steady rate, bounded in count and time."""

    def __init__(self, cluster: LocalCluster, rps: float, max_seconds: float):
        super().__init__(daemon=True)
        self.cluster, self.interval, self.max_seconds = cluster, 1 / rps, max_seconds
        self.max_requests = int(rps * max_seconds)
        self.stop = threading.Event()
        self.sent, self.failures = 0, []

    def run(self) -> None:
        started = time.monotonic()
        for i in range(self.max_requests):
            if self.stop.is_set() or time.monotonic() - started > self.max_seconds:
                return
            self.sent += 1
            try:
                status, body = self.cluster.get(f"{APP}.localhost", timeout=5)
                if status != 200:
                    self.failures.append(f"HTTP {status}: {body.strip()[:80]}")
            except Exception as e:  # noqa: BLE001 - every kind of failure counts
                self.failures.append(f"{type(e).__name__}: {e}")
            self.stop.wait(max(0.0, started + (i + 1) * self.interval - time.monotonic()))


def replicas(cluster: LocalCluster) -> list[dict]:
    return cluster.paas_json("ps", APP)


def wait(check, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def one_run(cluster: LocalCluster, node: str, rps: float) -> tuple[float | None, float | None, int, int, list]:
    victim = next(r for r in replicas(cluster) if r["node"] == node)
    pid = int((cluster.home / "run" / f"agent-{node}.pid").read_text())
    load = Load(cluster, rps, max_seconds=90)
    load.start()
    time.sleep(1)
    os.kill(pid, signal.SIGKILL)
    subprocess.run(["docker", "kill", f"paas-{cluster.name}-{victim['id']}"], capture_output=True)
    killed = time.monotonic()
    unrouted = wait(lambda: all(r["id"] != victim["id"] or not r["routed"] for r in replicas(cluster)), 60)
    serving = wait(lambda: (rows := replicas(cluster)) and len(rows) == 3
                   and all(r["healthy"] and r["routed"] and r["node"] != node for r in rows), 60)
    serving = None if serving is None else time.monotonic() - killed
    time.sleep(1)
    load.stop.set()
    load.join()
    return unrouted, serving, load.sent, len(load.failures), load.failures[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rps", type=float, default=50)
    args = parser.parse_args()
    with local_cluster("failover", 4) as cluster:
        spec = Path(cluster.home) / "failover.yaml"
        spec.write_text(SPEC.format(name=APP, registry=cluster.registry))
        cluster.paas_ok("deploy", str(spec))
        unrouted, serving, sent, failed = [], [], 0, 0
        for run in range(args.runs):
            node = f"node-{run % 3 + 1}"
            u, s, n, f, reasons = one_run(cluster, node, args.rps)
            print(f"run {run + 1}: killed {node}: out of the router after "
                  f"{'-' if u is None else f'{u:.2f}'} s, all 3 serving elsewhere after "
                  f"{'-' if s is None else f'{s:.2f}'} s; {f} of {n} requests failed {reasons or ''}", flush=True)
            unrouted += [u] if u is not None else []
            serving += [s] if s is not None else []
            sent, failed = sent + n, failed + f
            cluster.paas_ok("up")                       # the host comes back for the next run
            wait(lambda: len([x for x in cluster.paas_json("nodes") if x["state"] == "ready"]) == 4, 30)
        if unrouted:
            print(f"dead replica out of the router: {spread(unrouted)}")
        if serving:
            print(f"kill -9 of a host to its replicas serving elsewhere: {spread(serving)}")
        print(f"requests during failovers: {sent}, failed: {failed} (nginx retries a refused connection "
              f"on another replica)")


if __name__ == "__main__":
    main()
