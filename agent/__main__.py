"""`python -m agent`: run one node agent (role worker) or router (role router)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os

from agent.loop import NodeAgent
from agent.nginx import Nginx
from agent.routing import RouterAgent
from agent.runtime import DockerRuntime, wait_for_docker
from paas.model import Node
from paas.store import Store

VERSION = "0.1.0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent", description=__doc__)
    p.add_argument("--node", required=True, help="node name, unique in the cluster")
    p.add_argument("--address", required=True, help="IPv4 address containers publish their ports on")
    p.add_argument("--cluster", default="local", help="cluster name (labels its containers)")
    p.add_argument("--etcd", default="127.0.0.1:2379", help="comma-separated etcd client endpoints")
    p.add_argument("--role", choices=["worker", "router"], default="worker")
    p.add_argument("--cpu", type=float, default=float(os.cpu_count() or 1), help="cores offered")
    p.add_argument("--memory", type=int, default=2048, help="MiB offered")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--ttl", type=int, default=5, help="node lease TTL, seconds")
    p.add_argument("--docker-url", default="unix:///var/run/docker.sock",
                   help="this host's Docker Engine API, as the controller reaches it (builds on builder nodes)")
    p.add_argument("--keep-releases", type=int, default=5, help="app images kept per app: the last N releases")
    p.add_argument("--listen", default="127.0.0.1:8080", help="router: address nginx listens on")
    p.add_argument("--workdir", default="/tmp/paas-router", help="router: nginx working directory")
    p.add_argument("--cluster-domain", default="localhost", help="router: apps answer at <app>.<domain>")
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    labels = dict(kv.split("=", 1) for kv in args.label)
    node = Node(name=args.node, address=args.address, cpu=args.cpu, memory=args.memory * 1024 * 1024,
                labels=labels, roles=(args.role,), agent_version=VERSION,
                docker_url=args.docker_url if args.role == "worker" else "")
    store = Store(args.etcd.split(","))
    if args.role == "router":
        await RouterAgent(store, node, Nginx(args.workdir), args.listen, args.cluster_domain, args.ttl).run()
        return
    runtime = DockerRuntime(args.cluster, args.node, args.address, url=args.docker_url)
    if not await wait_for_docker(runtime, 30):
        raise SystemExit("dockerd is not reachable at /var/run/docker.sock; start it with `dockerd &` "
                         "or `paas up`")
    await NodeAgent(store, runtime, node, args.ttl, keep_releases=args.keep_releases).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse_args()))
