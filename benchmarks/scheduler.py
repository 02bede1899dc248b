"""Benchmark for controller.placement.place() on a simulated cluster.

Nothing here touches a real node: the cluster is built in memory (node shapes,
labels, a few router-only and draining nodes) and so are the demands (apps with
skewed replica counts, sizes and some label constraints). All randomness comes
from one seeded random.Random, so a run is repeatable.

    .venv/bin/python benchmarks/scheduler.py [--nodes 5000] [--replicas 100000] [--apps 2000]

Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.placement import Demand, GiB, MiB, NodeState, place, why_not  # noqa: E402

SHAPES = [((4, 16 * GiB), 25), ((8, 32 * GiB), 30), ((16, 64 * GiB), 25), ((32, 128 * GiB), 15),
          ((64, 256 * GiB), 5)]
CPUS = [(0.1, 30), (0.25, 25), (0.5, 20), (1.0, 15), (2.0, 10)]
MEMORIES = [(64 * MiB, 20), (128 * MiB, 20), (256 * MiB, 20), (512 * MiB, 20), (1 * GiB, 10),
            (2 * GiB, 7), (4 * GiB, 3)]
ZONES = ["a", "b", "c"]


def pick(rng: random.Random, table: list) -> object:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights)[0]


def simulated_nodes(n: int, rng: random.Random) -> list[NodeState]:
    nodes = []
    for i in range(n):
        cpu, memory = pick(rng, SHAPES)
        memory -= rng.randrange(0, memory // 50) // MiB * MiB    # MemTotal differs a little per host
        labels = {"zone": ZONES[i % 3], "disk": "ssd" if rng.random() < 0.6 else "hdd"}
        if rng.random() < 0.02:
            labels["gpu"] = "true"
        roll = rng.random()
        roles = ("router",) if roll < 0.01 else ("worker",)
        nodes.append(NodeState(name=f"node-{i:05d}", cpu=cpu, memory=memory, labels=labels,
                               roles=roles, draining=0.01 <= roll < 0.02))
    return nodes


def constraint(rng: random.Random) -> dict[str, str]:
    roll = rng.random()
    if roll < 0.65:
        return {}
    if roll < 0.80:
        return {"zone": rng.choice(ZONES)}
    if roll < 0.90:
        return {"disk": "ssd"}
    if roll < 0.95:
        return {"zone": rng.choice(ZONES), "disk": "ssd"}
    return {"gpu": "true"}


def simulated_demands(replicas: int, apps: int, rng: random.Random) -> list[Demand]:
    weights = [1 / (rank + 1) ** 0.9 for rank in range(apps)]      # a few big apps, a long tail
    total = sum(weights)
    counts = [max(1, int(w / total * replicas)) for w in weights]
    counts[0] += max(0, replicas - sum(counts))
    demands = []
    for a, count in enumerate(counts):
        app, labels = f"app-{a:04d}", constraint(rng)
        cpu, memory = pick(rng, CPUS), pick(rng, MEMORIES)
        demands += [Demand(f"{app}.web.{r}", app, cpu, memory, labels) for r in range(count)]
    rng.shuffle(demands)
    return demands[:replicas]


def replay(nodes: list[NodeState], demands: list[Demand], assigned: dict[str, str]) -> tuple[int, Counter]:
    """Re-apply the placements to fresh nodes: placements some filter rejects, replicas per (app, node)."""
    by_name = {n.name: n for n in nodes}
    bad, per_node = 0, Counter()
    for d in demands:
        if d.key not in assigned:
            continue
        n = by_name[assigned[d.key]]
        bad += why_not(n, d) is not None
        n.used_cpu += d.cpu
        n.used_memory += d.memory
        per_node[(d.app, n.name)] += 1
    return bad, per_node


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=100_000)
    ap.add_argument("--apps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    nodes = simulated_nodes(args.nodes, rng)
    demands = simulated_demands(args.replicas, min(args.apps, args.replicas), rng)
    print(f"simulated nodes: {len(nodes)} ({sum('worker' in n.roles and not n.draining for n in nodes)} "
          f"schedulable workers), demands: {len(demands)} over {len({d.app for d in demands})} apps")

    start = time.perf_counter()
    result = place(demands, nodes)
    seconds = time.perf_counter() - start

    tracemalloc.start()
    again = place(demands, nodes)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    bad, per_node = replay(nodes, demands, result.assigned)
    (app, _), most = per_node.most_common(1)[0] if per_node else (("-", ""), 0)
    wanted = next((d.node_labels for d in demands if d.app == app), {})
    feasible = sum("worker" in n.roles and not n.draining and wanted.items() <= n.labels.items() for n in nodes)
    used_cpu = sum(d.cpu for d in demands if d.key in result.assigned)
    capacity = sum(n.cpu for n in nodes if "worker" in n.roles and not n.draining)
    print(f"total seconds:          {seconds:.2f}")
    print(f"placements per second:  {len(result.assigned) / seconds:,.0f}")
    print(f"placed / unplaced:      {len(result.assigned)} / {len(result.unplaced)}")
    print(f"peak memory (place):    {peak / MiB:.1f} MiB (tracemalloc, second run)")
    print(f"max replicas of one app on one node: {most} ({app}: {sum(d.app == app for d in demands)} "
          f"replicas, labels {wanted or 'any'}, {feasible} such nodes)")
    print(f"cpu allocated:          {used_cpu:,.0f} of {capacity:,.0f} cores ({used_cpu / capacity:.0%})")
    print(f"infeasible placements:  {bad}")
    print(f"same result twice:      {again == result}")
    for reason, count in Counter(result.unplaced.values()).most_common(3):
        print(f"  unplaced x{count}: {reason}")


if __name__ == "__main__":
    main()
