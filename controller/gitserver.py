"""The git server: `git push paas main` builds and deploys.

An asyncssh server in the controller. Only public keys stored under
/paas/keys/<fingerprint> authenticate; the only commands are `git-receive-pack` and
`git-upload-pack` of '<app>' (optionally '/<app>.git'), run by exec (no shell) on
bare repositories <git-dir>/<app>.git, made on the first push.

When receive-pack is done, with the SSH channel still open, the deploy branch's
head is deployed unless /paas/git/<app> says it already is: its tree (`git
archive`) gives the spec (app.yaml, or defaults for a Dockerfile or Procfile) and
the build context, which go through the controller's own HTTP API (build, deploy,
wait for the rollout) as `paas deploy` does. Progress goes back as `remote:` lines
on stderr; the exit status says whether the new release serves, so a failed deploy
fails the push. Then /paas/git/<app> = {"sha", "release", "image", "pushed"}.
Pushes to one app queue.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from controller.builder import BuildFailed, parse_procfile
from controller.keys_api import find_key, load_host_key
from paas import store as keys
from paas.client import ApiError, Client, describe_replica, rollout_outcome
from paas.context import MAX_CONTEXT_BYTES, ContextError, pack_context
from paas.spec import MAX_SPEC_BYTES, SpecError, parse_spec
from paas.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
_COMMAND = re.compile(r"^(git-receive-pack|git-upload-pack) '([^'\\]*)'$")
_REPO = re.compile(r"^/?([a-z][a-z0-9-]{0,39})(?:\.git)?$")
_PROTOCOL = re.compile(r"^version=[0-9]$")
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,100}$")
DEFAULT_SPEC = "app.yaml (made from the defaults: no app.yaml in the repository)"


class Refused(Exception):
    """A command, repository or commit the git server will not act on; says why."""


def git_key(app: str) -> str:
    return f"{keys.PREFIX}/git/{app}"


def parse_command(command: str | None) -> tuple[str, str]:
    """(git verb, app name) of an SSH exec request; Refused says what is wrong."""
    if not command:
        raise Refused("this server takes `git push` and `git clone` only; there is no shell")
    verb = command.split(" ", 1)[0]
    if verb not in ("git-receive-pack", "git-upload-pack"):
        raise Refused(f"only git-receive-pack and git-upload-pack run here, not {verb[:40]!r}")
    m = _COMMAND.match(command)
    repo = _REPO.match(m.group(2)) if m else None
    if repo is None:
        raise Refused("bad repository name: expected an app name (1-40 of a-z, 0-9 and '-', starting "
                      "with a letter), as in ssh://git@HOST:PORT/myapp")
    return verb, repo.group(1)


def push_spec(app: str, app_yaml: str | None, dockerfile: bool, procfile: str | None) -> tuple[str, str]:
    """The spec text (and its file name) a pushed tree deploys with: app.yaml with
    `build: {context: .}` added when it names neither image nor build; without
    app.yaml, a web process on port 8000 with 2 replicas (plus the Procfile's others)."""
    if app_yaml is not None:
        doc = None
        if len(app_yaml) <= MAX_SPEC_BYTES:
            try:
                doc = yaml.safe_load(app_yaml)
            except yaml.YAMLError:
                pass      # parse_spec says what is wrong, with the line
        if isinstance(doc, dict) and "image" not in doc and "build" not in doc:
            app_yaml = app_yaml.rstrip("\n") + "\nbuild: {context: ., dockerfile: Dockerfile}\n"
        return app_yaml, "app.yaml"
    if not dockerfile and procfile is None:
        raise Refused("no app.yaml, Dockerfile or Procfile at the root of the commit: nothing to deploy")
    try:
        names = list(parse_procfile(procfile)) if procfile is not None else ["web"]
    except BuildFailed as e:
        raise Refused(str(e)) from None
    processes = {n: {"replicas": 2, "port": 8000} if n == "web" else {"replicas": 1} for n in names}
    doc = {"name": app, "build": {"context": ".", "dockerfile": "Dockerfile"}, "processes": processes}
    return yaml.safe_dump(doc, sort_keys=False), DEFAULT_SPEC


class _Auth(asyncssh.SSHServer):
    """Public keys from /paas/keys only; no passwords, no keyboard-interactive."""

    def __init__(self, store: Store):
        self.store, self.conn = store, None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        try:
            entry = await find_key(self.store, key)
        except StoreUnavailable as e:
            log.warning("git: cannot check a key, etcd is down: %s", e)
            return False
        if entry is None:
            log.info("git: refused unknown key %s", key.get_fingerprint("sha256"))
            return False
        self.conn.set_extra_info(paas_key=entry["name"])
        return True


def _sayer(process: asyncssh.SSHServerProcess) -> Callable[[str], None]:
    """`remote:` lines on the channel's stderr; a client that went away stops nothing."""
    def say(line: str) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            process.stderr.write(f"remote: {line}\n".encode(errors="replace"))
    return say


class GitServer:
    def __init__(self, store: Store, api_url: str, token: str, repo_dir: Path, host_key: Path,
                 branch: str = "main", timeout: float = 300.0):
        self.store, self.client = store, Client(api_url, token)
        self.repo_dir, self.host_key, self.branch, self.timeout = repo_dir, host_key, branch, timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo_dir),
                     "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("asyncssh").setLevel(logging.WARNING)    # a push is logged once, below
        self._server = await asyncssh.create_server(
            lambda: _Auth(self.store), host, int(port), server_host_keys=[load_host_key(self.host_key)],
            process_factory=self._session, encoding=None, line_editor=False, allow_pty=False,
            agent_forwarding=False, x11_forwarding=False, login_timeout=30, keepalive_interval=30)
        log.info("git server on ssh://git@%s (repositories in %s, deploys %s)", listen, self.repo_dir, self.branch)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        status = 1
        try:
            verb, app = parse_command(process.command)
            if verb == "git-upload-pack":
                status = await self._upload(process, app)
            else:
                status = await self._receive(process, app)
        except (Refused, ApiError, StoreUnavailable) as e:
            _sayer(process)(f"error: {e}")
        except Exception:  # noqa: BLE001 - the client gets a line, the log the details
            log.exception("git: %s failed", process.command)
            _sayer(process)("error: the git server failed; see the controller log")
        process.exit(status)

    async def _upload(self, process: asyncssh.SSHServerProcess, app: str) -> int:
        repo = self.repo_dir / f"{app}.git"
        if not repo.is_dir():
            raise Refused(f"no repository for app {app}: `git push` to it first")
        return await self._pipe(process, ["git", "upload-pack", "--strict", str(repo)])

    async def _receive(self, process: asyncssh.SSHServerProcess, app: str) -> int:
        say = _sayer(process)
        lock = self._locks.setdefault(app, asyncio.Lock())
        if lock.locked():
            say(f"{app}: waiting for the push under way to finish")
        async with lock:
            repo = self.repo_dir / f"{app}.git"
            if not repo.is_dir():
                await self._git("init", "--bare", "--quiet", f"--initial-branch={self.branch}", str(repo))
                await self._git("-C", str(repo), "config", "receive.fsckObjects", "true")
            status = await self._pipe(process, ["git", "receive-pack", str(repo)])
            if status != 0:
                return status
            code, out = await self._git("-C", str(repo), "rev-parse", "--verify", "--quiet",
                                        f"refs/heads/{self.branch}^{{commit}}", check=False)
            if code != 0:
                say(f"{app}: nothing deployed: only the {self.branch} branch deploys "
                    f"(git push paas {self.branch})")
                return 0
            sha = out.decode().strip()
            log.info("git: %s %s at %s, pushed with key %s", app, self.branch, sha, process.get_extra_info("paas_key"))
            return await self._deploy(say, app, repo, sha)

    async def _pipe(self, process: asyncssh.SSHServerProcess, argv: list[str]) -> int:
        """Run git with the SSH channel as its stdin, stdout and stderr; its exit status."""
        protocol = process.env.get("GIT_PROTOCOL", "")     # protocol v2, if the client asks for it
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**self._env, "GIT_PROTOCOL": protocol} if _PROTOCOL.match(protocol) else self._env)

        async def feed() -> None:
            with contextlib.suppress(OSError, asyncssh.Error):
                while data := await process.stdin.read(65536):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            proc.stdin.close()

        async def copy(src: asyncio.StreamReader, dst: asyncssh.SSHWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(copy(proc.stdout, process.stdout), copy(proc.stderr, process.stderr))
            return await proc.wait()
        finally:
            feeder.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _git(self, *args: str, check: bool = True, limit: int = 1 << 20) -> tuple[int, bytes]:
        """Run git (no shell, no stdin); its exit status and stdout, refused beyond `limit` bytes."""
        proc = await asyncio.create_subprocess_exec(
            "git", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env)
        errors = asyncio.create_task(proc.stderr.read())
        out, size = io.BytesIO(), 0
        while size <= limit and (chunk := await proc.stdout.read(1 << 20)):
            size += out.write(chunk)
        if size > limit:
            proc.kill()
        err, code = await errors, await proc.wait()
        if size > limit:
            raise Refused(f"the commit is over {limit >> 20} MiB as a tar; too big for a build context")
        if check and code != 0:
            what = args[2] if args[0] == "-C" else args[0]
            raise Refused(f"git {what} failed: {err.decode(errors='replace').strip()[:500]}")
        return code, out.getvalue()

    # -- the deploy ---------------------------------------------------------------------

    async def _deploy(self, say: Callable[[str], None], app: str, repo: Path, sha: str) -> int:
        short = sha[:12]
        record = await self.store.get(git_key(app))
        if record is not None and record.value["sha"] == sha:
            try:
                current = await asyncio.to_thread(self.client.app, app)
            except ApiError as e:
                if e.status != 404:
                    raise
                current = None        # destroyed since: deploy it again
            if current is not None and current["image"] == record.value.get("image"):
                say(f"{app}: {self.branch} {short} is already deployed (v{record.value['release']}); "
                    "nothing to do")
                return 0
        say(f"{app}: deploying {self.branch} {short}")
        with tempfile.TemporaryDirectory(prefix=f"paas-push-{app}-") as tmp:
            tree = Path(tmp)
            _, archive = await self._git("-C", str(repo), "archive", "--format=tar", sha,
                                         limit=MAX_CONTEXT_BYTES + 16 * 1024 * 1024)
            try:
                await asyncio.to_thread(_extract, archive, tree)
            except (tarfile.TarError, OSError) as e:   # e.g. a symlink that leaves the tree
                raise Refused(f"cannot unpack {short}: {e}") from None
            spec_file = tree / "app.yaml"
            text, filename = push_spec(
                app, spec_file.read_bytes().decode(errors="replace") if spec_file.is_file() else None,
                (tree / "Dockerfile").is_file(),
                (tree / "Procfile").read_text(errors="replace") if (tree / "Procfile").is_file() else None)
            try:
                spec = parse_spec(text, filename)
            except SpecError as e:
                for problem in e.problems:
                    say(str(problem))
                say(f"{len(e.problems)} problem(s) in {filename} at {short}; nothing was deployed")
                return 1
            if spec.name != app:
                say(f"{filename}: name: the spec is for app {spec.name!r} but was pushed to {app!r}; "
                    f"push to the repository {spec.name} or change the name; nothing was deployed")
                return 1
            source = await self._build(say, spec, tree) if spec.build is not None else None
            if spec.build is not None and source is None:
                return 1
        return await self._release(say, app, text, filename, source, sha)

    async def _build(self, say: Callable[[str], None], spec: Any, tree: Path) -> str | None:
        """The source hash of the built context (built now, or before); None on failure."""
        try:
            packed = await asyncio.to_thread(pack_context, tree / spec.build.context, spec.build.dockerfile)
        except ContextError as e:
            say(f"error: {e}".replace(str(tree), "."))
            return None
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._build_blocking, lambda line: loop.call_soon_threadsafe(say, line),
                                       spec.name, spec.build.dockerfile, packed)

    def _build_blocking(self, say: Callable[[str], None], app: str, dockerfile: str, packed: Any) -> str | None:
        """In a worker thread: upload unless built before, and relay the build's events."""
        cached = self.client.build_record(app, packed.source_hash)
        if cached is not None:
            say(f"{app}: cached {cached['digest']} (source {packed.source_hash[:16]}), no build")
            return packed.source_hash
        say(f"{app}: building ({packed.files} files, {packed.size / 1024:.0f} KiB)")
        for event in self.client.build(app, packed.source_hash, dockerfile, packed.file, packed.size):
            if "error" in event:
                # its log_tail has already been relayed line by line
                say(f"build of {app} failed" + (f" at {event['step']}" if event.get("step") else ""))
                say(f"error: {event['error']}")
                return None
            if "done" in event:
                say(f"{app}: built and pushed {event['done']['image']}")
                return packed.source_hash
            if "log" in event or "status" in event:
                say(f"  {event.get('log') or event['status']}")
        say(f"build of {app} ended without a result")
        return None

    async def _release(self, say: Callable[[str], None], app: str, text: str, filename: str,
                       source: str | None, sha: str) -> int:
        try:
            result = await asyncio.to_thread(self.client.deploy, text, filename, build=source)
        except ApiError as e:
            say(f"error: {e.message}")
            for problem in e.problems:
                say(str(problem))
            return 1
        number = result["release"]
        say(f"{app}: release v{number}" + (" queued behind the rollout under way" if result.get("queued") else "")
            if result["changed"] else f"{app}: unchanged, still v{number}")
        current = await self._wait(say, app, number)
        if current is None:
            return 1
        await self.store.put(git_key(app), {"sha": sha, "release": number, "image": current["image"],
                                            "pushed": time.time()})
        say(f"{app} v{number} is up ({self.branch} {sha[:12]}): "
            + ", ".join(f"http://{h}" for h in current["hosts"][:1]))
        return 0

    async def _wait(self, say: Callable[[str], None], app: str, number: int) -> dict[str, Any] | None:
        """The app once release `number` serves; None (after saying why) if it never does."""
        deadline, last = time.monotonic() + self.timeout, None
        while time.monotonic() < deadline:
            current = await asyncio.to_thread(self.client.app, app)
            outcome, r = rollout_outcome(current, number), current["rollout"]
            if outcome == "done":
                return current
            if outcome == "superseded":
                say(f"{app} v{number} was superseded by a newer release")
                return None
            if outcome == "failed":
                deploy = current["deploy"]
                where = f", rolled back to v{deploy['previous']}" if deploy["phase"] == "rolled-back" else ""
                say(f"{app} v{number} failed{where}: {deploy.get('reason')}")
                for rep in deploy.get("failing") or []:
                    _say_replica(say, rep)
                return None
            progress = (f"{app} v{number} is queued behind the rollout of v{current['release']}"
                        if outcome == "queued" else
                        f"rolling out {app} v{number}: {r['healthy']}/{r['desired']} healthy, "
                        f"{r['routed']} routed, {r['old']} old left")
            if progress != last:
                say(progress)
                last = progress
            await asyncio.sleep(0.3)
        say(f"{app} v{number} is not ready after {self.timeout:g}s")
        for slot, reason in current["rollout"]["pending"].items():
            say(f"  {slot}: pending: {reason}")
        for rep in (rep for rep in current["replicas"] if not (rep["healthy"] and rep["routed"])):
            _say_replica(say, rep)
        return None


def _say_replica(say: Callable[[str], None], rep: dict[str, Any]) -> None:
    for line in describe_replica(rep):
        say(line)


def _extract(archive: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        tar.extractall(dest, filter="data")

