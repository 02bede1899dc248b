"""Self-healing, with real processes killed with -9 and bounded load through the
router: a lost host, a restarted agent, a partitioned host coming back, crashes
and OOM kills, node drain and rebalance."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import Load, wait_for

pytestmark = pytest.mark.cluster

WEB = """\
name: NAME
image: REGISTRY/paas/busybox:latest
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "$PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: 3
    port: 8000
    health: {path: /, interval: 0.5s, timeout: 0.5s}
    resources: {cpu: 0.05, memory: 16Mi}
    drain: 1s
    stop_timeout: 2s
"""


def deploy(cluster, tmp_path, name, text=WEB):
    result = cluster.paas("deploy", cluster.spec_file(tmp_path, name, text.replace("NAME", name)), "--timeout", "120")
    assert result.code == 0, result.err
    return cluster.paas_json("ps", name)


def agent_pid(cluster, node):
    return int((cluster.home / "run" / f"agent-{node}.pid").read_text())


def converged(cluster, app, count=3, avoid=None):
    rows = cluster.paas_json("ps", app)
    ok = (len(rows) == count and all(r["healthy"] and r["routed"] for r in rows)
          and (avoid is None or all(r["node"] != avoid for r in rows)))
    return rows if ok else None


def node_state(cluster, name):
    return {n["name"]: n["state"] for n in cluster.paas_json("nodes")}.get(name)


def test_a_lost_host_costs_no_request_and_its_replicas_serve_elsewhere(cluster, tmp_path):
    rows = deploy(cluster, tmp_path, "lost")
    victim = next(r for r in rows if r["node"] == "node-2")
    with Load(cluster, "lost.localhost", rps=20) as load:
        os.kill(agent_pid(cluster, "node-2"), signal.SIGKILL)            # the host dies: its agent ...
        subprocess.run(["docker", "kill", f"paas-test-{victim['id']}"], capture_output=True, check=True)
        started = time.monotonic()
        wait_for(lambda: converged(cluster, "lost", avoid="node-2"), 60, what="replicas serving elsewhere")
        recovered = time.monotonic() - started
        assert node_state(cluster, "node-2") == "lost"
        time.sleep(1)
    assert load.failures == [], load.failures[:5]
    assert recovered < 30
    assert cluster.paas("up").code == 0                                    # the host comes back
    wait_for(lambda: node_state(cluster, "node-2") == "ready", 30, what="node-2 back")
    assert cluster.paas("destroy", "lost").code == 0


def test_a_restarted_agent_adopts_its_running_containers(cluster, tmp_path):
    rows = deploy(cluster, tmp_path, "adopt")
    before = {r["id"]: r["container"] for r in rows}
    os.kill(agent_pid(cluster, "node-1"), signal.SIGKILL)
    assert cluster.paas("up").code == 0
    time.sleep(3)
    after = converged(cluster, "adopt")
    assert after is not None
    assert {r["id"]: r["container"] for r in after} == before       # same containers, none restarted
    assert all(r["restarts"] == 0 for r in after)
    assert cluster.paas("destroy", "adopt").code == 0


def test_a_host_back_from_a_partition_leaves_no_duplicate(cluster, tmp_path):
    deploy(cluster, tmp_path, "split")
    pid = agent_pid(cluster, "node-3")
    os.kill(pid, signal.SIGSTOP)                        # cut off: its lease runs out, its containers run on
    try:
        wait_for(lambda: converged(cluster, "split", avoid="node-3"), 60, what="replaced elsewhere")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: len(cluster.containers("split")) == 3, 30, what="the returning agent removed its copies")
    rows = wait_for(lambda: converged(cluster, "split"), 60, what="converged")
    assert len({r["id"] for r in rows}) == 3
    assert cluster.paas("destroy", "split").code == 0


CRASHER = """\
name: NAME
image: REGISTRY/paas/busybox:latest
restart: {backoff: 0.2s, max_backoff: 1s}
processes:
  worker:
    command: [sh, -c, 'echo "boom on $PAAS_NODE"; sleep 0.3; exit 2']
    replicas: 1
    resources: {cpu: 0.05, memory: 16Mi}
