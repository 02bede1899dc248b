"""`paas`: argv -> controller API calls -> rich tables and progress. No business
rules here: the spec is validated by paas.spec, everything else by the controller."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from paas import cli_git, localcluster
from paas.baseimage import BaseImageError, ensure_base_image, ensure_python_base_image
from paas.client import ApiError, Client, describe_replica, rollout_outcome
from paas.context import ContextError, pack_context
from paas.spec import SpecError, load_spec_file

# Piped output keeps whole ids and endpoints instead of folding them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _client() -> Client:
    home = localcluster.paas_home()
    config = localcluster.load_config(home)
    url = os.environ.get("PAAS_API_URL") or (config.api_url if config else None)
    token = os.environ.get("PAAS_TOKEN")
    if token is None and (home / "token").exists():
        token = (home / "token").read_text().strip()
    if not url or not token:
        raise ApiError(0, f"no cluster known in {home} (set PAAS_HOME, or start one with `paas up`)")
    return Client(url, token)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.0f}Mi"


# -- cluster ---------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    home = localcluster.paas_home()
    with err.status("starting the local cluster") as status:
        config = localcluster.up(home, localcluster.ClusterConfig.from_env(),
                                 lambda msg: status.update(f"starting the local cluster: {msg}"),
                                 controllers=args.controllers, etcd_members=args.etcd_members)
    out.print(f"[green]cluster up[/]: API {config.api_url}, router http://{config.router_listen}, "
              f"registry {config.registry}, etcd {config.etcd}, nodes {', '.join(config.nodes)}, "
              f"git ssh://git@127.0.0.1:{config.git_port}; state in {home}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    localcluster.down(localcluster.paas_home(), lambda msg: err.print(msg))
    out.print("[green]cluster down[/] (state kept in $PAAS_HOME)")
    return 0


def cmd_base_image(args: argparse.Namespace) -> int:
    config = localcluster.load_config(localcluster.paas_home()) or localcluster.ClusterConfig.from_env()
    registry = args.registry or config.registry
    out.print(ensure_base_image(registry, lambda m: err.print(m), force=args.force))
    out.print(ensure_python_base_image(registry, lambda m: err.print(m), force=args.force))
    return 0


# -- apps --------------------------------------------------------------------------------

def cmd_deploy(args: argparse.Namespace) -> int:
    try:
        spec = load_spec_file(args.spec)
    except SpecError as e:
        for problem in e.problems:   # plain lines: editors and grep read file:line: from them
            print(problem, file=sys.stderr)
        err.print(f"[red]{len(e.problems)} problem(s) in {args.spec}; nothing was deployed[/]")
        return 1
    client = _client()
    text = Path(args.spec).read_text()
    if args.plan:
        return _plan(client, spec, text, args)
    source = None
    if spec.build is not None:
        source = _build(client, spec, Path(args.spec).resolve().parent)
        if source is None:
            return 1
    result = client.deploy(text, args.spec, build=source, allow_downtime=args.allow_downtime)
    return _follow(client, result, args)


def _plan(client: Client, spec, text: str, args: argparse.Namespace) -> int:
    """Print what `paas deploy` would change; apply nothing (not even a build)."""
    built = pending = None
    if spec.build is not None:
        try:
            packed = pack_context((Path(args.spec).resolve().parent / spec.build.context).resolve(),
                                  spec.build.dockerfile)
        except ContextError as e:
            err.print(f"[red]error:[/] {e}", highlight=False)
            return 1
        cached = client.build_record(spec.name, packed.source_hash)
        built, pending = (packed.source_hash, None) if cached else (None, packed.source_hash)
    plan = client.plan(text, args.spec, build=built, build_pending=pending)
    if args.json:
        _print_json(plan)
        return 0
    out.print(f"[bold]{plan['app']}[/]: {plan['strategy']}")
    image = plan["image"]
    out.print(f"  image:    {image['to']}" if image["from"] in (None, image["to"])
              else f"  image:    {image['from']}\n         -> {image['to']}", highlight=False)
    env = plan["env"]
    for label, keys_ in (("added", env["added"]), ("changed", env["changed"]), ("removed", env["removed"])):
        if keys_:
            out.print(f"  env {label}: {', '.join(keys_)}", highlight=False)
    for process, r in plan["replicas"].items():
        note = "" if r["from"] == r["to"] else f" -> {r['to']}"
        out.print(f"  {process}: {r['from']}{note} replicas", highlight=False)
    out.print(f"  rollout:  max_surge {plan['rollout']['max_surge']}, "
              f"max_unavailable {plan['rollout']['max_unavailable']}")
    placement = plan["placement"]
    for node, replicas in sorted(placement["nodes"].items()):
        out.print(f"  {node}: {', '.join(replicas)}", highlight=False)
    for slot, reason in placement["pending"].items():
        out.print(f"  [red]{slot} cannot be placed: {reason}[/]", highlight=False)
    for problem in plan["downtime"]:
        out.print(f"  [red]downtime: {problem} (needs --allow-downtime)[/]", highlight=False)
    out.print("nothing was applied (--plan)")
    return 0


def _follow(client: Client, result: dict[str, Any], args: argparse.Namespace) -> int:
    """Say what a deploy-like call recorded, then wait for its rollout (unless --no-wait)."""
    name, number = result["app"], result["release"]
    if result["changed"]:
        verb = f"release v{number}" + (" queued behind the rollout under way" if result.get("queued") else "")
        if result.get("superseded"):
            verb += f" (supersedes queued v{result['superseded']})"
    else:
        verb = f"unchanged, still v{number}" + (" (scale updated)" if result.get("scaled") else "")
    err.print(f"{name}: {verb}")
    if args.no_wait:
        return 0
    app = _wait_rollout(client, name, number, args.timeout)
    if app is None:
        return 1
    out.print(f"[green]{name} v{number} is up[/]: "
              + ", ".join(f"http://{h}" for h in app["hosts"][:1]) + _router_hint())
    return 0


def _build(client: Client, spec, spec_dir: Path) -> str | None:
    """Build the spec's context once: upload it unless the controller has built
    this exact source before. Returns the source hash, None on failure."""
    context_dir = (spec_dir / spec.build.context).resolve()
    try:
        packed = pack_context(context_dir, spec.build.dockerfile)
    except ContextError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        return None
    cached = client.build_record(spec.name, packed.source_hash)
    if cached is not None:
        err.print(f"{spec.name}: cached {cached['digest']} (source {packed.source_hash[:16]}), no build")
        return packed.source_hash
    err.print(f"{spec.name}: building {context_dir} ({packed.files} files, {packed.size / 1024:.0f} KiB)")
    with err.status(f"building {spec.name}") as status:
        for event in client.build(spec.name, packed.source_hash, spec.build.dockerfile, packed.file, packed.size):
            if "error" in event:
                err.print(f"[red]build of {spec.name} failed[/]" + (f" at {event['step']}" if event.get("step") else ""))
                for line in event.get("log_tail") or []:
                    print(f"  {line}", file=sys.stderr)
                print(f"error: {event['error']}", file=sys.stderr)
                return None
            if "done" in event:
                err.print(f"{spec.name}: built and pushed {event['done']['image']}")
                return packed.source_hash
            if "log" in event:
                err.print(f"  {event['log']}", markup=False, highlight=False, style="dim")
            elif "status" in event:     # where it builds, queued behind another build, pushing
                err.print(f"{spec.name}: {event['status']}", markup=False, highlight=False)
            else:
                status.update(f"building {spec.name}: {event.get('step') or event.get('status') or event.get('progress')}")
    err.print(f"[red]build of {spec.name} ended without a result[/]")
    return None


def _router_hint() -> str:
    config = localcluster.load_config(localcluster.paas_home())
    if config is None:
        return ""
    return f" (through the router: curl -H 'Host: <host>' http://{config.router_listen}/)"


def _wait_rollout(client: Client, name: str, number: int, timeout: float) -> dict[str, Any] | None:
    """Wait until release `number` of the app is rolled out; None (after saying why) when
    it failed and was rolled back, was superseded, or the timeout ran out."""
    deadline = time.monotonic() + timeout
    with err.status(f"rolling out {name} v{number}") as status:
        while True:
            app = client.app(name)
            outcome, r = rollout_outcome(app, number), app["rollout"]
            if outcome == "done":
                return app
            if outcome == "failed":
                status.stop()
                _print_failure(name, number, app["deploy"])
                return None
            if outcome == "superseded":
                status.stop()
                err.print(f"[red]{name} v{number} was superseded by a newer release[/]")
                return None
            if outcome == "queued":
                status.update(f"{name} v{number} is queued behind the rollout of v{app['release']}")
            else:
                status.update(f"rolling out {name} v{number}: {r['healthy']}/{r['desired']} healthy, "
                              f"{r['routed']} routed, {r['old']} old left")
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
    err.print(f"[red]{name} v{number} is not ready after {timeout:g}s[/]")
    for slot, reason in r["pending"].items():
        err.print(f"  {slot}: pending: {reason}", markup=False)
    for rep in app["replicas"]:
        if not (rep["healthy"] and rep["routed"]):
            _print_replica(rep)
    return None


def _print_failure(name: str, number: int, deploy: dict[str, Any]) -> None:
    where = f", rolled back to v{deploy['previous']}" if deploy["phase"] == "rolled-back" else ""
    err.print(f"[red]{name} v{number} failed{where}: {deploy.get('reason')}[/]", highlight=False)
    for rep in deploy.get("failing") or []:
        _print_replica(rep)


def _print_replica(rep: dict[str, Any]) -> None:
    for line in describe_replica(rep):
        print(line, file=sys.stderr)


def cmd_apps(args: argparse.Namespace) -> int:
    apps = _client().apps()
    if args.json:
        _print_json([{k: a[k] for k in ("app", "release", "image", "hosts", "rollout")} for a in apps])
        return 0
    table = Table("APP", "RELEASE", "REPLICAS", "HOSTS", "IMAGE")
    for a in apps:
        r = a["rollout"]
        table.add_row(a["app"], f"v{a['release']}", f"{r['healthy']}/{r['desired']}", " ".join(a["hosts"]),
                      a["image"] or "")
    out.print(table)
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    app = _client().app(args.app)
    if args.json:
        _print_json(app["replicas"])
        return 0
    table = Table("REPLICA", "PROCESS", "REL", "NODE", "STATE", "HEALTHY", "ROUTED", "RESTARTS", "LAST EXIT",
                  "ENDPOINT")
    for r in app["replicas"]:
        previous = r.get("previous") or {}
        exit_code = r["exit_code"] if r["state"] != "running" else previous.get("exit_code")
        last_exit = "" if exit_code is None else str(exit_code)
        if r.get("oom_killed") or previous.get("oom_killed"):
            last_exit += " (OOM-killed)"
        table.add_row(r["id"], r["process"], f"v{r['release']}", r["node"], r["state"],
                      "yes" if r["healthy"] else "no", "yes" if r["routed"] else "-",
                      str(r["restarts"]), last_exit, r["endpoint"] or "")
    out.print(table)
    for slot, reason in app["rollout"]["pending"].items():
        out.print(f"{slot}: pending: {reason}", markup=False)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    images = _client().images(args.app)
    if args.json:
        _print_json(images)
        return 0
    table = Table("IMAGE", "TAG", "SIZE", "RELEASES", "BUILT")
    for i in images:
        table.add_row(i["image"], i["tag"].rsplit(":", 1)[1], _mib(i["size"]),
                      ", ".join(f"v{n}" for n in i["releases"]) or "-",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i["created"])))
    out.print(table)
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    releases = _client().releases(args.app)
    if args.json:
        _print_json(releases)
        return 0
    table = Table("RELEASE", "IMAGE", "CONFIG", "WHEN", "WHAT", "OUTCOME")
    for r in releases:
        mark = " (current)" if r["current"] else " (queued)" if r["queued"] else ""
        table.add_row(f"v{r['release']}{mark}", r["image"], ",".join(r["env_keys"]) or "-",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])), r["note"] or "",
                      r["outcome"] or ("rolling out" if r["current"] else "-"))
    out.print(table)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    to = None
    if args.release:
        if not args.release.lstrip("v").isdigit():
            err.print(f"[red]error:[/] release must look like v3 or 3, got {args.release!r}")
            return 1
        to = int(args.release.lstrip("v"))
    client = _client()
    return _follow(client, client.rollback(args.app, to), args)


def cmd_scale(args: argparse.Namespace) -> int:
    counts = {}
    for word in args.counts:
        process, _, n = word.partition("=")
        if not n.isdigit():
            err.print(f"[red]error:[/] expected PROCESS=COUNT such as web=3, got {word!r}")
            return 1
        counts[process] = int(n)
    client = _client()
    result = client.scale(args.app, counts)
    err.print(f"{args.app}: scale " + " ".join(f"{p}={n}" for p, n in sorted(result["scale"].items())))
    if args.no_wait:
        return 0
    app = client.app(args.app)
    return 0 if _wait_rollout(client, args.app, app["release"], args.timeout) else 1


def cmd_config(args: argparse.Namespace) -> int:
    words = args.words
    client = _client()
    if words[0] in ("set", "unset"):
        if len(words) < 3:
            err.print(f"[red]error:[/] usage: paas config {words[0]} APP " + ("KEY=VALUE ..." if words[0] == "set"
                                                                            else "KEY ..."))
            return 1
        app, items = words[1], words[2:]
        if words[0] == "set":
            bad = [w for w in items if "=" not in w]
            if bad:
                err.print(f"[red]error:[/] expected KEY=VALUE, got {bad[0]!r}")
                return 1
            result = client.set_config(app, dict(w.split("=", 1) for w in items), [])
        else:
            result = client.set_config(app, {}, items)
        return _follow(client, result, args)
    config = client.config(words[0])
    if args.json:
        _print_json(config)
        return 0
    table = Table("KEY", "VALUE", "FROM")
    for k, v in sorted(config["env"].items()):
        table.add_row(k, v, "config" if k in config["config"] else "spec")
    out.print(table)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    client = _client()
    client.destroy(args.app)
    deadline = time.monotonic() + args.timeout
    with err.status(f"destroying {args.app}") as status:
        while (left := client.remaining(args.app)) and time.monotonic() < deadline:
            status.update(f"destroying {args.app}: {left} replica(s) left")
            time.sleep(0.3)
    if left:
        err.print(f"[red]{args.app}: {left} replica(s) still running after {args.timeout:g}s[/]")
        return 1
    out.print(f"[green]{args.app} destroyed[/]")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    client = _client()
    client.node(args.node, args.verb)
    if args.verb == "undrain":
        out.print(f"{args.node} takes replicas again")
        return 0
    if args.verb == "forget":
        out.print(f"{args.node} forgotten")
        return 0
    deadline = time.monotonic() + args.timeout
    with err.status(f"draining {args.node}") as status:
        while time.monotonic() < deadline:
            left = [r for a in client.apps() for r in a["replicas"] if r["node"] == args.node]
            if not left:
                out.print(f"[green]{args.node} is drained[/]: no replica runs there")
                return 0
            status.update(f"draining {args.node}: {len(left)} replica(s) left")
            time.sleep(0.5)
    err.print(f"[red]{args.node} still runs replicas after {args.timeout:g}s[/] (see `paas ps APP` for why)")
    return 1


def cmd_logs(args: argparse.Namespace) -> int:
    app = _client().app(args.app)
    shown = 0
    for r in app["replicas"]:
        if args.replica and not r["id"].startswith(args.replica):
            continue
        if args.previous:
            previous = r.get("previous")
            if not previous:
                continue
            oom = ", OOM-killed" if previous.get("oom_killed") else ""
            print(f"==> {r['id']} on {r['node']}: previous container exited {previous.get('exit_code')}{oom} "
                  f"at {previous.get('finished_at')}")
            lines = previous.get("logs") or []
        else:
            print(f"==> {r['id']} on {r['node']}: {r['state']}")
            lines = r.get("logs") or []
        for line in lines[-args.tail:]:
            print(line)
        shown += 1
    if not shown:
        what = "no replica has a previous (crashed) container" if args.previous else "no replica matches"
        err.print(f"{args.app}: {what}")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = _client().nodes()
    if args.json:
        _print_json(nodes)
        return 0
    table = Table("NODE", "ADDRESS", "ROLES", "STATE", "REPLICAS", "CPU", "MEMORY", "LABELS")
    for n in nodes:
        table.add_row(n["name"], n["address"], ",".join(n["roles"]), n["state"], str(n["replicas"]),
                      f"{n['cpu_used']:g}/{n['cpu']:g}", f"{_mib(n['memory_used'])}/{_mib(n['memory'])}",
                      ",".join(f"{k}={v}" for k, v in n["labels"].items()))
    out.print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _client().status()
    if args.json:
        _print_json(status)
        return 0
    out.print(f"etcd {status['etcd']['endpoints']} (revision {status['etcd']['revision']}), "
              f"leader {status['leader'] or '[red]none[/]'}, "
              f"{len([n for n in status['nodes'] if 'worker' in n['roles']])} worker node(s), "
              f"routers: {', '.join(status['routers']) or '[red]none[/]'}")
    table = Table("APP", "RELEASE", "DESIRED", "HEALTHY", "ROUTED", "PENDING", "READY")
    for a in status["apps"]:
        table.add_row(a["app"], f"v{a['release']}", str(a["desired"]), str(a["healthy"]), str(a["routed"]),
                      str(len(a["pending"])), "yes" if a["ready"] else "no")
    out.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paas", description="A small platform-as-a-service: deploy YAML app specs as replicas "
        "across Docker hosts, routed by nginx. State: etcd. Cluster files: $PAAS_HOME (default ~/.paas).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def waiting(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--no-wait", action="store_true", help="return once the change is recorded")
        sp.add_argument("--timeout", type=float, default=300, help="seconds to wait for the rollout")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("up", cmd_up, "start the local cluster: dockerd (if needed), etcd, registry, controller, "
             "3 agents (127.0.0.11-13), router on 127.0.0.1:8080, git on 127.0.0.1:2222; idempotent: "
             "starts only what is not running")
    sp.add_argument("--controllers", type=int, choices=range(1, 6), metavar="N",
                    help="controllers to run (one leads, the others stand by; API ports 7070, 7071, ...)")
    sp.add_argument("--etcd-members", type=int, choices=(1, 3, 5), metavar="N",
                    help="etcd members (1, 3 or 5), chosen when the cluster is first made")
    add("down", cmd_down, "stop everything `paas up` started; apps stay in etcd")
    sp = add("base-image", cmd_base_image, "build the base images and push them to the cluster registry: "
             "<registry>/paas/busybox (from busybox-static) and <registry>/paas/python:3 (Debian with "
             "python3, by debootstrap: about a minute, once per machine). `paas up` does this too.")
    sp.add_argument("--registry", help="registry address (default: the cluster's)")
    sp.add_argument("--force", action="store_true", help="rebuild even when present")
    sp = add("deploy", cmd_deploy, "create or update an app from a YAML spec and wait until every replica "
             "is healthy and routed; a spec with `build:` has its context built once and pushed to the "
             "cluster registry (the same source again builds nothing)")
    sp.add_argument("spec", help="path of the app spec (YAML)")
    waiting(sp)
    sp.add_argument("--plan", action="store_true", help="show what would change (image, env keys, replicas, "
                    "placement, strategy) and apply nothing")
    sp.add_argument("--json", action="store_true", help="with --plan: machine-readable output")
    sp.add_argument("--allow-downtime", action="store_true",
                    help="roll out even when the spec's rollout limits stop every replica at once")
    for name, fn, help_ in (("apps", cmd_apps, "list apps"), ("nodes", cmd_nodes, "list nodes"),
                            ("status", cmd_status, "cluster status: etcd, leader, nodes, routers, apps")):
        add(name, fn, help_).add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("node", cmd_node, "paas node drain NODE: move every replica off the node, health-gated, and "
             "wait; paas node undrain NODE: let it take replicas again; paas node forget NODE: remove a "
             "lost node from `paas nodes` for good")
    sp.add_argument("verb", choices=["drain", "undrain", "forget"])
    sp.add_argument("node")
    sp.add_argument("--timeout", type=float, default=300, help="seconds to wait for the drain")
    sp = add("logs", cmd_logs, "the last log lines the agents kept: --previous shows the exit and last lines "
             "of each replica's crashed container; without it, lines of replicas that fail now")
    sp.add_argument("app")
    sp.add_argument("--previous", action="store_true", help="the last crashed container of each replica")
    sp.add_argument("--replica", help="only replicas whose id starts with this")
    sp.add_argument("--tail", type=int, default=50, help="lines per replica")
    sp = add("ps", cmd_ps, "list the replicas of an app")
    sp.add_argument("app")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("releases", cmd_releases, "the releases of an app: image, config keys, when, what made it, outcome")
    sp.add_argument("app")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("rollback", cmd_rollback, "make a new release equal to an earlier one (default: the one before "
             "the current) and roll it out")
    sp.add_argument("app")
    sp.add_argument("release", nargs="?", help="the release to go back to, e.g. v3")
    waiting(sp)
    sp = add("scale", cmd_scale, "set the desired replica counts (not deltas), e.g. paas scale hello web=5 "
             "worker=2; no release, no restart")
    sp.add_argument("app")
    sp.add_argument("counts", nargs="+", metavar="PROCESS=COUNT")
    waiting(sp)
    sp = add("config", cmd_config, "show config (paas config APP), or change it: paas config set APP KEY=VALUE "
             "..., paas config unset APP KEY ...; each change is a new release, rolled out")
    sp.add_argument("words", nargs="+", metavar="[set|unset] APP [KEY=VALUE|KEY ...]")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    waiting(sp)
    sp = add("images", cmd_images, "the images built for an app, their sizes and the releases using them")
    sp.add_argument("app")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("destroy", cmd_destroy, "delete an app: every container and route of it goes")
    sp.add_argument("app")
    sp.add_argument("--timeout", type=float, default=120, help="seconds to wait for its containers to go")
    cli_git.register(sub, add)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ApiError as e:
        err.print(f"[red]error:[/] {e.message}", highlight=False)
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    except (localcluster.ClusterError, BaseImageError) as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
