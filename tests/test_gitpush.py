"""`git push paas main` against the real cluster: the real git and OpenSSH clients
talk to the controller's git server, which builds, deploys and streams `remote:` lines."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from controller.gitserver import DEFAULT_SPEC, Refused, parse_command, push_spec
from paas.client import Client
from tests.conftest import Load, wait_for

pytestmark = pytest.mark.cluster

DOCKERFILE = """\
ARG PAAS_REGISTRY=127.0.0.1:5000
FROM ${PAAS_REGISTRY}/paas/busybox:latest
COPY index.html /www/index.html
CMD ["httpd", "-f", "-p", "8000", "-h", "/www"]
"""
SPEC = """\
name: NAME
processes:
  web:
    replicas: 2
    port: 8000
    health: {path: /, interval: 0.5s, timeout: 0.5s}
    resources: {cpu: 0.1, memory: 16Mi}
"""

# -- pure: commands and specs ------------------------------------------------------------------


@pytest.mark.parametrize("command, expected", [
    ("git-receive-pack '/hello'", ("git-receive-pack", "hello")),
    ("git-receive-pack 'hello.git'", ("git-receive-pack", "hello")),
    ("git-upload-pack '/my-app-2.git'", ("git-upload-pack", "my-app-2")),
])
def test_commands_that_run(command, expected):
    assert parse_command(command) == expected


@pytest.mark.parametrize("command, why", [
    ("git-receive-pack '../etc'", "bad repository name"),
    ("git-receive-pack '/../etc'", "bad repository name"),
    ("git-receive-pack '--upload-pack=touch /tmp/x'", "bad repository name"),
    ("git-receive-pack 'a b'", "bad repository name"),
    ("git-receive-pack 'a'\\''b'", "bad repository name"),
    ("git-receive-pack '/Hello'", "bad repository name"),
    ("git-receive-pack hello", "bad repository name"),
    ("git-receive-pack 'hello'; rm -rf /", "bad repository name"),
    ("git-upload-archive 'hello'", "only git-receive-pack and git-upload-pack"),
    ("sh -c 'id'", "only git-receive-pack and git-upload-pack"),
    (None, "no shell"),
])
def test_commands_that_are_refused(command, why):
    with pytest.raises(Refused, match=why):
        parse_command(command)


def test_the_spec_of_a_push():
    text, name = push_spec("a", SPEC.replace("NAME", "a"), True, None)
    assert name == "app.yaml" and text.endswith("build: {context: ., dockerfile: Dockerfile}\n")
    assert text.startswith(SPEC.replace("NAME", "a"))      # problems keep their line numbers
    assert push_spec("a", "name: a\nimage: x\n", True, None)[0] == "name: a\nimage: x\n"
    text, name = push_spec("web-app", None, True, None)
    assert name == DEFAULT_SPEC and "name: web-app" in text and "replicas: 2" in text and "port: 8000" in text
    text, _ = push_spec("py", None, False, "web: python3 app.py\nworker: python3 w.py\n")
    assert "worker:" in text and "replicas: 1" in text
    with pytest.raises(Refused, match="no app.yaml, Dockerfile or Procfile"):
        push_spec("a", None, False, None)


# -- against the real cluster ------------------------------------------------------------------


class Git:
    """A throwaway key (allowed to push through the API) and the git/ssh commands using it."""

    def __init__(self, cluster, tmp: Path, allow: bool = True):
        self.cluster, self.tmp = cluster, tmp
        self.port = cluster.env["PAAS_GIT_PORT"]
        self.key = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(self.key)],
                       check=True)
        self.ssh = ["ssh", "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}", "-p", self.port]
        self.env = {**os.environ, "GIT_SSH_COMMAND": " ".join(self.ssh), "GIT_AUTHOR_NAME": "t",
                    "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                    "GIT_COMMITTER_EMAIL": "t@example.com", "SSH_AUTH_SOCK": ""}
        self.name = None
        if allow:
            self.name = Client(cluster.api, cluster.token).add_key(
                (tmp / "id_ed25519.pub").read_text(), f"test-{tmp.name[-20:]}")["name"]

    def url(self, repo: str) -> str:
        return f"ssh://git@127.0.0.1:{self.port}/{repo}"

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def new_repo(self, app: str, files: dict[str, str]) -> Path:
        repo = self.tmp / app
        repo.mkdir()
        assert self.run("init", "-q", "-b", "main", cwd=repo).returncode == 0
        self.run("remote", "add", "paas", self.url(app), cwd=repo)
        self.commit(repo, files, "first")
        return repo

    def commit(self, repo: Path, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (repo / name).write_text(text)
        assert self.run("add", "-A", cwd=repo).returncode == 0
        assert self.run("commit", "-q", "-m", message, cwd=repo).returncode == 0
        return self.run("rev-parse", "HEAD", cwd=repo).stdout.strip()

    def push(self, repo: Path) -> subprocess.CompletedProcess:
        return self.run("push", "paas", "main", cwd=repo)

    def remove(self) -> None:
        if self.name:
            Client(self.cluster.api, self.cluster.token).remove_key(self.name)


@pytest.fixture
def git(cluster, tmp_path):
    g = Git(cluster, tmp_path)
    yield g
    g.remove()


def app_files(name: str, body: str) -> dict[str, str]:
    return {"Dockerfile": DOCKERFILE, "app.yaml": SPEC.replace("NAME", name), "index.html": body}


def test_push_deploys_rolls_out_without_failed_requests_and_clones_back(cluster, git):
    repo = git.new_repo("gpush", app_files("gpush", "version one\n"))
    started = time.monotonic()
    first = git.push(repo)
    serving = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert "remote:   Step 1/" in first.stderr and "remote: gpush: release v1" in first.stderr
    assert "remote: gpush v1 is up" in first.stderr and "http://gpush.localhost" in first.stderr
    assert cluster.get("gpush.localhost") == (200, "version one\n")
    sha = git.run("rev-parse", "HEAD", cwd=repo).stdout.strip()
    record = cluster.store_keys("/paas/git/gpush")["/paas/git/gpush"]
    assert record["sha"] == sha and record["release"] == 1
    print(f"\nfirst push to serving: {serving:.1f}s")

    again = git.push(repo)
    assert again.returncode == 0, again.stderr
    assert f"remote: gpush: main {sha[:12]} is already deployed (v1); nothing to do" in again.stderr
    assert [r["release"] for r in cluster.paas_json("releases", "gpush")] == [1]

    git.commit(repo, {"index.html": "version two\n"}, "second")
    with Load(cluster, "gpush.localhost", rps=20) as load:
        started = time.monotonic()
        second = git.push(repo)
        serving = time.monotonic() - started
        time.sleep(1)
    assert second.returncode == 0, second.stderr
    assert "remote: gpush: release v2" in second.stderr and "remote: rolling out gpush v2" in second.stderr
    assert load.failures == [] and load.ok > 20
    assert load.bodies <= {"version one", "version two"}
    assert all(cluster.get("gpush.localhost") == (200, "version two\n") for _ in range(6))
    print(f"second push to serving (rolling, 20 rps, 0 failed of {load.ok}): {serving:.1f}s")

    clone = git.run("clone", "-q", git.url("gpush.git"), str(git.tmp / "clone"))
    assert clone.returncode == 0, clone.stderr
    assert (git.tmp / "clone" / "index.html").read_text() == "version two\n"
    assert git.run("log", "--format=%s", cwd=git.tmp / "clone").stdout.split() == ["second", "first"]
    assert cluster.paas("destroy", "gpush").code == 0


def test_an_invalid_app_yaml_is_refused_with_its_errors_and_nothing_changes(cluster, git):
    repo = git.new_repo("gbad", app_files("gbad", "still serving\n"))
    assert git.push(repo).returncode == 0
    before = cluster.store_keys("/paas/releases/gbad/")
    bad = SPEC.replace("NAME", "gbad").replace("replicas: 2", "replicas: lots").replace("8000", "99999")
    git.commit(repo, {"app.yaml": bad, "index.html": "broken\n"}, "bad spec")
    result = git.push(repo)
    assert result.returncode != 0
    assert "remote: app.yaml:4: processes.web.replicas: expected an integer" in result.stderr
    assert "remote: app.yaml:5: processes.web.port: must be between 1 and 65535" in result.stderr
    assert "nothing was deployed" in result.stderr
    assert cluster.store_keys("/paas/releases/gbad/") == before
    assert all(cluster.get("gbad.localhost") == (200, "still serving\n") for _ in range(4))

    git.commit(repo, {"app.yaml": SPEC.replace("NAME", "other")}, "wrong name")
    result = git.push(repo)
    assert result.returncode != 0 and "the spec is for app 'other' but was pushed to 'gbad'" in result.stderr
    assert cluster.store_keys("/paas/releases/gbad/") == before
    assert cluster.paas("destroy", "gbad").code == 0


def test_a_dockerfile_without_app_yaml_gets_the_defaults(cluster, git):
    repo = git.new_repo("gdefault", {"Dockerfile": DOCKERFILE, "index.html": "defaults\n"})
    result = git.push(repo)
    assert result.returncode == 0, result.stderr
    replicas = cluster.paas_json("ps", "gdefault")
    assert [r["process"] for r in replicas] == ["web", "web"]
    assert cluster.get("gdefault.localhost") == (200, "defaults\n")
    assert cluster.paas("destroy", "gdefault").code == 0


def test_pushes_to_one_app_queue(cluster, git):
    repo = git.new_repo("gqueue", app_files("gqueue", "queued\n"))
    first = subprocess.Popen(["git", "push", "paas", "main"], cwd=repo, env=git.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: (cluster.home / "git" / "gqueue.git").is_dir(), 20, 0.05, "the first push started")
    time.sleep(0.3)
    second = git.push(repo)
    _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert "waiting for the push under way to finish" in second.stderr
    assert "is already deployed (v1)" in second.stderr
    assert [r["release"] for r in cluster.paas_json("releases", "gqueue")] == [1]
    assert cluster.paas("destroy", "gqueue").code == 0


def test_an_unknown_key_is_denied_and_nothing_changes(cluster, tmp_path):
    stranger = Git(cluster, tmp_path, allow=False)
    repo = stranger.new_repo("gstranger", app_files("gstranger", "no\n"))
    result = stranger.push(repo)
    assert result.returncode != 0 and "Permission denied (publickey)" in result.stderr
    assert "remote:" not in result.stderr                 # refused before any command ran
    assert not (cluster.home / "git" / "gstranger.git").exists()
    assert cluster.paas("ps", "gstranger").code == 1
    assert cluster.store_keys("/paas/git/gstranger") == {}


def test_bad_repository_names_and_other_commands_are_refused(cluster, git):
    marker = git.tmp / "x"
    for repo in ("../etc", f"--upload-pack=touch {marker}", "a b", "/etc/passwd", "x'y"):
        result = subprocess.run([*git.ssh, "git@127.0.0.1", f"git-receive-pack '{repo}'"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "remote: error: bad repository name" in result.stderr, repo
    for command in ("ls /", f"touch {marker}", "git-upload-archive 'gpush'"):
        result = subprocess.run([*git.ssh, "git@127.0.0.1", command], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "only git-receive-pack and git-upload-pack" in result.stderr
    shell = subprocess.run([*git.ssh, "git@127.0.0.1"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    assert shell.returncode == 1 and "no shell" in shell.stderr
    repo = git.new_repo("gnames", app_files("gnames", "x\n"))
    push = git.run("push", git.url("../etc"), "main", cwd=repo)
    assert push.returncode != 0 and "bad repository name" in push.stderr
    assert not marker.exists()
    assert all(p.name.endswith(".git") for p in (cluster.home / "git").iterdir())
    assert git.run("clone", git.url("nosuchapp"), str(git.tmp / "c")).returncode != 0


def test_the_host_key_is_kept_in_paas_home(cluster):
    scanned = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", cluster.env["PAAS_GIT_PORT"], "127.0.0.1"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    kept = subprocess.run(["ssh-keygen", "-y", "-f", str(cluster.home / "git_host_ed25519_key")],
                          capture_output=True, text=True, check=True).stdout.split()
    assert scanned[1:3] == kept[0:2]


def test_keys_and_git_remote_commands(cluster, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f",
                    str(tmp_path / "k")], check=True)
    added = cluster.paas("keys", "add", str(tmp_path / "k.pub"))
    assert added.code == 0 and "added key alice@laptop" in added.out, added.err
    again = cluster.paas("keys", "add", str(tmp_path / "k.pub"), "--name", "bob")
    assert again.code == 1 and "already added as alice@laptop" in again.err
    private = cluster.paas("keys", "add", str(tmp_path / "k"))
    assert private.code == 1 and "private key" in private.err
    listed = cluster.paas_json("keys")
    assert [k["name"] for k in listed if k["name"] == "alice@laptop"] == ["alice@laptop"]
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    assert {k["fingerprint"] for k in listed if k["name"] == "alice@laptop"} == {fingerprint}
    assert cluster.paas("keys", "remove", "alice@laptop").code == 0
    assert "alice@laptop" not in [k["name"] for k in cluster.paas_json("keys")]
    assert cluster.paas("keys", "remove", "alice@laptop").code == 1
    remote = cluster.paas("git-remote", "hello")
    assert remote.out.strip() == f"git remote add paas ssh://git@127.0.0.1:{cluster.env['PAAS_GIT_PORT']}/hello"
    assert cluster.paas("git-remote", "../etc").code == 1