"""


def test_a_crashing_container_restarts_with_backoff_and_moves_after_repeated_failures(cluster, tmp_path):
    path = cluster.spec_file(tmp_path, "crasher", CRASHER.replace("NAME", "crasher"))
    assert cluster.paas("deploy", path, "--no-wait").code == 0
    first = wait_for(lambda: next((r for r in cluster.paas_json("ps", "crasher") if r["restarts"] >= 2), None),
                     60, what="restarts counted")
    logs = cluster.paas("logs", "crasher", "--previous")
    assert logs.code == 0 and f"boom on {first['node']}" in logs.out and "exited 2" in logs.out
    assert "2" in cluster.paas("ps", "crasher").out.split("LAST EXIT")[1]
    moved = wait_for(lambda: next((r for r in cluster.paas_json("ps", "crasher") if r["node"] != first["node"]),
                                  None), 90, what="rescheduled on another node after 5 failures")
    assert moved["id"] != first["id"]
    assert cluster.paas("destroy", "crasher").code == 0


OOM = """\
name: NAME
image: REGISTRY/paas/busybox:latest
restart: {backoff: 0.5s, max_backoff: 2s}
processes:
  worker:
    command: [sh, -c, 'echo "eating memory"; head -c 200000000 /dev/zero | tail; sleep 30']
    replicas: 1
    resources: {cpu: 0.1, memory: 8Mi}
"""


def test_an_oom_killed_container_is_reported(cluster, tmp_path):
    path = cluster.spec_file(tmp_path, "oomer", OOM.replace("NAME", "oomer"))
    assert cluster.paas("deploy", path, "--no-wait").code == 0

    def oom_seen():
        for r in cluster.paas_json("ps", "oomer"):
            if r["oom_killed"] or (r.get("previous") or {}).get("oom_killed"):
                return r
        return None
    wait_for(oom_seen, 60, what="OOM kill reported")
    assert "OOM-killed" in cluster.paas("ps", "oomer").out
    assert cluster.paas("destroy", "oomer").code == 0


def test_draining_a_node_moves_replicas_off_without_a_failed_request(cluster, tmp_path):
    deploy(cluster, tmp_path, "movable")
    with Load(cluster, "movable.localhost", rps=20) as load:
        result = cluster.paas("node", "drain", "node-1", "--timeout", "120")
        assert result.code == 0, result.err
        assert node_state(cluster, "node-1") == "draining"
        assert wait_for(lambda: converged(cluster, "movable", avoid="node-1"), 30, what="moved off node-1")
        assert cluster.paas("node", "undrain", "node-1").code == 0
        rows = wait_for(lambda: (r := converged(cluster, "movable")) and
                        sorted(x["node"] for x in r) == ["node-1", "node-2", "node-3"] and r, 90,
                        what="rebalanced back onto node-1")
        time.sleep(1)
    assert load.failures == [], load.failures[:5]
    assert len(rows) == 3
    assert cluster.paas("destroy", "movable").code == 0


def test_agents_reconnect_and_converge_after_dockerd_restarts(cluster, tmp_path):
    deploy(cluster, tmp_path, "outlive")
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pids, "dockerd is not running"
    for p in pids:
        os.kill(int(p), signal.SIGTERM)
    wait_for(lambda: subprocess.run(["docker", "version"], capture_output=True).returncode != 0, 30,
             what="dockerd stopped answering")
    assert cluster.paas("up").code == 0                # starts dockerd again
    rows = wait_for(lambda: converged(cluster, "outlive"), 120, what="replicas back after dockerd restart")
    assert len(rows) == 3
    assert cluster.get("outlive.localhost")[0] == 200
    assert cluster.paas("destroy", "outlive").code == 0
