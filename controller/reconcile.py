"""Pure: from desired state (apps, their current releases and scale) and actual
state (live nodes, assignments, available and routed replicas) to a Plan of
assignments to create, drain and delete. No I/O; `now` and `suffix` are
parameters so a run can be replayed.

Per app and process, with N the desired count, a rolling update in the manner
of a Kubernetes Deployment:
- the current release gets slots 0..N-1, but never more than N + max_surge
  replicas run at once (old ones included) while old ones remain;
- an old or surplus replica is drained only while N - max_unavailable others
  stay available (healthy, and routed where the process takes traffic);
- draining takes a routed replica out of the router first; it is deleted (its
  agent sends SIGTERM) once no router sends to it and its drain grace is over;
- assignments on nodes that are gone, or of apps and processes that are gone,
  are deleted at once.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

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
    drain: tuple[Assignment, ...] = ()     # to update with draining_since = now
    delete: tuple[Assignment, ...] = ()
    pending: Mapping[str, Mapping[str, str]] = field(default_factory=dict)   # app -> slot -> reason

    @property
    def empty(self) -> bool:
        return not self.create and not self.drain and not self.delete


@dataclass(frozen=True)
class Observed:
    """What agents and routers report, as sets of replica ids."""
    available: frozenset[str] = frozenset()   # healthy, and routed when the process has a port
    routed: frozenset[str] = frozenset()      # some router still sends traffic to it
    crashing: frozenset[str] = frozenset()    # failed RESCHEDULE_AFTER times on its node: move it


def replica_slot(app: str, process: str, index: int) -> str:
    return f"{app}.{process}.{index}"


def plan_assignments(releases: Mapping[str, Release], nodes: Mapping[str, Node],
                     assignments: Iterable[Assignment], observed: Observed, now: float,
                     suffix: Callable[[], str], scale: Mapping[str, Mapping[str, int]] | None = None) -> Plan:
    """`releases`: the current release of every app (the app is gone when absent);
    `scale`: app -> process -> count, overriding the release spec's replicas."""
    delete: list[Assignment] = []
    by_process: dict[tuple[str, str], list[Assignment]] = {}
    for a in assignments:
        release = releases.get(a.app)
        if a.node not in nodes or release is None or a.process not in release.spec.processes:
            delete.append(a)
        else:
            by_process.setdefault((a.app, a.process), []).append(a)

    room = _Room(nodes, [a for group in by_process.values() for a in group])
    keep: list[Assignment] = []
    staying: list[Assignment] = []     # current replicas: what an app's spread is counted from
    drain: list[Assignment] = []
    wanted: list[tuple[Release, str, int, frozenset[str]]] = []
    for app, release in sorted(releases.items()):
        for name, process in sorted(release.spec.processes.items()):
            count = (scale or {}).get(app, {}).get(name, process.replicas)
            step = _roll_process(release, name, count, by_process.get((app, name), []), observed, now, room)
            keep += step.keep
            staying += step.current
            drain += step.drain
            delete += step.delete
            wanted += [(release, name, i, step.avoid.get(i, frozenset())) for i in step.missing]

    created, pending = _place_missing(wanted, nodes, keep + drain, {a.id for a in staying}, suffix)
    return Plan(create=tuple(created), drain=tuple(drain), delete=tuple(delete), pending=pending)


@dataclass
class _Step:
    keep: list[Assignment] = field(default_factory=list)
    drain: list[Assignment] = field(default_factory=list)
    delete: list[Assignment] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    avoid: dict[int, frozenset[str]] = field(default_factory=dict)   # slot -> nodes it moves off
    current: list[Assignment] = field(default_factory=list)


class _Room:
    """What the rebalance check needs of the whole cluster, computed once a pass:
    which nodes run each app, what each node has free, which nodes fit which labels."""

    def __init__(self, nodes: Mapping[str, Node], assignments: list[Assignment]):
        self.nodes = nodes
        self.app_nodes: dict[str, set[str]] = {}
        self.used: dict[str, list[float]] = {name: [0.0, 0] for name in nodes}
        for a in assignments:
            self.app_nodes.setdefault(a.app, set()).add(a.node)
            self.used[a.node][0] += a.resources.cpu
            self.used[a.node][1] += a.resources.memory
        self._eligible: dict[tuple, list[str]] = {}

    def eligible(self, labels: Mapping[str, str]) -> list[str]:
        key = tuple(sorted(labels.items()))
        if key not in self._eligible:
            self._eligible[key] = sorted(n.name for n in self.nodes.values() if "worker" in n.roles
                                         and not n.draining and all(n.labels.get(k) == v for k, v in key))
        return self._eligible[key]

    def fits(self, node: str, cpu: float, memory: int) -> bool:
        n, (cpu_used, memory_used) = self.nodes[node], self.used[node]
        return cpu_used + cpu <= n.cpu + 1e-9 and memory_used + memory <= n.memory


