"""controller.placement: filters, scores and place(), checked against tables and a brute-force scheduler."""
from __future__ import annotations

import copy
import random
from collections import Counter

import pytest

from controller.placement import (
    MAX_SCORE,
    Demand,
    GiB,
    MiB,
    NodeState,
    Placement,
    format_bytes,
    free_score,
    place,
    why_not,
)


def node(name: str, cpu: float = 4, memory: int = 8 * GiB, labels: dict | None = None, **kw) -> NodeState:
    return NodeState(name=name, cpu=cpu, memory=memory, labels=labels or {}, **kw)


def demands(app: str, n: int, cpu: float = 0.1, memory: int = 64 * MiB, labels: dict | None = None) -> list:
    return [Demand(f"{app}.{i}", app, cpu, memory, labels or {}) for i in range(n)]


def per_node(p: Placement) -> list[int]:
    return sorted(Counter(p.assigned.values()).values(), reverse=True)


@pytest.mark.parametrize("cpu, memory, expected", [
    (1, 1 * GiB, "small"),           # fits both, small is emptier
    (3, 1 * GiB, "big"),             # too much cpu for small
    (1, 6 * GiB, "big"),             # too much memory for small
    (8, 16 * GiB, "big"),            # exactly what is left on big
    (8.5, 1 * GiB, None),
    (1, 16 * GiB + 1, None),
])
def test_fit_by_cpu_and_memory(cpu, memory, expected):
    nodes = [node("small", cpu=2, memory=4 * GiB), node("big", cpu=9, memory=16 * GiB, used_cpu=1)]
    p = place([Demand("d", "web", cpu, memory)], nodes)
    assert p.assigned.get("d") == expected
    assert bool(p.unplaced) == (expected is None)


def test_cpu_sums_tolerate_float_error():
    p = place(demands("web", 10, cpu=0.1), [node("a", cpu=1)])
    assert len(p.assigned) == 10 and not p.unplaced


@pytest.mark.parametrize("wanted, expected", [
    ({}, "a"),
    ({"disk": "ssd"}, "b"),
    ({"disk": "ssd", "zone": "x"}, "c"),
    ({"zone": "x"}, "a"),
    ({"disk": "nvme"}, None),
    ({"gpu": "true"}, None),
])
def test_label_constraints(wanted, expected):
    nodes = [node("a", labels={"zone": "x", "disk": "hdd"}), node("b", labels={"zone": "y", "disk": "ssd"}),
             node("c", labels={"zone": "x", "disk": "ssd"}, used_cpu=2)]
    p = place([Demand("d", "web", 0.5, MiB, wanted)], nodes)
    assert p.assigned.get("d") == expected


@pytest.mark.parametrize("replicas, n_nodes, expected", [
    (3, 3, [1, 1, 1]),
    (2, 5, [1, 1]),
    (5, 3, [2, 2, 1]),
    (12, 3, [4, 4, 4]),
    (7, 4, [2, 2, 2, 1]),
    (250, 2, [125, 125]),           # past the spread score's floor too
])
def test_spread_distinct_then_even(replicas, n_nodes, expected):
    nodes = [node(f"n{i}", cpu=64, memory=64 * GiB) for i in range(n_nodes)]
    assert per_node(place(demands("web", replicas), nodes)) == expected


def test_spread_holds_per_app_on_unequal_nodes():
    nodes = [node("big", cpu=64, memory=256 * GiB), node("small", cpu=4, memory=8 * GiB)]
    p = place(demands("web", 2) + demands("api", 2), nodes)
    assert per_node(p) == [2, 2]
    assert {p.assigned["web.0"], p.assigned["web.1"]} == {"big", "small"}


@pytest.mark.parametrize("a_used, b_used, expected", [
    ((3, 0), (1, 0), "b"),
    ((1, 0), (3, 0), "a"),
    ((0, 6 * GiB), (0, 2 * GiB), "b"),
    ((2, 0), (2, 0), "a"),          # tie: lower name
])
def test_prefers_the_emptier_node(a_used, b_used, expected):
    nodes = [node("a", used_cpu=a_used[0], used_memory=a_used[1]),
             node("b", used_cpu=b_used[0], used_memory=b_used[1])]
    assert place(demands("web", 1), nodes).assigned["web.0"] == expected


def test_draining_and_non_worker_nodes_are_ignored():
    nodes = [node("a", draining=True), node("b", roles=("router",)), node("c", roles=("router", "worker"))]
    p = place(demands("web", 3), nodes)
    assert set(p.assigned.values()) == {"c"}


def test_same_input_same_output_whatever_the_node_order():
    rng = random.Random(7)
    nodes = [node(f"n{i:02d}", cpu=rng.choice([2, 4]), memory=rng.choice([4, 8]) * GiB) for i in range(20)]
    ds = [d for a in range(6) for d in demands(f"app{a}", rng.randint(1, 15), cpu=0.25)]
    first = place(ds, nodes)
    assert place(ds, nodes) == first
    assert place(ds, list(reversed(nodes))) == first


