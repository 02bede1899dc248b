"""Fixtures: a real local cluster (dockerd, etcd, registry, controller, three
agents, router) started with `paas up` under a private $PAAS_HOME and ports of
its own, so it never collides with a developer's `make demo` cluster."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAAS = [sys.executable, "-m", "paas.cli"]
TEST_ENV = {
    "PAAS_CLUSTER": "test",
    "PAAS_ETCD_PORT": "23790",
    "PAAS_API_PORT": "17070",
    "PAAS_ROUTER_LISTEN": "127.0.0.1:18080",
    "PAAS_REGISTRY": "127.0.0.1:15000",
    "PAAS_NODES": "127.0.0.21,127.0.0.22,127.0.0.23",
    "PAAS_GIT_PORT": "12222",
}


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]

    @property
    def router(self) -> str:
        return self.env["PAAS_ROUTER_LISTEN"]

    @property
    def registry(self) -> str:
        return self.env["PAAS_REGISTRY"]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['PAAS_API_PORT']}"

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def paas(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run([*PAAS, *args], cwd=ROOT, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def paas_json(self, *args: str) -> object:
        r = self.paas(*args, "--json")
        assert r.code == 0, r.err
        return json.loads(r.out)

    def get(self, host: str, path: str = "/", timeout: float = 3) -> tuple[int, str]:
        """One request through the router, as `curl -H 'Host: ...'` would send it."""
        req = urllib.request.Request(f"http://{self.router}{path}", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def spec_file(self, tmp_path: Path, name: str, text: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.replace("REGISTRY", self.registry))
        return str(path)

    def store_keys(self, prefix: str) -> dict[str, object]:
        """What etcd holds under a prefix, read with the project's own store adapter."""
        from paas.store import Store

        async def read():
            store = Store([f"127.0.0.1:{self.env['PAAS_ETCD_PORT']}"])
            try:
                entries, _ = await store.list(prefix)
                return {k: e.value for k, e in entries.items()}
            finally:
                await store.close()
        return asyncio.run(read())

    def containers(self, app: str | None = None) -> list[str]:
        filters = ["--filter", f"label=paas.cluster={self.env['PAAS_CLUSTER']}"]
        if app:
            filters += ["--filter", f"label=paas.app={app}"]
        out = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True)
        return out.stdout.split()


def wait_for(check, timeout: float, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    home = tmp_path_factory.mktemp("paas-home")
    env = {**os.environ, **TEST_ENV, "PAAS_HOME": str(home)}
    c = Cluster(home=home, env=env)
    up = c.paas("up", timeout=300)
    if up.code != 0:
        logs = "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in sorted((home / "logs").glob("*.log")))
        c.paas("down")
        pytest.fail(f"paas up failed:\n{up.out}\n{up.err}\n{logs}")
    yield c
    c.paas("down", timeout=120)


class Load:
    """Steady GETs through the router from a background thread, bounded in rate,
    count and time; records every request that did not get a 200."""

    def __init__(self, cluster: Cluster, host: str, rps: float = 20, max_seconds: float = 240):
        self.cluster, self.host, self.interval, self.max_seconds = cluster, host, 1.0 / rps, max_seconds
        self.max_requests = int(rps * max_seconds)
        self.ok, self.failures, self.bodies = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() - started > self.max_seconds:
                return
            try:
                status, body = self.cluster.get(self.host, timeout=5)
                if status == 200:
                    self.ok += 1
                    self.bodies.add(body.strip())
                else:
                    self.failures.append(f"{status}: {body.strip()[:100]}")
            except Exception as e:  # noqa: BLE001 - every kind of failure counts
                self.failures.append(f"{type(e).__name__}: {e}")
            next_at = started + (i + 1) * self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