def _roll_process(release: Release, process: str, count: int, existing: list[Assignment],
                  observed: Observed, now: float, room: _Room) -> _Step:
    nodes = room.nodes
    rollout = release.spec.rollout
    step = _Step()
    current, surplus, taken = [], [], set()
    # of two replicas for one slot, the one on the less loaded node stays (a rebalance's new one)
    load = Counter(a.node for a in existing)
    for a in sorted(existing, key=lambda a: (a.release != release.number, a.index, load[a.node], a.id)):
        if a.release == release.number and a.index < count and a.index not in taken \
                and a.draining_since is None:
            if nodes[a.node].draining or a.id in observed.crashing:
                step.avoid[a.index] = frozenset({a.node})   # replaced elsewhere first, then drained
                surplus.append(a)
                continue
            current.append(a)
            taken.add(a.index)
        else:
            surplus.append(a)   # old releases, scaled-down slots, duplicates, draining ones
    if not surplus and len(current) == count and all(a.id in observed.available for a in current):
        moving = _rebalance_candidate(release, process, current, room)
        if moving is not None:
            step.avoid[moving.index] = frozenset({moving.node})
            current.remove(moving)
            taken.discard(moving.index)
            surplus.append(moving)

    draining = [a for a in surplus if a.draining_since is not None]
    active = [a for a in surplus if a.draining_since is None]
    for a in draining:
        gone_from_routers = a.id not in observed.routed
        if gone_from_routers and now - a.draining_since >= a.drain:
            step.delete.append(a)
        else:
            step.keep.append(a)
    step.keep += current
    step.current = current

    missing = [i for i in range(count) if i not in taken]
    room = count + rollout.max_surge - len(current) - len(active) if active else len(missing)
    step.missing = missing[:max(0, room)]

    # Surplus that serves nothing goes first and freely; available surplus only
    # while enough others stay available.
    available = sum(1 for a in current + active if a.id in observed.available)
    may_drain = max(0, available - (count - rollout.max_unavailable))
    for a in sorted(active, key=lambda a: (a.id in observed.available, a.release, a.index)):
        if a.id not in observed.available:
            _retire(a, now, step, observed)
        elif may_drain > 0:
            may_drain -= 1
            _retire(a, now, step, observed)
        else:
            step.keep.append(a)
    return step


def _rebalance_candidate(release: Release, process: str, current: list[Assignment], room: _Room
                         ) -> Assignment | None:
    """One replica to move when a node runs two or more of the process while an
    eligible node with room runs nothing of the app (it joined or came back). The
    scheduler's spread sends the replacement to such a node, so every move fills an
    empty node and the moves end."""
    per_node = Counter(a.node for a in current)
    busiest = max(sorted(per_node), key=lambda n: per_node[n], default=None)
    if busiest is None or per_node[busiest] < 2:
        return None
    res = release.spec.processes[process].resources
    app_nodes = room.app_nodes.get(release.app, set())
    if not any(n not in app_nodes and room.fits(n, res.cpu, res.memory)
               for n in room.eligible(release.spec.node_labels)):
        return None
    return max((a for a in current if a.node == busiest), key=lambda a: a.index)


def _retire(a: Assignment, now: float, step: _Step, observed: Observed) -> None:
    """A replica some router sends to leaves the router first; others stop at once."""
    if a.port is not None and a.id in observed.routed:
        step.drain.append(replace(a, draining_since=now))
    else:
        step.delete.append(a)


def _place_missing(wanted: list[tuple[Release, str, int, frozenset[str]]], nodes: Mapping[str, Node],
                   keep: list[Assignment], staying: set[str], suffix: Callable[[], str]
                   ) -> tuple[list[Assignment], dict[str, dict[str, str]]]:
    """Place the missing slots. Every kept replica uses its node's resources, but only
    replicas that stay count for spread: a replica on its way out does not push its
    replacement onto a node that already runs a new one."""
    states = {n.name: NodeState(name=n.name, cpu=n.cpu, memory=n.memory, labels=dict(n.labels),
                                roles=tuple(n.roles), draining=n.draining, app_counts={})
              for n in nodes.values()}
    for a in keep:
        s = states[a.node]
        s.used_cpu += a.resources.cpu
        s.used_memory += a.resources.memory
        if a.id in staying:
            s.app_counts[a.app] = s.app_counts.get(a.app, 0) + 1
    demands = []
    for release, process_name, index, avoid in wanted:
        res = release.spec.processes[process_name].resources
        demands.append(Demand(key=replica_slot(release.app, process_name, index), app=release.app,
                              cpu=res.cpu, memory=res.memory, node_labels=dict(release.spec.node_labels),
                              avoid=avoid))
    placement = place(demands, list(states.values()))
    created, pending = [], {}
    for release, process_name, index, _ in wanted:
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
            health=(process.health or Health()) if process.port else None, resources=process.resources,
            drain=process.drain, stop_timeout=process.stop_timeout, restart=release.spec.restart))
    return created, pending
