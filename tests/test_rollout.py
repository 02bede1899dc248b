"""Releases and zero-downtime rolling deploys, under steady load through the
router: rollouts, automatic rollback, a controller killed mid-rollout,
rollback, scale, config, the downtime guard and the deploy queue."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import Load, wait_for

pytestmark = pytest.mark.cluster

APP = """\
name: NAME
image: REGISTRY/paas/busybox:latest
env: {VERSION: "VERSION_VALUE"}
processes:
  web:
    command: [sh, -c, 'mkdir -p /tmp/www && echo "VERSION $VERSION $GREETING from $PAAS_REPLICA" > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www']
    replicas: REPLICAS
    port: 8000
    health: {path: HEALTH_PATH, interval: 0.5s, timeout: 0.5s}
    resources: {cpu: 0.05, memory: 16Mi}
    drain: 1s
    stop_timeout: 2s
rollout: {max_surge: 1, max_unavailable: 0, progress_deadline: 8s}
"""


def spec(cluster, tmp_path, name, version="1", replicas=3, health="/", text=APP, suffix=""):
    body = (text.replace("NAME", name).replace("VERSION_VALUE", version).replace("REPLICAS", str(replicas))
            .replace("HEALTH_PATH", health))
    return cluster.spec_file(tmp_path, f"{name}-{version}{suffix}", body)


def deploy_ok(cluster, path, *flags):
    result = cluster.paas("deploy", path, "--timeout", "120", *flags)
    assert result.code == 0, result.out + result.err
    return result


def versions(cluster, host, requests=9):
    return {cluster.get(host)[1].split(" from ")[0] for _ in range(requests)}


def test_five_deploys_under_load_lose_no_request(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "steady", "1"))
    with Load(cluster, "steady.localhost", rps=20) as load:
        for version in "23456":
            result = deploy_ok(cluster, spec(cluster, tmp_path, "steady", version))
            assert f"release v{version}" in result.err
        time.sleep(1)
    assert load.failures == [] and load.ok > 100
    assert versions(cluster, "steady.localhost") == {"VERSION 6 "}
    assert {r["release"] for r in cluster.paas_json("ps", "steady")} == {6}
    releases = cluster.paas_json("releases", "steady")
    assert [(r["release"], r["outcome"]) for r in releases[:2]] == [(6, "deployed"), (5, "deployed")]
    assert cluster.paas("destroy", "steady").code == 0


def test_a_release_failing_its_health_check_is_rolled_back_while_the_old_serves(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "guarded", "1"))
    with Load(cluster, "guarded.localhost", rps=20) as load:
        result = cluster.paas("deploy", spec(cluster, tmp_path, "guarded", "2", health="/missing"),
                              "--timeout", "120")
    assert result.code == 1
    assert "guarded v2 failed, rolled back to v1" in result.err
    assert "last probe: HTTP 404" in result.err
    assert load.failures == [] and load.bodies and all(b.startswith("VERSION 1 ") for b in load.bodies)
    app = {a["app"]: a for a in cluster.paas_json("apps")}["guarded"]
    assert app["release"] == 1
    wait_for(lambda: {r["release"] for r in cluster.paas_json("ps", "guarded")} == {1}, 30,
             what="failed replicas removed")
    outcome = {r["release"]: r["outcome"] for r in cluster.paas_json("releases", "guarded")}
    assert outcome[2].startswith("failed, rolled back to v1")
    assert cluster.paas("destroy", "guarded").code == 0


def test_a_crash_looping_release_is_rolled_back_with_its_last_log_lines(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "crashy", "1", replicas=2))
    crashing = APP.replace("exec httpd -f -p 8000 -h /tmp/www", "echo config file missing >&2; exit 3")
    result = cluster.paas("deploy", spec(cluster, tmp_path, "crashy", "2", replicas=2, text=crashing))
    assert result.code == 1
    assert "crashy v2 failed, rolled back to v1" in result.err and "crashed" in result.err
    assert "last exit code 3" in result.err and "| config file missing" in result.err
    assert versions(cluster, "crashy.localhost") == {"VERSION 1 "}
    assert cluster.paas("destroy", "crashy").code == 0


def test_a_rollout_completes_after_the_controller_is_killed_mid_way(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "resume", "1"))
    slow = APP.replace("interval: 0.5s, timeout: 0.5s", "interval: 0.5s, timeout: 0.5s, healthy_after: 4")
    with Load(cluster, "resume.localhost", rps=20) as load:
        assert cluster.paas("deploy", spec(cluster, tmp_path, "resume", "2", text=slow), "--no-wait").code == 0
        wait_for(lambda: any(r["release"] == 2 for r in cluster.paas_json("ps", "resume")), 20,
                 what="rollout under way")
        pid = int((cluster.home / "run" / "controller.pid").read_text())
        subprocess.run(["kill", "-9", str(pid)], check=True)
        time.sleep(2)
        assert cluster.paas("up").code == 0            # restarts what is not running: the controller
        wait_for(lambda: {r["release"] for r in cluster.paas_json("ps", "resume")} == {2}
                 and cluster.paas_json("releases", "resume")[0]["outcome"] == "deployed", 90,
                 what="rollout of v2 finished by the new controller")
    assert load.failures == []
    assert versions(cluster, "resume.localhost") == {"VERSION 2 "}
    assert cluster.paas("destroy", "resume").code == 0


def test_rollback_restores_image_and_config_together(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "undo", "1", replicas=2))
    assert cluster.paas("config", "set", "undo", "GREETING=hi").code == 0          # v2
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "ARG PAAS_REGISTRY\nFROM ${PAAS_REGISTRY}/paas/busybox:latest\nLABEL variant=built\n")
    built = APP.replace("image: REGISTRY/paas/busybox:latest", "build: {context: ctx}")
    deploy_ok(cluster, spec(cluster, tmp_path, "undo", "3", replicas=2, text=built))   # v3: new image, VERSION 3
    assert versions(cluster, "undo.localhost") == {"VERSION 3 hi"}
    result = cluster.paas("rollback", "undo", "v1", "--timeout", "120")
    assert result.code == 0, result.err
    assert "release v4" in result.err
    releases = {r["release"]: r for r in cluster.paas_json("releases", "undo")}
    v1, v3, v4 = releases[1], releases[3], releases[4]
    assert v4["image"] == v1["image"] != v3["image"] and v4["env_keys"] == ["VERSION"]
    assert versions(cluster, "undo.localhost") == {"VERSION 1 "}
    assert {r["image"] for r in cluster.paas_json("ps", "undo")} == {v1["image"]}
    assert "rollback to v1" in v4["note"]
    assert cluster.paas_json("config", "undo")["config"] == {}          # v1 had no config vars
    assert cluster.paas("destroy", "undo").code == 0


def test_scale_up_and_down_keeps_serving(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "elastic", "1", replicas=2))
    ids = {r["id"] for r in cluster.paas_json("ps", "elastic")}
    with Load(cluster, "elastic.localhost", rps=20) as load:
        assert cluster.paas("scale", "elastic", "web=5").code == 0
        assert len(cluster.paas_json("ps", "elastic")) == 5
        assert ids <= {r["id"] for r in cluster.paas_json("ps", "elastic")}      # nothing restarted
        assert cluster.paas("scale", "elastic", "web=1").code == 0
    assert load.failures == []
    assert [r["state"] for r in cluster.paas_json("ps", "elastic")] == ["running"]
    bad = cluster.paas("scale", "elastic", "db=2")
    assert bad.code == 1 and "db: no such process" in bad.err
    assert cluster.paas("destroy", "elastic").code == 0


def test_config_set_and_unset_make_releases(cluster, tmp_path):
    deploy_ok(cluster, spec(cluster, tmp_path, "conf", "1", replicas=1))
    assert cluster.paas("config", "set", "conf", "GREETING=bonjour").code == 0
    assert versions(cluster, "conf.localhost", 3) == {"VERSION 1 bonjour"}
    shown = cluster.paas_json("config", "conf")
    assert shown["config"] == {"GREETING": "bonjour"} and shown["env"]["VERSION"] == "1"
    assert cluster.paas("config", "unset", "conf", "GREETING").code == 0
    assert versions(cluster, "conf.localhost", 3) == {"VERSION 1 "}
    assert [r["release"] for r in cluster.paas_json("releases", "conf")] == [3, 2, 1]
    bad = cluster.paas("config", "set", "conf", "PAAS_X=1")
    assert bad.code == 1 and "reserved for the platform" in bad.err
    assert cluster.paas("destroy", "conf").code == 0


def test_a_rollout_that_would_stop_every_replica_needs_allow_downtime(cluster, tmp_path):
    single = APP.replace("max_surge: 1, max_unavailable: 0", "max_surge: 0, max_unavailable: 1")
    deploy_ok(cluster, spec(cluster, tmp_path, "solo", "1", replicas=1, text=single))
    refused = cluster.paas("deploy", spec(cluster, tmp_path, "solo", "2", replicas=1, text=single))
    assert refused.code == 1 and "--allow-downtime" in refused.err and "processes.web" in refused.err
    assert cluster.paas_json("releases", "solo")[0]["release"] == 1
    deploy_ok(cluster, spec(cluster, tmp_path, "solo", "2", replicas=1, text=single), "--allow-downtime")
    assert cluster.paas("destroy", "solo").code == 0


def test_deploys_queue_and_a_newer_queued_one_supersedes_an_older(cluster, tmp_path):
    slow = APP.replace("interval: 0.5s, timeout: 0.5s", "interval: 0.5s, timeout: 0.5s, healthy_after: 4")
    deploy_ok(cluster, spec(cluster, tmp_path, "queue", "1", replicas=1, text=slow))
    assert cluster.paas("deploy", spec(cluster, tmp_path, "queue", "2", replicas=1, text=slow), "--no-wait").code == 0
    third = cluster.paas("deploy", spec(cluster, tmp_path, "queue", "3", replicas=1, text=slow), "--no-wait")
    assert third.code == 0 and "v3 queued behind the rollout under way" in third.err
    fourth = cluster.paas("deploy", spec(cluster, tmp_path, "queue", "4", replicas=1, text=slow), "--timeout", "120")
    assert fourth.code == 0, fourth.err
    assert "supersedes queued v3" in fourth.err
    outcome = {r["release"]: r["outcome"] for r in cluster.paas_json("releases", "queue")}
    assert outcome[2] == "deployed" and outcome[4] == "deployed"
    assert outcome[3] == "superseded by v4 before it ran"
    assert versions(cluster, "queue.localhost", 3) == {"VERSION 4 "}
    assert cluster.paas("destroy", "queue").code == 0
