"""Placement: which node runs each waiting replica. Pure: no I/O, no clock, no randomness.

Owns one decision only. Given the replicas waiting for a node (`Demand`) and the
nodes with what already runs on them (`NodeState`), `place()` says where each
replica goes, or why it cannot go anywhere. The caller turns the answer into
Assignments; nothing here reads etcd, talks to agents or keeps state between calls.

Modelled on Nomad (scheduler/feasible.go, then rank.go) and the Kubernetes
scheduler framework (filter plugins, then score plugins), but small:

* Filters: each is `(node, demand) -> None` when the node can take the replica,
  else a short reason. A node must be a worker, not draining, carry every label
  the demand asks for, and have room for its cpu and memory.
* Scores, each 0-100, combined as SPREAD_WEIGHT * spread + FREE_WEIGHT * free.
  spread = 100 - replicas of the same app already on the node (floor 0); its
  weight is larger than any free score, so fewer replicas of the app always wins:
  an app's replicas go on distinct nodes while there are enough, then evenly.
  free (least allocated) = mean of the node's free cpu share and free memory share,
  taken before the replica is added. Equal scores go to the lower node name, so
  the same input always gives the same output.

Demands are placed one at a time in the order given, each on the best node left
by those before it; the result is exactly what scoring every feasible node for
every demand would give (tests/test_placement.py checks this against brute force).

Speed: scoring every node for every demand is O(demands x nodes). Instead, per
distinct label constraint, a heap holds the feasible workers by free score: the
best node without a replica of the app is at or near its top. Per (app, kind of
demand) a small heap holds the nodes already running the app by (replicas, free).
Placing a replica only makes a node's key worse, so heaps are not updated when a
replica is placed: a popped entry whose key changed is pushed back with its current
key (lazy re-keying). Free is measured before the replica is added so that node
order does not depend on the demand's size and one heap serves many demands.
"""
from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_SCORE = 100
SPREAD_WEIGHT = MAX_SCORE + 1   # more than any free score: spread always decides first
FREE_WEIGHT = 1
CPU_SLACK = 1e-9                # float sums: ten 0.1-core replicas fit in 1 core

LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Demand:
    """One replica waiting for a node."""
    key: str                      # unique id of the replica
    app: str
    cpu: float                    # cores
    memory: int                   # bytes
    node_labels: Mapping[str, str] = field(default_factory=dict)   # node must have each, equal value
    avoid: frozenset[str] = frozenset()   # nodes this replica must leave: it kept failing there, or moves off


@dataclass
class NodeState:
    """A node and what already runs there. place() works on its own copies."""
    name: str
    cpu: float                    # capacity, cores
    memory: int                   # capacity, bytes
    labels: Mapping[str, str]
    roles: tuple[str, ...] = ("worker",)
    draining: bool = False
    used_cpu: float = 0.0
    used_memory: int = 0
    app_counts: dict[str, int] = field(default_factory=dict)   # replicas of each app on the node


@dataclass(frozen=True)
class Placement:
    assigned: dict[str, str]      # demand key -> node name
    unplaced: dict[str, str]      # demand key -> human reason


# Filters: None when the node can take the demand, else a short reason.

def is_worker(node: NodeState, d: Demand) -> str | None:
    return None if "worker" in node.roles else "not a worker"


def not_draining(node: NodeState, d: Demand) -> str | None:
    return "draining" if node.draining else None


def has_labels(node: NodeState, d: Demand) -> str | None:
    for k, v in sorted(d.node_labels.items()):
        if node.labels.get(k) != v:
            return f"missing label {k}={v}"
    return None


def not_avoided(node: NodeState, d: Demand) -> str | None:
    return "moving off this node" if node.name in d.avoid else None


def cpu_fits(node: NodeState, d: Demand) -> str | None:
    if node.used_cpu + d.cpu <= node.cpu + CPU_SLACK:
        return None
    return f"insufficient cpu (needs {d.cpu:g})"


def memory_fits(node: NodeState, d: Demand) -> str | None:
    if node.used_memory + d.memory <= node.memory:
        return None
    return f"insufficient memory (needs {format_bytes(d.memory)})"


FILTERS: tuple[Callable[[NodeState, Demand], str | None], ...] = (
    is_worker, not_draining, has_labels, not_avoided, cpu_fits, memory_fits)


def why_not(node: NodeState, d: Demand) -> str | None:
    """The first filter that rejects the node, or None if it can take the demand."""
    for f in FILTERS:
        reason = f(node, d)
        if reason is not None:
            return reason
    return None


