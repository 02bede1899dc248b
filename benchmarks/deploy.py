"""Seconds from `paas deploy` to every replica healthy and routed, for 3 and 12
replicas of an image already in the registry, on a real local cluster.

Run: .venv/bin/python benchmarks/deploy.py [--runs N]
It starts its own cluster (`paas up`) under a temporary $PAAS_HOME with ports
of its own, and stops it at the end. Prints figures; asserts nothing on time.
"""
from __future__ import annotations

import argparse
import sys
import time

from common import local_cluster, spread

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="deploys per replica count")
    args = parser.parse_args()
    with local_cluster("bench", port_offset=1) as cluster:
        for replicas in (3, 12):
            times = []
            for run in range(args.runs):
                name = f"bench{replicas}-{run}"
                spec = cluster.home / f"{name}.yaml"
                spec.write_text(SPEC.format(name=name, registry=cluster.registry, run=run, replicas=replicas))
                t0 = time.monotonic()
                result = cluster.paas("deploy", str(spec))
                elapsed = time.monotonic() - t0
                if result.returncode != 0:
                    sys.exit(f"deploy failed: {result.stderr}")
                times.append(elapsed)
                destroy = cluster.paas("destroy", name)
                if destroy.returncode != 0:
                    sys.exit(f"destroy failed: {destroy.stderr}")
            print(f"deploy {replicas:2d} replicas on 3 nodes to healthy+routed: {spread(times)}")


if __name__ == "__main__":
    main()
