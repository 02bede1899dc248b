"""`python -m controller`: the API, leader election and the reconcile loop."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from controller.api import make_app
from controller.builder import Builder
from controller.leader import Leadership
from controller.loops import Reconciler
from paas.store import Store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    p.add_argument("--etcd", default="127.0.0.1:2379", help="comma-separated etcd client endpoints")
    p.add_argument("--listen", default="127.0.0.1:7070", help="API address")
    p.add_argument("--token-file", required=True, help="file holding the API bearer token")
    p.add_argument("--cluster-domain", default="localhost")
    p.add_argument("--id", default=f"{socket.gethostname()}-{os.getpid()}", help="identity in elections")
    p.add_argument("--ttl", type=int, default=5, help="leader lease TTL, seconds")
    p.add_argument("--registry", default="127.0.0.1:5000", help="cluster registry that builds are pushed to")
    p.add_argument("--build-memory", type=int, default=2048, help="memory cap of one build, MiB")
    p.add_argument("--build-cpus", type=float, default=1.0, help="cpu cap of one build, cores")
    p.add_argument("--procfile-base", help="base image of Procfile apps (default <registry>/paas/python:3)")
    p.add_argument("--git-listen", help="address of the git server (`git push` over SSH), e.g. "
                   "127.0.0.1:2222; none by default")
    p.add_argument("--git-host-key", help="the git server's SSH host key, made when missing "
                   "(default: <git-dir>/../git_host_ed25519_key)")
    p.add_argument("--git-dir", default="git", help="directory of the bare repositories <app>.git")
    p.add_argument("--git-branch", default="main", help="the branch whose pushes deploy")
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    token = Path(args.token_file).read_text().strip()
    store = Store(args.etcd.split(","))
    leadership = Leadership(store, args.id, args.ttl)
    reconciler = Reconciler(store, leadership)
    builder = Builder(args.registry, memory=args.build_memory * 1024 * 1024, cpus=args.build_cpus,
                      procfile_base=args.procfile_base)
    runner = web.AppRunner(make_app(store, token, builder, args.cluster_domain), access_log=None)
    await runner.setup()
    host, _, port = args.listen.rpartition(":")
    await web.TCPSite(runner, host, int(port)).start()
    logging.info("controller %s: API on http://%s", args.id, args.listen)
    git = None
    if args.git_listen:
        from controller.gitserver import BRANCH, GitServer
        if not BRANCH.match(args.git_branch):
            raise SystemExit(f"--git-branch: not a branch name: {args.git_branch!r}")
        git_dir = Path(args.git_dir).resolve()
        api_host = host if host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        git = GitServer(store, f"http://{api_host}:{port}", token, git_dir,
                        Path(args.git_host_key or git_dir.parent / "git_host_ed25519_key"), args.git_branch)
        try:
            await git.start(args.git_listen)
        except OSError as e:     # the API and the loops still serve: say it and go on without git
            logging.error("git server: cannot listen on %s: %s", args.git_listen, e)
            git = None
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leadership.run())
            tg.create_task(reconciler.run())
    except asyncio.CancelledError:
        logging.info("controller %s: stopping", args.id)
    finally:
        if git is not None:
            git.close()
        await leadership.resign()
        await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse_args()))
