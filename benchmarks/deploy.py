"""Seconds from `paas deploy` to every replica healthy and routed, for 3 and 12
replicas of an image already in the registry, on a real local cluster.

Run: .venv/bin/python benchmarks/deploy.py [--runs N]
It starts its own cluster (`paas up`) under a temporary $PAAS_HOME with ports
of its own, and stops it at the end. Prints figures; asserts nothing on time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "PAAS_CLUSTER": "bench", "PAAS_ETCD_PORT": "24790", "PAAS_API_PORT": "17170",
    "PAAS_ROUTER_LISTEN": "127.0.0.1:18180", "PAAS_REGISTRY": "127.0.0.1:15100",
    "PAAS_NODES": "127.0.0.31,127.0.0.32,127.0.0.33",
}
SPEC = """\
name: {name}
image: {registry}/paas/busybox:latest
env: {{RUN: "{run}"}}
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "$PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: {replicas}
    port: 8000
    health: {{path: /, interval: 0.25s, timeout: 0.25s}}
    resources: {{cpu: 0.05, memory: 16Mi}}
"""


def paas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paas.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="deploys per replica count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, **ENV, "PAAS_HOME": home}
        started = time.monotonic()
        up = paas(env, "up")
        if up.returncode != 0:
            sys.exit(f"paas up failed: {up.stderr}")
        print(f"paas up (cluster start): {time.monotonic() - started:.2f} s")
        try:
            for replicas in (3, 12):
                times = []
                for run in range(args.runs):
                    name = f"bench{replicas}-{run}"
                    spec = Path(home) / f"{name}.yaml"
                    spec.write_text(SPEC.format(name=name, registry=ENV["PAAS_REGISTRY"], run=run,
                                                replicas=replicas))
                    t0 = time.monotonic()
                    result = paas(env, "deploy", str(spec))
                    elapsed = time.monotonic() - t0
                    if result.returncode != 0:
                        sys.exit(f"deploy failed: {result.stderr}")
                    times.append(elapsed)
                    destroy = paas(env, "destroy", name)
                    if destroy.returncode != 0:
                        sys.exit(f"destroy failed: {destroy.stderr}")
                print(f"deploy {replicas:2d} replicas on 3 nodes to healthy+routed: "
                      f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
                      f"max {max(times):.2f} s over {len(times)} runs")
        finally:
            paas(env, "down")


if __name__ == "__main__":
    main()
