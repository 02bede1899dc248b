"""What the cluster benchmarks share: a private local cluster (`paas up` under a
temporary $PAAS_HOME with ports and node addresses of its own, `paas down` at the
end even on failure), the `paas ...` subprocess helper and a few statistics.

Port slots, so that benchmarks never collide with each other or with the tests
(slot 0 is the test suite's and is refused here):

    slot  etcd   API    router  registry  nodes
    0     23790  17070  18080   15000     127.0.0.21-23   tests/conftest.py
    1     24790  17170  18180   15100     127.0.0.31-33   benchmarks/deploy.py
    2     25790  17270  18280   15200     127.0.0.41-43   benchmarks/build.py
    3     26790  17370  18380   15300     127.0.0.51-53   benchmarks/rollout.py
    4     27790  17470  18480   15400     127.0.0.61-63   benchmarks/failover.py

etcd also uses the port above its client port for peers.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cluster_env(name: str, port_offset: int) -> dict[str, str]:
    """The `paas up` settings of port slot `port_offset` (see the table above)."""
    if not 1 <= port_offset <= 9:
        raise ValueError(f"port_offset {port_offset}: slots 1-9 are for benchmarks (0 is the test suite's)")
    first_node = 21 + 10 * port_offset
    return {
        "PAAS_CLUSTER": name,
        "PAAS_ETCD_PORT": str(23790 + 1000 * port_offset),
        "PAAS_API_PORT": str(17070 + 100 * port_offset),
        "PAAS_ROUTER_LISTEN": f"127.0.0.1:{18080 + 100 * port_offset}",
        "PAAS_REGISTRY": f"127.0.0.1:{15000 + 100 * port_offset}",
        "PAAS_NODES": ",".join(f"127.0.0.{first_node + i}" for i in range(3)),
        "PAAS_GIT_PORT": str(12222 + 100 * port_offset),
    }


@dataclass
class LocalCluster:
    name: str
    home: Path
    env: dict[str, str]
    up_seconds: float = 0.0

    @property
    def registry(self) -> str:
        return self.env["PAAS_REGISTRY"]

    @property
    def router(self) -> str:
        """host:port of the router, always on 127.0.0.1."""
        return self.env["PAAS_ROUTER_LISTEN"]

    @property
    def nodes(self) -> list[str]:
        return self.env["PAAS_NODES"].split(",")

    def paas(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`paas ARGS...` against this cluster; never raises on a non-zero exit."""
        return subprocess.run([sys.executable, "-m", "paas.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def paas_ok(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`paas ARGS...`, exiting the benchmark (cluster stopped on the way out) when it fails."""
        result = self.paas(*args, timeout=timeout)
        if result.returncode != 0:
            sys.exit(f"paas {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def paas_json(self, *args: str) -> object:
        return json.loads(self.paas_ok(*args, "--json").stdout)

    def get(self, host: str, path: str = "/", timeout: float = 5) -> tuple[int, str]:
        """One GET through this cluster's router (127.0.0.1 only) with `Host: host`."""
        req = urllib.request.Request(f"http://{self.router}{path}", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def logs_tail(self, chars: int = 1500) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted((self.home / "logs").glob("*.log")))


def ports_in_use(env: dict[str, str]) -> list[str]:
    """The cluster's 127.0.0.1 ports that something already listens on."""
    etcd = int(env["PAAS_ETCD_PORT"])
    addresses = [f"127.0.0.1:{etcd}", f"127.0.0.1:{etcd + 1}", f"127.0.0.1:{env['PAAS_API_PORT']}",
                 env["PAAS_ROUTER_LISTEN"], env["PAAS_REGISTRY"], f"127.0.0.1:{env['PAAS_GIT_PORT']}"]
    busy = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, int(port))) == 0:
                busy.append(address)
    return busy


def containers_of(name: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=paas.cluster={name}"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def _raise_on_sigterm(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


@contextmanager
def local_cluster(name: str, port_offset: int, keep_logs: Path | None = None) -> Iterator[LocalCluster]:
    """Start a cluster of its own (`paas up`, printing how long that took) and always stop
    it (`paas down`), also when the benchmark fails, is interrupted or gets SIGTERM.
    With `keep_logs`, the cluster's logs are copied there before its $PAAS_HOME goes.

    Refuses (before `paas up`, and without `paas down`) when another cluster holds the
    slot's ports or runs containers under the same cluster name: `paas up` would take the
    other cluster's etcd and controller for its own, its agents would join that cluster
    under the same node names, and `paas down` would then remove that cluster's nodes."""
    settings = cluster_env(name, port_offset)
    busy, others = ports_in_use(settings), containers_of(name)
    if busy or others:
        sys.exit(f"refusing to start cluster {name!r} in port slot {port_offset}: "
                 + (f"something already listens on {', '.join(busy)}" if busy else "")
                 + ("; " if busy and others else "")
                 + (f"{len(others)} containers of a cluster named {name!r} exist" if others else "")
                 + " (another cluster? stop it first or use another slot)")
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    with tempfile.TemporaryDirectory(prefix=f"paas-{name}-", ignore_cleanup_errors=True) as home:
        # wide lines: rich wraps the CLI's messages at the terminal width, 80 without one
        env = {**os.environ, **settings, "PAAS_HOME": home, "COLUMNS": "400"}
        cluster = LocalCluster(name=name, home=Path(home), env=env)
        try:
            started = time.monotonic()
            up = cluster.paas("up")
            if up.returncode != 0:
                sys.exit(f"paas up failed: {up.stderr}\n{cluster.logs_tail()}")
            cluster.up_seconds = time.monotonic() - started
            print(f"paas up (cluster start): {cluster.up_seconds:.2f} s", flush=True)
            yield cluster
        finally:
            down = cluster.paas("down", timeout=180)
            if down.returncode != 0:
                print(f"warning: paas down failed: {down.stderr}", file=sys.stderr)
            if keep_logs is not None and (cluster.home / "logs").is_dir():
                shutil.copytree(cluster.home / "logs", keep_logs, dirs_exist_ok=True)
                print(f"cluster logs copied to {keep_logs}", file=sys.stderr)
            signal.signal(signal.SIGTERM, previous)


# -- figures -------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    """'median X s, min Y s, max Z s over N runs'."""
    return (f"median {statistics.median(values):.{digits}f} {unit}, min {min(values):.{digits}f} {unit}, "
            f"max {max(values):.{digits}f} {unit} over {len(values)} runs")