def format_bytes(n: int) -> str:
    for unit, size in (("Gi", GiB), ("Mi", MiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n / MiB:.1f}Mi" if n >= MiB else f"{n}B"


# Scores, 0-100 each.

def spread_score(node: NodeState, app: str) -> int:
    return MAX_SCORE - min(node.app_counts.get(app, 0), MAX_SCORE)


def free_score(node: NodeState) -> float:
    cpu = (node.cpu - node.used_cpu) / node.cpu if node.cpu > 0 else 0.0
    mem = (node.memory - node.used_memory) / node.memory if node.memory > 0 else 0.0
    return MAX_SCORE * (min(max(cpu, 0.0), 1.0) + min(max(mem, 0.0), 1.0)) / 2


def score(node: NodeState, app: str) -> float:
    """What place() maximises; equal scores go to the lower node name.

    place() compares (spread, free) as a pair, which orders nodes exactly as this
    sum does but without float rounding between near-equal free scores.
    """
    return SPREAD_WEIGHT * spread_score(node, app) + FREE_WEIGHT * free_score(node)


def place(demands: Sequence[Demand], nodes: Sequence[NodeState]) -> Placement:
    """Place demands in order, each on the best feasible node given those placed before it."""
    s = _Scheduler(nodes)
    assigned: dict[str, str] = {}
    failed: list[Demand] = []
    for d in demands:
        i = s.place_one(d)
        if i is None:
            failed.append(d)
        else:
            assigned[d.key] = s.nodes[i].name
    reasons: dict[tuple, str] = {}
    unplaced: dict[str, str] = {}
    for d in failed:            # explained against the final state, once per kind of demand
        fk = _fit_key(d)
        if fk not in reasons:
            reasons[fk] = _explain(s.nodes, d)
        unplaced[d.key] = reasons[fk]
    return Placement(assigned=assigned, unplaced=unplaced)


def _label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items())) if labels else ()


def _fit_key(d: Demand) -> tuple:
    return (_label_key(d.node_labels), d.cpu, d.memory, d.avoid)


def _explain(nodes: Sequence[NodeState], d: Demand) -> str:
    if not any("worker" in n.roles for n in nodes):
        return "no worker nodes"
    counts = Counter(why_not(n, d) for n in nodes)
    fit = counts.pop(None, 0)
    parts = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{fit}/{len(nodes)} nodes fit: " + ", ".join(f"{c} {r}" for r, c in parts)


