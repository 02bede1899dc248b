"""Build once, run anywhere: contexts, the builder, and `paas deploy` of a
`build:` spec against the real registry, dockerd and agents."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agent.images import images_to_keep, images_to_remove
from controller.builder import BuildFailed, parse_procfile, prepare_context
from paas.context import ContextError, is_ignored, pack_context, parse_dockerignore
from tests.conftest import ROOT, wait_for

# -- pure: contexts, Procfiles, image hygiene ------------------------------------------------


@pytest.mark.parametrize("patterns, path, ignored", [
    ("*.pyc", "a.pyc", True),
    ("*.pyc", "sub/a.pyc", False),          # Docker's * does not cross directories
    ("**/*.pyc", "sub/deep/a.pyc", True),
    ("notes/", "notes/todo.txt", True),
    ("notes", "notes/todo.txt", True),
    ("docs\n!docs/keep.md", "docs/keep.md", False),
    ("docs\n!docs/keep.md", "docs/other.md", True),
    ("# comment\n\n/build", "build/x", True),
    ("a?c", "abc", True),
    ("[ab].txt", "c.txt", False),
])
def test_dockerignore_patterns(patterns, path, ignored):
    assert is_ignored(path, parse_dockerignore(patterns)) is ignored


def make_context(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_packing_is_reproducible_and_honours_dockerignore(tmp_path):
    ctx = make_context(tmp_path / "a", {"Dockerfile": "FROM x\n", "app.py": "print(1)\n", "x.pyc": "junk",
                                        "notes/n.txt": "n", ".dockerignore": "*.pyc\nnotes/\nDockerfile\n"})
    packed = pack_context(ctx)
    names = tarfile.open(fileobj=packed.file).getnames()
    assert names == [".dockerignore", "Dockerfile", "app.py"]    # the Dockerfile always goes
    same = make_context(tmp_path / "b", {"Dockerfile": "FROM x\n", "app.py": "print(1)\n",
                                         ".dockerignore": "*.pyc\nnotes/\nDockerfile\n"})
    assert pack_context(same).source_hash == packed.source_hash
    (same / "app.py").write_text("print(2)\n")
    assert pack_context(same).source_hash != packed.source_hash


def test_a_context_over_the_limit_is_refused_before_upload(tmp_path):
    ctx = make_context(tmp_path, {"Dockerfile": "FROM x\n", "big.bin": "x" * 5000})
    with pytest.raises(ContextError, match="over 0 MiB"):
        pack_context(ctx, limit=4096)


def test_procfile_parsing_and_the_generated_dockerfile(tmp_path):
    assert parse_procfile("# c\nweb: python3 app.py\nworker: python3 w.py --x\n") == \
        {"web": "python3 app.py", "worker": "python3 w.py --x"}
    with pytest.raises(BuildFailed, match="Procfile"):
        parse_procfile("not a process line")
    ctx = make_context(tmp_path, {"Procfile": "web: python3 app.py\n", "app.py": "", "requirements.txt": "# none\n"})
    tar, procfile = prepare_context(pack_context(ctx).file, "Dockerfile", "reg:5000/paas/python:3")
    dockerfile = tarfile.open(fileobj=tar).extractfile("Dockerfile").read().decode()
    assert procfile == {"web": "python3 app.py"}
    assert "FROM reg:5000/paas/python:3" in dockerfile and 'CMD ["sh", "-c", "python3 app.py"]' in dockerfile
    assert "pip install" not in dockerfile         # requirements.txt holds only a comment


def test_a_context_without_dockerfile_or_procfile_fails_clearly(tmp_path):
    ctx = make_context(tmp_path, {"app.py": ""})
    with pytest.raises(BuildFailed, match="no Dockerfile and no Procfile"):
        prepare_context(pack_context(ctx).file, "Dockerfile", "base")


def test_nodes_keep_the_last_releases_and_what_runs():
    releases = [{"app": "a", "number": n, "image": f"r/a@sha256:{n}"} for n in range(1, 8)]
    kept = images_to_keep(releases, in_use=["r/a@sha256:1"], keep=5)
    assert kept == {"r/a@sha256:1", *(f"r/a@sha256:{n}" for n in range(3, 8))}
    images = [{"id": f"id{n}", "digests": [f"r/a@sha256:{n}"], "tags": []} for n in range(1, 8)]
    images.append({"id": "gone-app", "digests": ["r/b@sha256:9"], "tags": ["r/b:abc"]})
    assert images_to_remove(images, kept) == ["gone-app", "id2"]


# -- against the real cluster ---------------------------------------------------------------

DOCKERFILE = """\
ARG PAAS_REGISTRY=127.0.0.1:5000
FROM ${PAAS_REGISTRY}/paas/busybox:latest
COPY index.html /www/index.html
RUN echo "built at step 4" > /www/step.txt
CMD ["httpd", "-f", "-p", "8000", "-h", "/www"]
"""
SPEC = """\
name: NAME
build: {context: ., dockerfile: Dockerfile}
processes:
  web:
    replicas: 3
    port: 8000
    health: {path: /, interval: 0.5s, timeout: 0.5s}
    resources: {cpu: 0.1, memory: 16Mi}
