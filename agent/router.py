"""Pure: the nginx configuration of a router, from apps and healthy endpoints.

Only values that passed validation reach the template: app names and domains
come from validated specs, endpoint addresses are checked here again, so
nothing from etcd can inject nginx syntax.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_APP = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class Route:
    app: str
    hosts: tuple[str, ...]
    servers: tuple[str, ...]      # "address:port" of healthy replicas
    replicas: tuple[str, ...]     # their replica ids, in the same order

    @property
    def upstream(self) -> str:
        return self.app.replace("-", "_")


def routed_process(spec: Mapping[str, Any]) -> str | None:
    """The process that receives HTTP: `web` when it has a port, else the first that has one."""
    processes = spec.get("processes", {})
    if processes.get("web", {}).get("port"):
        return "web"
    return next((name for name in sorted(processes) if processes[name].get("port")), None)


def build_routes(apps: Iterable[Mapping[str, Any]], endpoints: Iterable[Mapping[str, Any]],
                 cluster_domain: str) -> list[Route]:
    """apps: the `/paas/apps/*` values; endpoints: the `/paas/endpoints/*/*` values."""
    by_app: dict[str, list[tuple[str, str]]] = {}
    for ep in endpoints:
        if _valid_address(ep.get("address", "")):
            by_app.setdefault(ep.get("app", ""), []).append((ep["address"], ep.get("replica", ""), ep.get("process")))
    routes = []
    for app in sorted(apps, key=lambda a: a["spec"]["name"]):
        spec = app["spec"]
        name = spec["name"]
        process = routed_process(spec)
        if process is None or not _APP.match(name):
            continue
        hosts = tuple(h for h in [f"{name}.{cluster_domain}", *spec.get("domains", [])] if _HOST.match(h))
        eps = sorted((addr, rep) for addr, rep, proc in by_app.get(name, []) if proc == process)
        routes.append(Route(app=name, hosts=hosts, servers=tuple(a for a, _ in eps),
                            replicas=tuple(r for _, r in eps)))
    return routes


def render_nginx_config(routes: list[Route], listen: str, workdir: str) -> tuple[str, str]:
    """The whole nginx.conf and its generation (a hash of what it routes)."""
    digest = hashlib.sha256(repr((routes, listen, workdir)).encode()).hexdigest()[:16]
    text = _TEMPLATES.get_template("nginx.conf.j2").render(
        routes=routes, listen=listen, workdir=workdir, generation=digest)
    return text, digest


def _valid_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536