class _Scheduler:
    """Mutable state of one place() call: node copies and the lazily re-keyed heaps.

    Heaps hold node indices under keys that only grow as replicas are placed. A pool
    is every worker with some labels by free score; it is shared by all demands with
    those labels, until one kind of demand (fit key) has skipped more nodes too full
    for it than the pool holds: that kind then gets a copy from which such nodes are
    dropped for good (a node that is too full stays too full). An app heap holds, per
    (app, fit key), the nodes running the app by (replicas, free), too-full nodes
    dropped; once the app has skipped more of its own nodes in the pool than the
    pool holds, it gets every pool node, and the pool is no longer searched for it.
    """

    def __init__(self, nodes: Sequence[NodeState]) -> None:
        self.nodes = [dataclasses.replace(n, app_counts=dict(n.app_counts)) for n in nodes]
        self.free = [free_score(n) for n in self.nodes]        # kept current by _charge
        self.workers = [i for i, n in enumerate(self.nodes) if "worker" in n.roles and not n.draining]
        self.app_nodes: defaultdict[str, set[int]] = defaultdict(set)
        for i in self.workers:
            for app, count in self.nodes[i].app_counts.items():
                if count > 0:
                    self.app_nodes[app].add(i)
        self.members: dict[LabelKey, list[int]] = {}           # workers with the labels
        self.pools: dict[LabelKey, list[tuple]] = {}            # members by free score, shared
        self.own_pools: dict[tuple, list[tuple]] = {}           # a fit key's own copy
        self.app_heaps: defaultdict[str, dict[tuple, list[tuple]]] = defaultdict(dict)
        self.full: set[tuple] = set()                           # (app, fit key) whose heap has every member
        self.skips: Counter[tuple] = Counter()                  # work spent skipping, per fit key or app
        self.spread_done: set[tuple] = set()    # (app, fit key): no node without the app fits, ever
        self.no_room: set[tuple] = set()        # fit key: no node fits, ever

    def _pool_key(self, i: int) -> tuple:
        return (-self.free[i], self.nodes[i].name, i)

    def _app_key(self, app: str) -> Callable[[int], tuple]:
        nodes, free = self.nodes, self.free

        def key(i: int) -> tuple:
            return (min(nodes[i].app_counts.get(app, 0), MAX_SCORE), -free[i], nodes[i].name, i)
        return key

    def _matches(self, i: int, lkey: LabelKey) -> bool:
        labels = self.nodes[i].labels
        return all(labels.get(k) == v for k, v in lkey)

    def _pool(self, fk: tuple) -> tuple[list[tuple], bool]:
        """The pool for a kind of demand, and whether it is its own copy."""
        if fk in self.own_pools:
            return self.own_pools[fk], True
        lkey = fk[0]
        if lkey not in self.pools:
            self.members[lkey] = [i for i in self.workers if self._matches(i, lkey)]
            self.pools[lkey] = [self._pool_key(i) for i in self.members[lkey]]
            heapq.heapify(self.pools[lkey])
        return self.pools[lkey], False

    def _app_heap(self, app: str, fk: tuple) -> list[tuple]:
        heap = self.app_heaps[app].get(fk)
        if heap is None:
            key = self._app_key(app)
            heap = self.app_heaps[app][fk] = [key(i) for i in self.app_nodes[app] if self._matches(i, fk[0])]
            heapq.heapify(heap)
        return heap

    def place_one(self, d: Demand) -> int | None:
        """Index of the node chosen for d (already charged), or None if none fits."""
        fk = _fit_key(d)
        if fk in self.no_room:
            return None
        fits = self._fits_fn(d)
        if (d.app, fk) not in self.full and (d.app, fk) not in self.spread_done:
            i = self._place_spread(d, fk, fits)
            if i is not None:
                return i
        heap, key = self._app_heap(d.app, fk), self._app_key(d.app)
        i, _, _ = _pop_best(heap, key, fits, drop_unfit=True)     # the best node running the app
        if i is None:
            self.no_room.add(fk)
            return None
        self._charge(i, d)
        heapq.heappush(heap, key(i))
        return i

    def _place_spread(self, d: Demand, fk: tuple, fits: Callable[[int], bool]) -> int | None:
        """The best node with no replica of the app, from the pool (see the class doc)."""
        (pool, own), nodes, app = self._pool(fk), self.nodes, d.app
        i, taken, unfit = _pop_best(pool, self._pool_key, fits, lambda i: app not in nodes[i].app_counts
                                    or nodes[i].app_counts[app] == 0, drop_unfit=own)
        if i is None:
            self.spread_done.add((app, fk))
        else:
            self._charge(i, d)
            heapq.heappush(pool, self._pool_key(i))
        self.skips[fk] += unfit
        if not own and self.skips[fk] > len(pool):
            self.own_pools[fk] = list(pool)
        self.skips[app, fk] += taken
        if self.skips[app, fk] > len(pool):
            heap, key = self._app_heap(app, fk), self._app_key(app)
            heap += [key(j) for j in self.members[fk[0]] if nodes[j].app_counts.get(app, 0) == 0]
            heapq.heapify(heap)
            self.full.add((app, fk))
        return i

    def _fits_fn(self, d: Demand) -> Callable[[int], bool]:
        nodes, cpu, memory, avoid = self.nodes, d.cpu, d.memory, d.avoid

        def fits(i: int) -> bool:   # an avoided node never fits this kind of demand (it is in the fit key)
            n = nodes[i]
            return (n.used_cpu + cpu <= n.cpu + CPU_SLACK and n.used_memory + memory <= n.memory
                    and n.name not in avoid)
        return fits

    def _charge(self, i: int, d: Demand) -> None:
        n = self.nodes[i]
        n.used_cpu += d.cpu
        n.used_memory += d.memory
        self.free[i] = free_score(n)
        before = n.app_counts.get(d.app, 0)
        n.app_counts[d.app] = before + 1
        if before == 0:                              # joins the app heaps that hold only its nodes
            self.app_nodes[d.app].add(i)
            key = self._app_key(d.app)
            for fk, heap in self.app_heaps[d.app].items():
                if (d.app, fk) not in self.full and self._matches(i, fk[0]):
                    heapq.heappush(heap, key(i))


def _pop_best(heap: list[tuple], key: Callable[[int], tuple], fits: Callable[[int], bool],
              wanted: Callable[[int], bool] | None = None, drop_unfit: bool = False,
              ) -> tuple[int | None, int, int]:
    """Pop the lowest-keyed node that is wanted and fits; put the rest back. Keys may only grow.

    An entry whose stored key is stale is pushed back with its current key. One
    whose stored key is current is the true minimum: every other node's current key
    is at least its stored key, which is at least this one. Returns the node (None
    if there is none) and how many current entries were skipped as unwanted, and
    as not fitting (those are left out of the heap when drop_unfit).
    """
    kept: list[tuple] = []
    found, unwanted, unfit = None, 0, 0
    while heap:
        entry = heapq.heappop(heap)
        i = entry[-1]
        current = key(i)
        if current != entry:
            heapq.heappush(heap, current)
        elif wanted is not None and not wanted(i):
            unwanted += 1
            kept.append(entry)
        elif not fits(i):
            unfit += 1
            if not drop_unfit:
                kept.append(entry)
        else:
            found = i
            break
    for entry in kept:
        heapq.heappush(heap, entry)
    return found, unwanted, unfit
