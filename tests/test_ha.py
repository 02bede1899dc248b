"""High availability on a cluster of its own: three etcd members and two
controllers (`paas up --etcd-members 3 --controllers 2`). An etcd member and the
leading controller are killed with -9 while the cluster works."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import Cluster, Load, wait_for

pytestmark = pytest.mark.cluster

HA_ENV = {
    "PAAS_CLUSTER": "ha",
    "PAAS_ETCD_PORT": "33790",
    "PAAS_API_PORT": "19070",
    "PAAS_ROUTER_LISTEN": "127.0.0.1:19080",
    "PAAS_REGISTRY": "127.0.0.1:19500",
    "PAAS_NODES": "127.0.0.121,127.0.0.122,127.0.0.123",
    "PAAS_GIT_PORT": "19222",
}

APP = """\
name: NAME
image: REGISTRY/paas/busybox:latest
env: {VERSION: "V"}
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "$VERSION $PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: 3
    port: 8000
    health: {path: /, interval: 0.5s, timeout: 0.5s, healthy_after: 3}
    resources: {cpu: 0.05, memory: 16Mi}
    drain: 1s
    stop_timeout: 2s
"""


@pytest.fixture(scope="module")
def ha(tmp_path_factory) -> Cluster:
    home = tmp_path_factory.mktemp("paas-ha")
    c = Cluster(home=home, env={**os.environ, **HA_ENV, "PAAS_HOME": str(home)})
    up = c.paas("up", "--etcd-members", "3", "--controllers", "2", timeout=300)
    if up.code != 0:
        c.paas("down")
        pytest.fail(f"paas up failed:\n{up.err}")
    yield c
    c.paas("down", timeout=120)


def app_spec(c, tmp_path, name, version):
    return c.spec_file(tmp_path, f"{name}-{version}", APP.replace("NAME", name).replace('"V"', f'"{version}"'))


def pid(c, name):
    return int((c.home / "run" / f"{name}.pid").read_text())


def test_with_one_etcd_member_killed_deploys_and_failover_still_work(ha, tmp_path):
    assert ha.paas("deploy", app_spec(ha, tmp_path, "quorum", "1"), "--timeout", "120").code == 0
    os.kill(pid(ha, "etcd-0"), signal.SIGKILL)            # the member every process talked to first
    with Load(ha, "quorum.localhost", rps=20) as load:
        result = ha.paas("deploy", app_spec(ha, tmp_path, "quorum", "2"), "--timeout", "120")
        assert result.code == 0, result.err
        victim = next(r for r in ha.paas_json("ps", "quorum") if r["node"] == "node-3")
        os.kill(pid(ha, "agent-node-3"), signal.SIGKILL)
        os.system(f"docker kill paas-ha-{victim['id']} >/dev/null 2>&1")
        wait_for(lambda: (rows := ha.paas_json("ps", "quorum")) and len(rows) == 3
                 and all(r["healthy"] and r["routed"] and r["node"] != "node-3" for r in rows), 60,
                 what="replicas of the lost node serving elsewhere")
    assert load.failures == [], load.failures[:5]
    status = ha.paas_json("status")
    assert status["leader"] in ("controller", "controller-2") and status["routers"] == ["router"]
    assert ha.paas("up").code == 0                          # the member and the agent come back
    wait_for(lambda: {n["name"]: n["state"] for n in ha.paas_json("nodes")}.get("node-3") == "ready", 30,
             what="node-3 back")
    assert ha.paas("destroy", "quorum").code == 0


def test_a_standby_controller_takes_over_and_finishes_the_rollout(ha, tmp_path):
    assert ha.paas("deploy", app_spec(ha, tmp_path, "takeover", "1"), "--timeout", "120").code == 0
    leader = ha.paas_json("status")["leader"]
    with Load(ha, "takeover.localhost", rps=20) as load:
        assert ha.paas("deploy", app_spec(ha, tmp_path, "takeover", "2"), "--no-wait").code == 0
        wait_for(lambda: any(r["release"] == 2 for r in ha.paas_json("ps", "takeover")), 20,
                 what="rollout under way")
        os.kill(pid(ha, leader), signal.SIGKILL)
        killed = time.monotonic()
        standby = wait_for(lambda: (s := ha.paas_json("status")["leader"]) not in (None, leader) and s, 20,
                           what="a standby leads")
        took_over = time.monotonic() - killed
        wait_for(lambda: ha.paas_json("releases", "takeover")[0]["outcome"] == "deployed", 90,
                 what="rollout finished by the standby")
    assert load.failures == [], load.failures[:5]
    assert standby != leader and took_over < 10                # the lease TTL is 5 s
    assert {r["release"] for r in ha.paas_json("ps", "takeover")} == {2}
    assert ha.paas("up").code == 0
    assert ha.paas("destroy", "takeover").code == 0
