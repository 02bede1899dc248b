"""Benchmark: the scheduler end to end, planning and writing into a real etcd.

The cluster is simulated: nodes and apps are built in memory (no agent, no
container), with the node shapes, label constraints and replica sizes of
benchmarks/scheduler.py. What is real is the controller code path and etcd:

  a. plan_assignments() from nothing to every replica placed (pure);
  b. as the elected leader, plan again and Reconciler.commit_plan() the plan into a
     throwaway single-member etcd (fenced transactions of TXN_OPS operations), in
     the order reconcile_once uses, with no await in between; if the controller's
     lease TTL and Store timeout do not survive that, the writes are measured again
     with a longer lease and timeout (said so in the output);
  c. a second pass: read every assignment back (Store.list, as the controller's
     snapshot does) and plan again from them, which should plan nothing; once
     with nothing observed and once in steady state (every replica available
     and routed, which also runs the rebalance check).

etcd runs on 127.0.0.1:28790 (peer 28791, port slot 5 of benchmarks/common.py)
with its data in a temporary directory, and is stopped at the end, also on
error or Ctrl-C.

    .venv/bin/python benchmarks/schedule_etcd.py [--nodes 5000] [--replicas 100000] [--apps 2000]

Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aetcd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler import CPUS, MEMORIES, SHAPES, ZONES, constraint, pick  # noqa: E402

from controller import loops  # noqa: E402
from controller.leader import LEADER_KEY, Leadership  # noqa: E402
from controller.placement import MiB  # noqa: E402
from controller.reconcile import Observed, Plan, Release, plan_assignments  # noqa: E402
from paas import store as keys  # noqa: E402
from paas.model import AppSpec, Assignment, Node, Process, Resources  # noqa: E402
from paas.store import Put, Store, StoreUnavailable  # noqa: E402

CLIENT_PORT = 28790
PEER_PORT = CLIENT_PORT + 1
QUOTA_BYTES = 8 * 1024 ** 3


# --- the simulated cluster --------------------------------------------------

def simulated_nodes(n: int, rng: random.Random) -> dict[str, Node]:
    """Worker nodes as the controller's snapshot gives them: router-only hosts left out,
    drained ones marked draining."""
    nodes = {}
    for i in range(n):
        cpu, memory = pick(rng, SHAPES)
        memory -= rng.randrange(0, memory // 50) // MiB * MiB
        labels = {"zone": ZONES[i % 3], "disk": "ssd" if rng.random() < 0.6 else "hdd"}
        if rng.random() < 0.02:
            labels["gpu"] = "true"
        roll = rng.random()
        if roll < 0.01:
            continue   # router-only: the controller's snapshot keeps workers only
        name = f"node-{i:05d}"
        nodes[name] = Node(name=name, address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", cpu=cpu,
                           memory=memory, labels=labels, roles=("worker",), draining=roll < 0.02)
    return nodes


def replica_counts(replicas: int, apps: int) -> list[int]:
    """A few big apps and a long tail, adding up to exactly `replicas`."""
    weights = [1 / (rank + 1) ** 0.9 for rank in range(apps)]
    total = sum(weights)
    counts = [max(1, int(w / total * replicas)) for w in weights]
    counts[0] += replicas - sum(counts)
    while counts[0] < 1:       # more apps than the tail allows: take from the largest others
        biggest = max(range(1, apps), key=counts.__getitem__)
        counts[biggest] -= 1
        counts[0] += 1
    return counts


def simulated_releases(replicas: int, apps: int, rng: random.Random) -> dict[str, Release]:
    """One current release per app: a routed `web` process, and for some apps a `worker`
    process without a port taking part of the app's replicas."""
    releases = {}
    for a, count in enumerate(replica_counts(replicas, apps)):
        name = f"app-{a:04d}"
        cpu, memory = pick(rng, CPUS), pick(rng, MEMORIES)
        shares = {"web": count}
        if count >= 2 and rng.random() < 0.3:
            worker = max(1, count * 3 // 10)
            shares = {"web": count - worker, "worker": worker}
        processes = {
            p: Process(name=p, command=("python3", "-m", "http.server", "8000") if p == "web" else ("python3", "work.py"),
                       replicas=n, port=8000 if p == "web" else None,
                       resources=Resources(cpu=cpu, memory=memory))
            for p, n in shares.items()}
        spec = AppSpec(name=name, processes=processes, image=f"127.0.0.1:15000/{name}:v3",
                       node_labels=constraint(rng))
        releases[name] = Release(app=name, number=3, image=f"127.0.0.1:15000/{name}@sha256:{rng.getrandbits(256):064x}",
                                 spec=spec, env={"PAAS_APP": name, "LOG_LEVEL": "info"})
    return releases


# --- a throwaway etcd -------------------------------------------------------

def port_free(port: int) -> bool:
    """No listener on the port (TIME-WAIT leftovers of a previous run do not count: etcd,
    like any Go server, binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def throwaway_etcd() -> Iterator[tuple[str, subprocess.Popen]]:
    busy = [p for p in (CLIENT_PORT, PEER_PORT) if not port_free(p)]
    if busy:
        sys.exit(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use; refusing to start etcd there")
    client, peer = f"127.0.0.1:{CLIENT_PORT}", f"http://127.0.0.1:{PEER_PORT}"
    with tempfile.TemporaryDirectory(prefix="paas-schedule-etcd-") as tmp:
        log_file = open(Path(tmp) / "etcd.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", str(Path(tmp) / "data"),
             "--listen-client-urls", f"http://{client}", "--advertise-client-urls", f"http://{client}",
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new",
             "--quota-backend-bytes", str(QUOTA_BYTES), "--log-level", "warn"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)   # Ctrl-C reaches us, not etcd
        try:
            deadline = time.monotonic() + 30
            while not http_ok(f"http://{client}/health"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_file.flush()
                    tail = (Path(tmp) / "etcd.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd did not become healthy on {client}:\n{tail}")
                time.sleep(0.1)
            yield client, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log_file.close()
            warnings = [line for line in (Path(tmp) / "etcd.log").read_text(errors="replace").splitlines()
                        if '"level":"error"' in line or "quota" in line.lower()]
            for line in warnings[:5]:
                print(f"  etcd log: {line[:300]}")


def etcd_metrics(client: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{client}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = ("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
              "etcd_debugging_mvcc_keys_total", "etcd_server_quota_backend_bytes")
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[name] = float(value)
    return found


class UnlimitedStore(Store):
    """A Store whose gRPC channel takes replies of any size (benchmark only, for when the
    controller's Store hits gRPC's default 4 MiB receive limit)."""

    def _new_client(self) -> aetcd.Client:
        host, _, port = self.endpoints[self._current].rpartition(":")
        return aetcd.Client(host=host, port=int(port), timeout=self.timeout,
                            options={"grpc.max_receive_message_length": -1})


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the benchmark ----------------------------------------------------------

def describe_pending(plan: Plan) -> tuple[int, list[tuple[str, int]]]:
    reasons = Counter(r for slots in plan.pending.values() for r in slots.values())
    return sum(reasons.values()), reasons.most_common(2)


def timed_plan(releases: dict[str, Release], nodes: dict[str, Node], assignments: list[Assignment],
               observed: Observed, rng: random.Random) -> tuple[Plan, float]:
    start = time.perf_counter()
    plan = plan_assignments(releases, nodes, assignments, observed, time.time(),
                            suffix=lambda: f"{rng.getrandbits(16):04x}")
    return plan, time.perf_counter() - start


def plan_summary(plan: Plan) -> str:
    return f"create {len(plan.create)}, drain {len(plan.drain)}, delete {len(plan.delete)}, " \
           f"pending {describe_pending(plan)[0]}"


async def become_leader(store: Store, ttl: int) -> tuple[Leadership, asyncio.Task]:
    """Leader of the empty etcd, with the lease kept alive the way the controller does it."""
    leadership = Leadership(store, "schedule-etcd-bench", ttl=ttl)
    await leadership._step()
    assert leadership.is_leader, "did not become the leader of an empty etcd"
    return leadership, asyncio.create_task(leadership.run())


async def step_down(store: Store, leadership: Leadership, keepalive: asyncio.Task | None,
                    lease: int | None) -> None:
    """Stop the keepalive and revoke the lease (the one granted: a Leadership that lost
    leadership forgets it), so the leader key goes at once."""
    if keepalive is not None:
        keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keepalive
    if lease is not None:
        await store.revoke_lease(lease)   # quietly: resign() logs a warning


async def leader_key_count(store: Store) -> int:
    try:
        return int(await store.get(LEADER_KEY) is not None)
    except StoreUnavailable:
        return 0


async def watch_stalls(longest: list[float], tick: float = 0.01) -> None:
    """The longest time the event loop did not run other tasks (a lease refresh, say)."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(tick)
        now = time.perf_counter()
        longest[0] = max(longest[0], now - last - tick)
        last = now


async def read_assignments(store: Store) -> tuple[list[Assignment], float, float]:
    start = time.perf_counter()
    entries, _ = await store.list(keys.prefix("assignments"))
    read = time.perf_counter() - start
    assignments = [Assignment.from_dict(e.value) for e in entries.values()]
    return assignments, read, time.perf_counter() - start - read


async def bench(args: argparse.Namespace, client: str, etcd: subprocess.Popen) -> None:
    rng = random.Random(args.seed)
    nodes = simulated_nodes(args.nodes, rng)
    releases = simulated_releases(args.replicas, min(args.apps, args.replicas), rng)
    desired = sum(p.replicas for r in releases.values() for p in r.spec.processes.values())
    processes = sum(len(r.spec.processes) for r in releases.values())
    print(f"simulated nodes: {len(nodes)} workers ({sum(n.draining for n in nodes.values())} draining) "
          f"of {args.nodes} hosts; apps: {len(releases)} ({processes} processes), desired replicas: {desired}")
    print(f"etcd: single member on {client}, quota {QUOTA_BYTES / 1024 ** 3:.0f} GiB, "
          f"transactions of {loops.TXN_OPS} ops")

    # (a) pure planning
    plan, seconds = timed_plan(releases, nodes, [], Observed(), rng)
    pending, reasons = describe_pending(plan)
    print("\n(a) plan_assignments, pure (from no assignments)")
    print(f"  seconds:                 {seconds:.2f}")
    print(f"  placements per second:   {len(plan.create) / seconds:,.0f}")
    print(f"  placed / pending:        {len(plan.create)} / {pending}")
    for reason, count in reasons:
        print(f"    pending x{count}: {reason[:160]}")

    # (b) commit into etcd as the leader
    store = Store([client])
    value_bytes = sum(len(json.dumps(a.to_dict(), separators=(",", ":"), sort_keys=True)) for a in plan.create)
    start = time.perf_counter()
    [Put(keys.assignment_key(a.node, a.id), a.to_dict()) for a in plan.create + plan.drain]   # as commit_plan does
    build_seconds = time.perf_counter() - start
    transactions = -(-(len(plan.create) + len(plan.drain) + len(plan.delete)) // loops.TXN_OPS)
    before = etcd_metrics(client)
    print("\n(b) Reconciler.commit_plan into etcd")
    print(f"  values to write:         {value_bytes / MiB:.1f} MiB JSON "
          f"({value_bytes / max(1, len(plan.create)):.0f} bytes per assignment), {transactions} transactions")
    print(f"  building the ops:        {build_seconds:.2f} s (commit_plan does this before its first await)")
    leadership, keepalive, writer, lease = None, None, store, None
    try:
        default_ttl = Leadership(store, "").ttl
        for ttl, timeout in ((default_ttl, store.timeout), (60, 60.0)):
            writer = store if timeout == store.timeout else Store([client], timeout=timeout)
            leadership, keepalive = await become_leader(writer, ttl)
            lease = leadership.lease
            await asyncio.sleep(0.2)      # the first lease refresh is done, as in a running controller
            stall = [0.0]
            monitor = asyncio.create_task(watch_stalls(stall))
            await asyncio.sleep(0)
            # as reconcile_once does it: plan in a thread (the loop keeps renewing the lease), then commit_plan
            plan, plan_seconds = await asyncio.to_thread(timed_plan, releases, nodes, [], Observed(), rng)
            start = time.perf_counter()
            failure = ""
            try:
                ok = await loops.Reconciler(writer, leadership).commit_plan(plan)
            except StoreUnavailable as e:
                ok, failure = False, f"; commit_plan raised StoreUnavailable: {str(e)[:120]}"
            seconds = time.perf_counter() - start
            monitor.cancel()
            after = etcd_metrics(client)
            written = after.get("etcd_debugging_mvcc_keys_total", 0) - (await leader_key_count(store))
            label = "the controller's" if writer is store else "benchmark-only"
            print(f"  {label} lease TTL {ttl} s and Store timeout {timeout:.0f} s; "
                  f"planned {plan_seconds:.2f} s, then committed:")
            print(f"    committed whole plan:  {ok}" + ("" if ok else f" (lost leadership; {written:.0f} of "
                                                                  f"{len(plan.create)} assignments written{failure})"))
            print(f"    longest loop stall:    {stall[0]:.2f} s (no lease refresh can run during a stall)")
            print(f"    commit_plan seconds:   {seconds:.2f}")
            if ok:
                print(f"    assignments per second: {len(plan.create) / seconds:,.0f} "
                      f"(~{len(plan.create) / max(0.01, seconds - build_seconds):,.0f} after building the ops)")
                print(f"    transactions:          {transactions} ({transactions / seconds:,.0f}/s, "
                      f"{seconds / max(1, transactions) * 1000:.1f} ms each incl. client-side encoding)")
                print(f"    etcd db size:          {before.get('etcd_mvcc_db_total_size_in_bytes', 0) / MiB:.1f} MiB "
                      f"-> {after.get('etcd_mvcc_db_total_size_in_bytes', 0) / MiB:.1f} MiB "
                      f"(in use {after.get('etcd_mvcc_db_total_size_in_use_in_bytes', 0) / MiB:.1f} MiB), "
                      f"{after.get('etcd_debugging_mvcc_keys_total', 0):.0f} keys")
                print(f"    etcd RSS:              {rss_mib(etcd.pid):.0f} MiB")
                break
            await step_down(writer, leadership, keepalive, lease)
            leadership, keepalive = None, None
            await store.delete_prefix(keys.prefix("assignments"))
            print("    (assignments wiped; retrying with a longer lease to measure the writes)")

        # (c) the next pass: read everything back, plan again
        print("\n(c) second pass: read the assignments back and plan again")
        try:
            assignments, read, decode = await read_assignments(store)
            print(f"  Store.list(assignments): {read:.2f} s for {len(assignments)} entries "
                  f"(+{decode:.2f} s Assignment.from_dict)")
        except Exception as e:  # noqa: BLE001 - a limit hit here is a figure to report
            print(f"  Store.list(assignments) FAILED as the controller's Store: {type(e).__name__}: {str(e)[:300]}")
            big = UnlimitedStore([client], timeout=120)
            try:
                assignments, read, decode = await read_assignments(big)
            finally:
                await big.close()
            print(f"  with no gRPC receive limit and a 120 s timeout (benchmark-only client): {read:.2f} s for "
                  f"{len(assignments)} entries (+{decode:.2f} s Assignment.from_dict)")
        again, seconds = timed_plan(releases, nodes, assignments, Observed(), rng)
        print(f"  plan_assignments, nothing observed:   {seconds:.2f} s -> {plan_summary(again)}")
        ids = frozenset(a.id for a in assignments)
        steady = Observed(available=ids, routed=frozenset(a.id for a in assignments if a.port is not None))
        again, seconds = timed_plan(releases, nodes, assignments, steady, rng)
        print(f"  plan_assignments, all available:      {seconds:.2f} s -> {plan_summary(again)}")
        moving = sum("moving off" in r for slots in again.pending.values() for r in slots.values())
        print(f"    pending because a rebalance move finds no node: {moving}")
        if again.create:
            moved = Counter(a.app for a in again.create)
            print(f"    rebalance moves in {len(moved)} apps, e.g. {', '.join(sorted(moved)[:5])}")
    finally:
        if leadership is not None:
            with contextlib.suppress(Exception):
                await step_down(writer, leadership, keepalive, lease)
        if writer is not store:
            await writer.close()
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=100_000)
    ap.add_argument("--apps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # so that etcd is stopped on kill too
    with throwaway_etcd() as (client, proc):
        asyncio.run(bench(args, client, proc))


if __name__ == "__main__":
    main()