"""


def built_app(tmp_path: Path, name: str, body: str, dockerfile: str = DOCKERFILE) -> Path:
    make_context(tmp_path, {"Dockerfile": dockerfile, "index.html": body, "app.yaml": SPEC.replace("NAME", name),
                            ".dockerignore": "*.log\n", "debug.log": "left out"})
    return tmp_path / "app.yaml"


@pytest.mark.cluster
def test_built_once_pushed_and_every_node_runs_the_same_digest(cluster, tmp_path):
    spec = built_app(tmp_path, "built", "version one\n")
    first = cluster.paas("deploy", str(spec), "--timeout", "120")
    assert first.code == 0, first.err
    assert "Step 4/" in first.err and "built and pushed" in first.err
    replicas = cluster.paas_json("ps", "built")
    digests = {r["image"] for r in replicas}
    assert len(replicas) == 3 and len({r["node"] for r in replicas}) == 3
    assert len(digests) == 1
    image = digests.pop()
    assert image.startswith(f"{cluster.registry}/built@sha256:")
    assert cluster.get("built.localhost") == (200, "version one\n")

    again = cluster.paas("deploy", str(spec))
    assert again.code == 0, again.err
    assert f"cached {image.split('@')[1]}" in again.err and "Step " not in again.err
    assert "unchanged, still v1" in again.err
    images = cluster.paas_json("images", "built")
    assert [(i["image"], i["releases"]) for i in images] == [(image, [1])]
    assert images[0]["size"] > 0
    assert cluster.paas("destroy", "built").code == 0


@pytest.mark.cluster
def test_a_failing_build_leaves_the_old_release_serving(cluster, tmp_path):
    spec = built_app(tmp_path, "sturdy", "still serving\n")
    assert cluster.paas("deploy", str(spec)).code == 0
    before = cluster.store_keys("/paas/releases/sturdy/")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace('echo "built at step 4"', "echo broken; exit 7;"))
    result = cluster.paas("deploy", str(spec))
    assert result.code == 1
    assert "failed at Step 4/" in result.err and "broken" in result.err
    assert "returned a non-zero code: 7" in result.err
    assert cluster.store_keys("/paas/releases/sturdy/") == before
    assert all(cluster.get("sturdy.localhost") == (200, "still serving\n") for _ in range(6))
    assert cluster.paas("destroy", "sturdy").code == 0


@pytest.mark.cluster
def test_a_new_source_rolls_out_a_new_digest(cluster, tmp_path):
    spec = built_app(tmp_path, "changing", "v1\n")
    assert cluster.paas("deploy", str(spec)).code == 0
    (tmp_path / "index.html").write_text("v2\n")
    result = cluster.paas("deploy", str(spec))
    assert result.code == 0 and "release v2" in result.err
    wait_for(lambda: all(cluster.get("changing.localhost") == (200, "v2\n") for _ in range(6)), 20,
             what="only v2 answers")
    images = cluster.paas_json("images", "changing")
    assert [i["releases"] for i in images] == [[2], [1]]
    assert cluster.paas("destroy", "changing").code == 0


@pytest.mark.cluster
def test_deploying_a_build_spec_straight_to_the_api_without_a_build_is_refused(cluster, tmp_path):
    from tests.test_cluster import api
    status, body = api(cluster, "POST", "/api/v1/apps", {"spec": SPEC.replace("NAME", "nobuild")})
    assert status == 422 and "no finished build" in body["problems"][0]



@pytest.mark.cluster
def test_the_python_app_builds_and_runs_web_and_worker(cluster):
    result = cluster.paas("deploy", "manifests/pyapp/app.yaml", "--timeout", "180")
    assert result.code == 0, result.err
    rows = cluster.paas_json("ps", "pyapp")
    assert sorted(r["process"] for r in rows) == ["web", "web", "web", "worker"]
    assert all(r["healthy"] for r in rows)
    status, body = cluster.get("pyapp.localhost")
    assert status == 200 and "release 1 GREETING=hello" in body
    assert cluster.paas("destroy", "pyapp").code == 0


@pytest.mark.cluster
def test_a_procfile_app_without_dockerfile_gets_one_and_runs(cluster):
    result = cluster.paas("deploy", "manifests/procfile-app/app.yaml", "--timeout", "180")
    assert result.code == 0, result.err
    rows = cluster.paas_json("ps", "procfile-app")
    assert {r["process"] for r in rows} == {"web", "worker"}
    assert all(r["healthy"] for r in rows)
    status, body = cluster.get("procfile-app.localhost")
    assert status == 200 and body.startswith("hello from procfile-app.web.")
    assert cluster.paas("destroy", "procfile-app").code == 0


@pytest.mark.cluster
def test_plan_shows_the_change_and_applies_nothing(cluster, tmp_path):
    spec = built_app(tmp_path, "planned", "v1\n")
    plan = cluster.paas("deploy", "--plan", str(spec))
    assert plan.code == 0, plan.err
    assert "planned: create: start every replica" in plan.out and "(built from source" in plan.out
    assert "nothing was applied" in plan.out
    assert cluster.paas("ps", "planned").code == 1          # no such app: nothing was applied
    assert cluster.paas("deploy", str(spec)).code == 0
    (tmp_path / "app.yaml").write_text(SPEC.replace("NAME", "planned").replace("replicas: 3", "replicas: 4")
                                       + "env: {COLOR: blue}\n")
    plan = cluster.paas("deploy", "--plan", "--json", str(spec))
    change = json.loads(plan.out)
    assert change["env"]["added"] == ["COLOR"] and change["replicas"]["web"] == {"from": 3, "to": 4}
    assert change["strategy"].startswith("rolling update")
    assert sum(len(v) for v in change["placement"]["nodes"].values()) == 4
    assert [r["release"] for r in cluster.paas_json("releases", "planned")] == [1]
    assert cluster.paas("destroy", "planned").code == 0


@pytest.mark.cluster
def test_an_unreachable_registry_is_named_and_nothing_changes(cluster, tmp_path):
    spec = built_app(tmp_path, "noreg", "first\n")
    assert cluster.paas("deploy", str(spec)).code == 0
    (tmp_path / "index.html").write_text("second\n")
    pid = int((cluster.home / "run" / "registry.pid").read_text())
    subprocess.run(["kill", "-9", str(pid)], check=True)
    try:
        result = cluster.paas("deploy", str(spec))
    finally:
        assert cluster.paas("up").code == 0            # the registry comes back
    assert result.code == 1
    assert f"registry {cluster.registry}" in result.err
    assert [r["release"] for r in cluster.paas_json("releases", "noreg")] == [1]
    assert cluster.get("noreg.localhost") == (200, "first\n")
    assert cluster.paas("destroy", "noreg").code == 0


@pytest.mark.cluster
def test_a_node_labelled_builder_does_the_builds(cluster, tmp_path):
    """A fourth agent joins with the label builder=true: builds go to its Docker Engine."""
    log = open(tmp_path / "builder-agent.log", "wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--node", "builder-1", "--address", "127.0.0.24", "--cluster", "test",
         "--etcd", f"127.0.0.1:{cluster.env['PAAS_ETCD_PORT']}", "--label", "builder=true", "--cpu", "1",
         "--memory", "512"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: "builder-1" in {n["name"] for n in cluster.paas_json("nodes")}, 30, what="builder joined")
        result = cluster.paas("deploy", str(built_app(tmp_path, "onbuilder", "built there\n")))
        assert result.code == 0, result.err
        assert "onbuilder: building on builder-1 (labelled builder)" in result.err
        assert cluster.get("onbuilder.localhost") == (200, "built there\n")
        assert cluster.paas("destroy", "onbuilder").code == 0
    finally:
        agent.kill()
        agent.wait()
        log.close()
    wait_for(lambda: {n["name"]: n["state"] for n in cluster.paas_json("nodes")}.get("builder-1") == "lost", 30,
             what="builder-1 lost")
    assert cluster.paas("node", "forget", "builder-1").code == 0
    assert "builder-1" not in {n["name"] for n in cluster.paas_json("nodes")}
