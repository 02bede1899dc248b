"""The controller API client the CLI uses: one method per call, errors as
`ApiError` with the controller's own message (and spec problems, if any)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import IO, Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []
        self.refused = False     # the connection was refused: nothing reached the controller


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        """`url`: one controller, or several separated by commas: a refused connection
        (a controller down) moves on to the next, so any live controller answers."""
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
        self.url, self.token, self.timeout = self.urls[0], token, timeout

    def _open(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None,
              timeout: float | None = None):
        start = self.urls.index(self.url)
        for url in self.urls[start:] + self.urls[:start]:
            try:
                return self._open_one(url, method, path, data, headers, timeout)
            except ApiError as e:
                if not e.refused or url == (self.urls[start:] + self.urls[:start])[-1]:
                    raise
        raise AssertionError("unreachable")

    def _open_one(self, url: str, method: str, path: str, data: Any, headers: dict[str, str] | None,
                  timeout: float | None):
        req = urllib.request.Request(f"{url}/api/v1{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout or self.timeout)
            self.url = url
            return resp
        except urllib.error.HTTPError as e:
            try:
                payload = json.loads(e.read())
            except ValueError:
                payload = {"error": e.reason}
            raise ApiError(e.code, payload.get("error", str(e.reason)), payload.get("problems")) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            error = ApiError(0, f"the controller is not reachable at {', '.join(self.urls)} ({reason}); "
                                "start the cluster with `paas up`")
            error.refused = isinstance(reason, ConnectionRefusedError)
            raise error from None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data) as resp:
            return json.loads(resp.read() or b"null")

    def deploy(self, spec_text: str, filename: str, build: str | None = None,
               allow_downtime: bool = False) -> dict[str, Any]:
        return self._call("POST", "/apps", {"spec": spec_text, "filename": filename, "build": build,
                                            "allow_downtime": allow_downtime})

    def plan(self, spec_text: str, filename: str, build: str | None, build_pending: str | None) -> dict[str, Any]:
        return self._call("POST", "/plan", {"spec": spec_text, "filename": filename, "build": build,
                                            "build_pending": build_pending})

    def rollback(self, app: str, to: int | None) -> dict[str, Any]:
        return self._call("POST", f"/apps/{app}/rollback", {"to": to})

    def scale(self, app: str, counts: dict[str, int]) -> dict[str, Any]:
        return self._call("POST", f"/apps/{app}/scale", counts)

    def config(self, app: str) -> dict[str, Any]:
        return self._call("GET", f"/apps/{app}/config")

    def set_config(self, app: str, changes: dict[str, str], unset: list[str]) -> dict[str, Any]:
        return self._call("POST", f"/apps/{app}/config", {"set": changes, "unset": unset})

    def releases(self, app: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/apps/{app}/releases")

    def build_record(self, app: str, source_hash: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/apps/{app}/builds/{source_hash}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def build(self, app: str, source_hash: str, dockerfile: str, context: IO[bytes],
              size: int) -> Iterator[dict[str, Any]]:
        """Upload a context and yield the build's events as they stream back."""
        query = urllib.parse.urlencode({"source": source_hash, "dockerfile": dockerfile})
        resp = self._open("POST", f"/apps/{app}/builds?{query}", data=context, timeout=3600,
                          headers={"Content-Type": "application/x-tar", "Content-Length": str(size)})
        with resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)

    def images(self, app: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/apps/{app}/images")

    def apps(self) -> list[dict[str, Any]]:
        return self._call("GET", "/apps")

    def app(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/apps/{name}")

    def destroy(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/apps/{name}")

    def remaining(self, name: str) -> int:
        return self._call("GET", f"/apps/{name}/remaining")["remaining"]

    def node(self, node: str, verb: str) -> dict[str, Any]:
        """verb: drain, undrain or forget."""
        return self._call("POST", f"/nodes/{node}/{verb}")

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/nodes")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    # -- SSH keys allowed to `git push` ---------------------------------------------------

    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")

    def add_key(self, key: str, name: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/keys", {"key": key, "name": name})

    def remove_key(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/keys/{urllib.parse.quote(name, safe='')}")


def rollout_outcome(app: dict[str, Any], number: int) -> str:
    """Where release `number` stands in an app as `Client.app` returns it: "done",
    "failed" (rolled back or failed; app["deploy"] says why), "superseded" (a newer
    release took over), "queued" (behind the rollout under way) or "rolling".
    The rules `paas deploy` waits by."""
    deploy, r = app.get("deploy") or {}, app["rollout"]
    mine = deploy.get("release") == number
    if mine and deploy.get("phase") in ("rolled-back", "failed"):
        return "failed"
    if app.get("queued") and app["queued"] > number or deploy.get("release", 0) > number:
        return "superseded"
    if app.get("queued") == number:
        return "queued"
    if app["release"] == number and r["ready"] and (not mine or deploy.get("phase") == "done"):
        return "done"
    return "rolling"


def describe_replica(rep: dict[str, Any]) -> list[str]:
    """What a replica that does not serve showed, as lines for a terminal: state,
    restarts and last exit, OOM kill, error, last probe, last log lines."""
    line = f"  {rep['id']} on {rep.get('node')}: {rep.get('state')}"
    previous = rep.get("previous") or {}
    if rep.get("restarts"):
        exit_code = rep.get("exit_code") if rep.get("exit_code") is not None else previous.get("exit_code")
        line += f", {rep['restarts']} restart(s), last exit code {exit_code}"
    if rep.get("oom_killed") or previous.get("oom_killed"):
        line += ", killed for memory (OOM)"
    if rep.get("error"):
        line += f", error: {rep['error']}"
    lines = [line]
    probe = rep.get("probe")
    if probe:
        seen = f"HTTP {probe['status']}" if probe.get("status") else "no answer"
        lines.append(f"    last probe: {seen} after {probe.get('seconds', 0):.3f}s: "
                     f"{str(probe.get('detail', ''))[:200]}")
    # the lines the agent read last, or those it kept of the container that crashed before
    lines += [f"    | {log_line}" for log_line in (rep.get("logs") or previous.get("logs") or [])[-20:]]
    return lines
