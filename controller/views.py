"""Pure: what the API shows, joined from etcd's desired and actual state.

A replica is what the controller assigned, plus what its node's agent reports
(status) and whether every live router sends traffic to it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paas.model import AppSpec


def replica_rows(assignments: Iterable[Mapping[str, Any]], statuses: Mapping[str, Mapping[str, Any]],
                 routers: Iterable[Mapping[str, Any]], live_nodes: set[str]) -> list[dict[str, Any]]:
    routers = list(routers)
    rows = []
    for a in sorted(assignments, key=lambda a: (a["app"], a["process"], a["index"], a["release"])):
        s = statuses.get(a["id"], {})
        routed = bool(routers) and a.get("port") is not None and all(
            a["id"] in r.get("routes", {}).get(a["app"], []) for r in routers)
        state = s.get("state", "pending")
        if a["node"] not in live_nodes:
            state = "node-lost"
        rows.append({
            "id": a["id"], "app": a["app"], "process": a["process"], "release": a["release"],
            "index": a["index"], "node": a["node"], "state": state, "healthy": bool(s.get("healthy")),
            "routed": routed, "image": a["image"], "endpoint": s.get("endpoint"),
            "restarts": s.get("restarts", 0), "exit_code": s.get("exit_code"),
            "oom_killed": s.get("oom_killed", False), "error": s.get("error"), "probe": s.get("probe"),
            "container": s.get("container"), "logs": s.get("logs"), "previous": s.get("previous"),
            "progress": s.get("progress"),
        })
    return rows


def rollout_state(spec: AppSpec, scale: Mapping[str, int], release: int, rows: list[dict[str, Any]],
                  pending: Mapping[str, str]) -> dict[str, Any]:
    """Counts of the current release, and `ready`: every replica of it healthy and,
    for routed processes, served by every router, with no other replica left."""
    desired = sum(scale.get(name, p.replicas) for name, p in spec.processes.items())
    current = [r for r in rows if r["release"] == release and r["state"] != "draining"]
    healthy = [r for r in current if r["healthy"]]
    routed_needed = [r for r in current if spec.processes[r["process"]].port is not None]
    routed = [r for r in routed_needed if r["routed"]]
    old = [r for r in rows if r not in current]
    ready = (len(current) == desired and len(healthy) == desired and len(routed) == len(routed_needed)
             and not old and not pending)
    return {"desired": desired, "current": len(current), "healthy": len(healthy), "routed": len(routed),
            "old": len(old), "pending": dict(pending), "ready": ready}
