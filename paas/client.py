"""The controller API client the CLI uses: one method per call, errors as
`ApiError` with the controller's own message (and spec problems, if any)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                payload = json.loads(e.read())
            except ValueError:
                payload = {"error": e.reason}
            raise ApiError(e.code, payload.get("error", str(e.reason)), payload.get("problems")) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ApiError(0, f"the controller is not reachable at {self.url} ({reason}); "
                              "start the cluster with `paas up`") from None

    def deploy(self, spec_text: str, filename: str) -> dict[str, Any]:
        return self._call("POST", "/apps", {"spec": spec_text, "filename": filename})

    def apps(self) -> list[dict[str, Any]]:
        return self._call("GET", "/apps")

    def app(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/apps/{name}")

    def destroy(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/apps/{name}")

    def remaining(self, name: str) -> int:
        return self._call("GET", f"/apps/{name}/remaining")["remaining"]

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/nodes")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")
