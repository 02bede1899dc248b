"""Plain data shared by every process: the app spec and what lives in etcd.

Frozen dataclasses with no I/O. `to_dict`/`from_dict` give the JSON shape stored
in etcd and sent over the API, so every process reads the same thing.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Health:
    path: str = "/"
    interval: float = 2.0
    timeout: float = 1.0
    healthy_after: int = 1
    unhealthy_after: int = 3


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.1          # cores
    memory: int = 64 * MiB    # bytes


@dataclass(frozen=True)
class Process:
    name: str
    command: tuple[str, ...] | None = None
    replicas: int = 1
    port: int | None = None            # routed process when set
    health: Health | None = None       # defaults to Health() for routed processes
    resources: Resources = field(default_factory=Resources)
    drain: float = 5.0                 # seconds between leaving the router and SIGTERM
    stop_timeout: float = 10.0         # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Build:
    context: str = "."
    dockerfile: str = "Dockerfile"


@dataclass(frozen=True)
class Rollout:
    max_surge: int = 1
    max_unavailable: int = 0
    progress_deadline: float = 60.0    # seconds without a new replica becoming available -> roll back


@dataclass(frozen=True)
class RestartPolicy:
    backoff: float = 1.0          # first delay before a crashed container starts again
    max_backoff: float = 60.0     # the delay doubles up to this


@dataclass(frozen=True)
class AppSpec:
    name: str
    processes: Mapping[str, Process]
    image: str | None = None
    build: Build | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    domains: tuple[str, ...] = ()
    node_labels: Mapping[str, str] = field(default_factory=dict)   # spec: constraints.node_labels
    rollout: Rollout = field(default_factory=Rollout)
    restart: RestartPolicy = field(default_factory=RestartPolicy)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> AppSpec:
        procs = {}
        for name, p in d["processes"].items():
            procs[name] = Process(
                name=p["name"],
                command=tuple(p["command"]) if p.get("command") is not None else None,
                replicas=p["replicas"],
                port=p.get("port"),
                health=Health(**p["health"]) if p.get("health") else None,
                resources=Resources(**p.get("resources", {})),
                drain=p.get("drain", 5.0),
                stop_timeout=p.get("stop_timeout", 10.0),
            )
        return AppSpec(
            name=d["name"],
            processes=procs,
            image=d.get("image"),
            build=Build(**d["build"]) if d.get("build") else None,
            env=dict(d.get("env", {})),
            domains=tuple(d.get("domains", ())),
            node_labels=dict(d.get("node_labels", {})),
            rollout=Rollout(**d.get("rollout", {})),
            restart=RestartPolicy(**d.get("restart", {})),
        )


@dataclass(frozen=True)
class Node:
    """A host that runs containers (role `worker`) and/or nginx (role `router`)."""
    name: str
    address: str
    cpu: float
    memory: int
    labels: Mapping[str, str] = field(default_factory=dict)
    roles: tuple[str, ...] = ("worker",)
    agent_version: str = ""
    draining: bool = False
    docker_url: str = ""          # the node's Docker Engine API, for builds on a node labelled builder=true

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Node:
        return Node(
            name=d["name"], address=d["address"], cpu=d["cpu"], memory=d["memory"],
            labels=dict(d.get("labels", {})), roles=tuple(d.get("roles", ("worker",))),
            agent_version=d.get("agent_version", ""), draining=d.get("draining", False),
            docker_url=d.get("docker_url", ""),
        )


@dataclass(frozen=True)
class Assignment:
    """One replica for one node: everything the agent needs to run it, no look-ups."""
    id: str                   # <app>.<process>.<release>.<index>-<suffix>
    app: str
    process: str
    release: int
    index: int
    node: str
    image: str
    command: tuple[str, ...] | None
    env: Mapping[str, str]
    port: int | None
    health: Health | None
    resources: Resources
    drain: float = 5.0
    stop_timeout: float = 10.0
    draining_since: float | None = None     # wall clock; set when it leaves the router before it stops
    restart: RestartPolicy = field(default_factory=RestartPolicy)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Assignment:
        return Assignment(
            id=d["id"], app=d["app"], process=d["process"], release=d["release"],
            index=d["index"], node=d["node"], image=d["image"],
            command=tuple(d["command"]) if d.get("command") is not None else None,
            env=dict(d.get("env", {})), port=d.get("port"),
            health=Health(**d["health"]) if d.get("health") else None,
            resources=Resources(**d.get("resources", {})),
            drain=d.get("drain", 5.0), stop_timeout=d.get("stop_timeout", 10.0),
            draining_since=d.get("draining_since"), restart=RestartPolicy(**d.get("restart", {})),
        )


def _plain(obj: Any) -> Any:
    """Dataclasses, tuples and mappings as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
