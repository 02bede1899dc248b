"""The walking skeleton as a user drives it: `paas deploy` onto three agents over
real etcd, dockerd and nginx, answers through the router, self-healing of a
killed container, destroy, bad input."""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

HELLO = """\
name: NAME
image: REGISTRY/paas/busybox:latest
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "hello from $PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: 3
    port: 8000
    health: {path: /, interval: 0.5s, timeout: 0.5s}
    resources: {cpu: 0.1, memory: 16Mi}
"""


def deploy(cluster, tmp_path, name: str, text: str = HELLO):
    path = cluster.spec_file(tmp_path, name, text.replace("NAME", name))
    result = cluster.paas("deploy", path, "--timeout", "120")
    assert result.code == 0, result.out + result.err
    return result


def answers(cluster, host: str, requests: int) -> set[str]:
    seen = set()
    for _ in range(requests):
        status, body = cluster.get(host)
        assert status == 200, body
        seen.add(body.strip())
    return seen


def test_deploy_spreads_three_replicas_and_the_router_reaches_each(cluster, tmp_path):
    deploy(cluster, tmp_path, "spread")
    replicas = cluster.paas_json("ps", "spread")
    assert len(replicas) == 3
    assert sorted(r["node"] for r in replicas) == ["node-1", "node-2", "node-3"]
    for r in replicas:
        assert r["app"] == "spread" and r["process"] == "web" and r["state"] == "running"
        assert r["healthy"] is True and r["routed"] is True
        assert r["image"] == f"{cluster.registry}/paas/busybox:latest"
        assert r["endpoint"].rsplit(":", 1)[0] in {"127.0.0.21", "127.0.0.22", "127.0.0.23"}
    seen = answers(cluster, "spread.localhost", 12)
    assert seen == {f"hello from {r['id']}" for r in replicas}
    apps = {a["app"]: a for a in cluster.paas_json("apps")}
    assert apps["spread"]["rollout"]["ready"] is True
    status = cluster.paas_json("status")
    assert status["leader"] and status["routers"] == ["router"]
    assert [n["name"] for n in cluster.paas_json("nodes") if "worker" in n["roles"]] == \
        ["node-1", "node-2", "node-3"]
    assert cluster.paas("destroy", "spread").code == 0


def test_redeploying_the_same_spec_changes_nothing(cluster, tmp_path):
    first = deploy(cluster, tmp_path, "same")
    ids = {r["id"] for r in cluster.paas_json("ps", "same")}
    second = deploy(cluster, tmp_path, "same")
    assert "release v1" in first.err and "unchanged, still v1" in second.err
    assert {r["id"] for r in cluster.paas_json("ps", "same")} == ids
    assert cluster.paas("destroy", "same").code == 0


def test_a_killed_container_is_brought_back_by_its_agent(cluster, tmp_path):
    deploy(cluster, tmp_path, "heal")
    victim = cluster.paas_json("ps", "heal")[0]
    subprocess.run(["docker", "kill", f"paas-test-{victim['id']}"], check=True, capture_output=True)

    def back():
        rows = {r["id"]: r for r in cluster.paas_json("ps", "heal")}
        r = rows.get(victim["id"])
        return r if r and r["restarts"] >= 1 and r["healthy"] and r["routed"] else None
    row = wait_for(back, 60, what="killed replica restarted, healthy and routed")
    assert row["node"] == victim["node"]
    assert f"hello from {victim['id']}" in answers(cluster, "heal.localhost", 9)
    assert cluster.paas("destroy", "heal").code == 0


def test_destroy_removes_every_container_and_route(cluster, tmp_path):
    deploy(cluster, tmp_path, "gone")
    assert len(cluster.containers("gone")) == 3
    result = cluster.paas("destroy", "gone")
    assert result.code == 0, result.err
    assert cluster.containers("gone") == []
    wait_for(lambda: cluster.get("gone.localhost")[0] == 404, 10, what="route removed")
    assert [v for v in cluster.store_keys("/paas/assignments/").values() if v["app"] == "gone"] == []
    assert cluster.paas("ps", "gone").code == 1


def test_a_bad_spec_is_refused_with_every_error_and_changes_nothing(cluster, tmp_path):
    deploy(cluster, tmp_path, "stable")
    before = cluster.store_keys("/paas/apps/"), cluster.store_keys("/paas/releases/")
    bad = HELLO.replace("NAME", "stable").replace("replicas: 3", "replicas: lots") \
        .replace("port: 8000", "port: 70000")
    path = cluster.spec_file(tmp_path, "bad", bad)
    result = cluster.paas("deploy", path)
    assert result.code == 1
    assert f"{path}:6: processes.web.replicas:" in result.err
    assert f"{path}:7: processes.web.port:" in result.err
    assert (cluster.store_keys("/paas/apps/"), cluster.store_keys("/paas/releases/")) == before
    assert cluster.paas("destroy", "stable").code == 0


def test_the_controller_refuses_a_bad_spec_sent_straight_to_the_api(cluster):
    before = cluster.store_keys("/paas/apps/")
    status, body = api(cluster, "POST", "/api/v1/apps", {"spec": "name: Bad_Name\nprocesses: {}\n"})
    assert status == 422
    assert any(p.startswith("app.yaml:1: name:") for p in body["problems"])
    assert cluster.store_keys("/paas/apps/") == before


@pytest.mark.parametrize("path", ["/api/v1/apps", "/api/v1/nodes", "/api/v1/status"])
def test_api_calls_without_the_token_get_401(cluster, path):
    status, body = api(cluster, "GET", path, token=None)
    assert status == 401 and "token" in body["error"]
    status, _ = api(cluster, "GET", path, token="wrong")
    assert status == 401
    status, _ = api(cluster, "GET", path)
    assert status == 200


def test_unreachable_controller_is_named_with_how_to_start_it(cluster):
    result = cluster.paas("apps", env={"PAAS_API_URL": "http://127.0.0.1:9"})
    assert result.code == 1
    assert "controller is not reachable at http://127.0.0.1:9" in result.err and "paas up" in result.err


def test_an_unknown_host_gets_404_from_the_router(cluster):
    status, body = cluster.get("nothing-here.localhost")
    assert status == 404 and "no app" in body


def api(cluster, method: str, path: str, body=None, token: str | None = "") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or cluster.token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(cluster.api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_etcd_down_is_named_and_the_cluster_recovers_when_it_returns(cluster, tmp_path):
    deploy(cluster, tmp_path, "survivor")
    pid = int((cluster.home / "run" / "etcd.pid").read_text())
    subprocess.run(["kill", "-9", str(pid)], check=True)
    result = cluster.paas("apps")
    assert result.code == 1
    assert "etcd is not reachable at 127.0.0.1:23790" in result.err and "paas up" in result.err
    # the data plane keeps serving while the control plane is down
    assert cluster.get("survivor.localhost")[0] == 200
    assert cluster.paas("up").code == 0
    wait_for(lambda: cluster.paas("apps").code == 0, 30, what="API answers again")
    # watches and leases came back: a new deploy converges
    deploy(cluster, tmp_path, "after-etcd")
    assert len(answers(cluster, "after-etcd.localhost", 6)) == 3
    assert cluster.paas("destroy", "after-etcd").code == 0
    assert cluster.paas("destroy", "survivor").code == 0