@pytest.mark.parametrize("nodes, demand, reason", [
    ([node("a", memory=256 * MiB, labels={"disk": "ssd"}), node("b", memory=GiB, used_memory=600 * MiB,
      labels={"disk": "ssd"}), node("c", labels={"disk": "hdd"})],
     Demand("d", "web", 0.5, 512 * MiB, {"disk": "ssd"}),
     "0/3 nodes fit: 2 insufficient memory (needs 512Mi), 1 missing label disk=ssd"),
    ([node("a", cpu=1), node("b", cpu=2, used_cpu=1.5), node("c", draining=True), node("d", roles=("router",))],
     Demand("d", "web", 1.5, MiB),
     "0/4 nodes fit: 2 insufficient cpu (needs 1.5), 1 draining, 1 not a worker"),
    ([node("a", roles=("router",))], Demand("d", "web", 0.1, MiB), "no worker nodes"),
    ([], Demand("d", "web", 0.1, MiB), "no worker nodes"),
])
def test_cannot_place_reasons_are_counted(nodes, demand, reason):
    assert place([demand], nodes) == Placement(assigned={}, unplaced={"d": reason})


def test_reason_counts_nodes_filled_by_earlier_demands():
    p = place(demands("web", 3, cpu=1), [node("a", cpu=1), node("b", cpu=1)])
    assert p.unplaced == {"web.2": "0/2 nodes fit: 2 insufficient cpu (needs 1)"}


def test_existing_app_counts_are_respected():
    nodes = [node("a", app_counts={"web": 2}), node("b", app_counts={"web": 1}, used_cpu=3),
             node("c", app_counts={"web": 2, "api": 0})]
    p = place(demands("web", 4), nodes)
    assert p.assigned == {"web.0": "b", "web.1": "a", "web.2": "c", "web.3": "b"}


def test_inputs_are_not_mutated():
    nodes = [node("a", app_counts={"web": 1}), node("b")]
    before = copy.deepcopy(nodes)
    place(demands("web", 5) + demands("api", 3), nodes)
    assert nodes == before


@pytest.mark.parametrize("n, text", [(512 * MiB, "512Mi"), (2 * GiB, "2Gi"), (1536 * MiB, "1536Mi"),
                                     (MiB + 1, "1.0Mi"), (100, "100B")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def brute_force(ds: list[Demand], nodes: list[NodeState]) -> dict[str, str]:
    """Score every feasible node for every demand: what place() must equal."""
    nodes = copy.deepcopy(nodes)
    assigned = {}
    for d in ds:
        feasible = [n for n in nodes if why_not(n, d) is None]
        if not feasible:
            continue
        best = min(feasible, key=lambda n: (min(n.app_counts.get(d.app, 0), MAX_SCORE), -free_score(n), n.name))
        best.used_cpu += d.cpu
        best.used_memory += d.memory
        best.app_counts[d.app] = best.app_counts.get(d.app, 0) + 1
        assigned[d.key] = best.name
    return assigned


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    rng = random.Random(seed)
    nodes = [node(f"n{i:02d}", cpu=rng.choice([1, 2, 4, 8]), memory=rng.choice([1, 2, 4, 16]) * GiB,
                  labels={"zone": rng.choice("xy"), "disk": rng.choice(["ssd", "hdd"])},
                  draining=rng.random() < 0.1, roles=("router",) if rng.random() < 0.1 else ("worker",),
                  used_cpu=rng.choice([0, 0, 0.5]), app_counts={"app0": rng.choice([0, 1, 3])})
             for i in range(rng.randint(1, 40))]
    constraints = [{}, {}, {"zone": "x"}, {"disk": "ssd"}, {"zone": "y", "disk": "ssd"}]
    ds = [d for a in range(rng.randint(1, 12))
          for d in demands(f"app{a}", rng.randint(1, 60), cpu=rng.choice([0.1, 0.25, 0.5, 1, 2]),
                           memory=rng.choice([64, 256, 512, 1024]) * MiB, labels=rng.choice(constraints))]
    rng.shuffle(ds)
    p = place(ds, nodes)
    assert p.assigned == brute_force(ds, nodes)
    assert set(p.assigned) | set(p.unplaced) == {d.key for d in ds}
    assert all(reason.startswith(("0/", "no worker")) for reason in p.unplaced.values())


def test_an_avoided_node_is_never_chosen_and_the_reason_says_so():
    nodes = [NodeState(name=n, cpu=4, memory=4 * GiB, labels={}) for n in ("a", "b")]
    result = place([Demand(key="r", app="x", cpu=0.1, memory=MiB, avoid=frozenset({"a"}))], nodes)
    assert result.assigned == {"r": "b"}
    result = place([Demand(key="r", app="x", cpu=0.1, memory=MiB, avoid=frozenset({"a", "b"}))], nodes)
    assert result.unplaced == {"r": "0/2 nodes fit: 2 moving off this node"}
