"""Pure: from desired state (apps and their current releases) and actual state
(live nodes, assignments, healthy replicas) to a Plan of assignments to create
and delete. No I/O; `suffix` is a parameter so a run can be replayed.

Rules, per app and process, with N the desired replica count:
- slots 0..N-1 of the current release each get one assignment, placed by `place`;
- assignments on nodes that are gone, of apps or processes that are gone, or
  beyond N, are deleted;
- assignments of older releases stay until enough current ones are healthy,
  so a new release never lowers the number of healthy replicas.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from controller.placement import Demand, NodeState, place
from paas.model import AppSpec, Assignment, Health, Node


@dataclass(frozen=True)
class Release:
    app: str
    number: int
    image: str
    spec: AppSpec
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    create: tuple[Assignment, ...] = ()
    delete: tuple[Assignment, ...] = ()
    pending: Mapping[str, Mapping[str, str]] = field(default_factory=dict)   # app -> slot -> reason

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete


def replica_slot(app: str, process: str, index: int) -> str:
    return f"{app}.{process}.{index}"


def plan_assignments(releases: Mapping[str, Release], nodes: Mapping[str, Node],
                     assignments: Iterable[Assignment], healthy: set[str],
                     suffix: Callable[[], str]) -> Plan:
    """`releases`: the current release of every app (the app is gone when absent)."""
    delete: list[Assignment] = []
    keep: list[Assignment] = []
    by_process: dict[tuple[str, str], list[Assignment]] = {}
    for a in assignments:
        release = releases.get(a.app)
        if a.node not in nodes or release is None or a.process not in release.spec.processes:
            delete.append(a)
        else:
            by_process.setdefault((a.app, a.process), []).append(a)

    wanted: list[tuple[Release, str, int]] = []
    for app, release in sorted(releases.items()):
        for process_name, process in sorted(release.spec.processes.items()):
            kept, dropped, missing = _diff_process(release, process_name, process.replicas,
                                                   by_process.get((app, process_name), []), healthy)
            keep += kept
            delete += dropped
            wanted += [(release, process_name, i) for i in missing]

    created, pending = _place_missing(wanted, nodes, keep, suffix)
    return Plan(create=tuple(created), delete=tuple(delete), pending=pending)


def _diff_process(release: Release, process: str, count: int, existing: list[Assignment],
                  healthy: set[str]) -> tuple[list[Assignment], list[Assignment], list[int]]:
    current = sorted((a for a in existing if a.release == release.number), key=lambda a: (a.index, a.id))
    old = sorted((a for a in existing if a.release != release.number), key=lambda a: (a.release, a.index, a.id))
    kept, dropped, taken = [], [], set()
    for a in current:
        if a.index < count and a.index not in taken:
            kept.append(a)
            taken.add(a.index)
        else:
            dropped.append(a)
    missing = [i for i in range(count) if i not in taken]
    # Old replicas cover for current ones that are not healthy yet; the oldest go first.
    healthy_current = sum(1 for a in kept if a.id in healthy)
    old_needed = max(0, count - healthy_current)
    healthy_old = [a for a in old if a.id in healthy]
    unhealthy_old = [a for a in old if a.id not in healthy]
    survivors = healthy_old[-old_needed:] if old_needed else []
    dropped += [a for a in healthy_old if a not in survivors] + unhealthy_old
    kept += survivors
    return kept, dropped, missing


def _place_missing(wanted: list[tuple[Release, str, int]], nodes: Mapping[str, Node],
                   keep: list[Assignment], suffix: Callable[[], str]
                   ) -> tuple[list[Assignment], dict[str, dict[str, str]]]:
    states = {n.name: NodeState(name=n.name, cpu=n.cpu, memory=n.memory, labels=dict(n.labels),
                                roles=tuple(n.roles), draining=n.draining, app_counts={})
              for n in nodes.values()}
    for a in keep:
        s = states[a.node]
        s.used_cpu += a.resources.cpu
        s.used_memory += a.resources.memory
        s.app_counts[a.app] = s.app_counts.get(a.app, 0) + 1
    demands = []
    for release, process_name, index in wanted:
        res = release.spec.processes[process_name].resources
        demands.append(Demand(key=replica_slot(release.app, process_name, index), app=release.app,
                              cpu=res.cpu, memory=res.memory, node_labels=dict(release.spec.node_labels)))
    placement = place(demands, list(states.values()))
    created, pending = [], {}
    for release, process_name, index in wanted:
        slot = replica_slot(release.app, process_name, index)
        node = placement.assigned.get(slot)
        if node is None:
            pending.setdefault(release.app, {})[slot] = placement.unplaced.get(slot, "not placed")
            continue
        process = release.spec.processes[process_name]
        created.append(Assignment(
            id=f"{release.app}.{process_name}.{release.number}.{index}-{suffix()}",
            app=release.app, process=process_name, release=release.number, index=index, node=node,
            image=release.image, command=process.command, env=dict(release.env), port=process.port,
            health=(process.health or Health()) if process.port else None, resources=process.resources))
    return created, pending
