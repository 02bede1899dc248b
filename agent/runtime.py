"""The Docker adapter: the only module that imports aiodocker.

Containers of this agent are found by labels (cluster, node, replica), never by
memory, so a restarted agent adopts what is already running. Docker errors
become `RuntimeUnavailable` (daemon down) or `RuntimeError_` (a call failed).
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import aiodocker
import aiodocker.exceptions
import aiohttp

from paas.model import Assignment

log = logging.getLogger(__name__)

LABEL_CLUSTER = "paas.cluster"
LABEL_NODE = "paas.node"
LABEL_APP = "paas.app"
LABEL_PROCESS = "paas.process"
LABEL_REPLICA = "paas.replica"
LABEL_RELEASE = "paas.release"
PIDS_LIMIT = 512


class RuntimeUnavailable(Exception):
    """dockerd cannot be reached."""


class RuntimeFailed(Exception):
    """Docker refused or failed one call (bad image, port clash, ...)."""


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    replica: str
    app: str
    state: str                 # created | running | exited | dead | restarting | paused
    image: str
    host_port: int | None      # the published port on the node address
    exit_code: int | None = None
    oom_killed: bool = False
    finished_at: str = ""


class DockerRuntime:
    def __init__(self, cluster: str, node: str, address: str, url: str | None = None):
        self.cluster, self.node, self.address = cluster, node, address
        self.url = url
        self._docker: aiodocker.Docker | None = None

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def _guard(self, what: str, call: Callable):
        try:
            return await call()
        except aiodocker.exceptions.DockerError as e:
            raise RuntimeFailed(f"{what}: {e.message}") from e
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionError) as e:
            await self.close()
            raise RuntimeUnavailable(
                f"dockerd is not reachable ({e}); start it with `dockerd &` or `paas up`") from e

    async def ping(self) -> None:
        await self._guard("ping", lambda: self._client().version())

    async def list_containers(self) -> list[Container]:
        filters = {"label": [f"{LABEL_CLUSTER}={self.cluster}", f"{LABEL_NODE}={self.node}"]}
        raw = await self._guard("list containers",
                                lambda: self._client().containers.list(all=True, filters=filters))
        result = []
        for c in raw:
            info = c._container
            labels = info.get("Labels") or {}
            port = next((p.get("PublicPort") for p in info.get("Ports") or []
                         if p.get("PublicPort") and p.get("IP") == self.address), None)
            exit_code, oom, finished = None, False, ""
            if info.get("State") != "running":
                detail = await self._inspect(c.id)
                if detail is None:
                    continue
                state = detail.get("State", {})
                exit_code, oom, finished = state.get("ExitCode"), state.get("OOMKilled", False), \
                    state.get("FinishedAt", "")
            result.append(Container(
                id=c.id, name=(info.get("Names") or ["?"])[0].lstrip("/"),
                replica=labels.get(LABEL_REPLICA, ""), app=labels.get(LABEL_APP, ""),
                state=info.get("State", "unknown"), image=info.get("Image", ""), host_port=port,
                exit_code=exit_code, oom_killed=oom, finished_at=finished))
        return result

    async def _inspect(self, container_id: str) -> dict | None:
        try:
            c = await self._guard("inspect", lambda: self._client().containers.get(container_id))
        except RuntimeFailed:
            return None  # removed meanwhile
        return c._container

    async def ensure_image(self, ref: str, progress: Callable[[str], None] = lambda _: None) -> None:
        """Pull the image unless this Docker Engine already has it; `progress` hears
        "pulling 2/5 layers" as layers land."""
        try:
            await self._guard("inspect image", lambda: self._client().images.inspect(ref))
            return
        except RuntimeFailed:
            pass
        log.info("pulling %s", ref)
        layers: dict[str, bool] = {}

        async def pull() -> None:
            async for event in self._client().images.pull(ref, stream=True):
                if "error" in event:
                    raise RuntimeFailed(f"pull {ref}: {event['error']}")
                layer, status = event.get("id"), event.get("status", "")
                if layer and ("Pull complete" in status or "Already exists" in status):
                    layers[layer] = True
                elif layer and status in ("Pulling fs layer", "Waiting", "Downloading"):
                    layers.setdefault(layer, False)
                if layers:
                    progress(f"pulling {sum(layers.values())}/{len(layers)} layers")
        await self._guard(f"pull {ref}", pull)

    def container_name(self, replica: str) -> str:
        return f"paas-{self.cluster}-{replica}"

    async def create_and_start(self, a: Assignment, progress: Callable[[str], None] = lambda _: None) -> str:
        await self.ensure_image(a.image, progress)
        env = {**a.env, "PAAS_APP": a.app, "PAAS_PROCESS": a.process, "PAAS_REPLICA": a.id,
               "PAAS_RELEASE": str(a.release), "PAAS_NODE": self.node}
        host_config = {
            "Memory": a.resources.memory,
            "NanoCpus": int(a.resources.cpu * 1e9),
            "PidsLimit": PIDS_LIMIT,
            "SecurityOpt": ["no-new-privileges"],
            "CapDrop": ["ALL"],
            "RestartPolicy": {"Name": "no"},   # the agent restarts, with backoff it controls
            "Init": True,                      # PID 1 that forwards SIGTERM, so stops are graceful
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "5m", "max-file": "2"}},
        }
        config = {
            "Image": a.image,
            "Env": [f"{k}={v}" for k, v in sorted(env.items())],
            "Labels": {LABEL_CLUSTER: self.cluster, LABEL_NODE: self.node, LABEL_APP: a.app,
                       LABEL_PROCESS: a.process, LABEL_REPLICA: a.id, LABEL_RELEASE: str(a.release)},
            "HostConfig": host_config,
            "StopTimeout": max(1, math.ceil(a.stop_timeout)),   # SIGTERM, then SIGKILL after this
        }
        if a.command:
            config["Cmd"] = list(a.command)
        if a.port:
            config["Env"].append(f"PORT={a.port}")
            config["ExposedPorts"] = {f"{a.port}/tcp": {}}
            host_config["PortBindings"] = {f"{a.port}/tcp": [{"HostIp": self.address, "HostPort": ""}]}
        name = self.container_name(a.id)
        container = await self._guard(f"create {name}",
                                      lambda: self._client().containers.create(config, name=name))
        await self._guard(f"start {name}", container.start)
        return container.id

    async def start(self, container_id: str) -> None:
        c = await self._guard("get", lambda: self._client().containers.get(container_id))
        await self._guard("start", c.start)

    async def remove(self, container_id: str) -> None:
        """Stop (SIGTERM, then SIGKILL after the container's own stop timeout) and remove."""
        try:
            c = await self._guard("get", lambda: self._client().containers.get(container_id))
        except RuntimeFailed:
            return  # already gone
        if c._container.get("State", {}).get("Running"):
            try:
                await self._guard("stop", c.stop)
            except RuntimeFailed as e:
                log.warning("stop %s: %s", container_id[:12], e)
        try:
            await self._guard("remove", lambda: c.delete(force=True))
        except RuntimeFailed as e:
            if "No such container" not in str(e) and "already in progress" not in str(e):
                raise

    async def list_app_images(self) -> list[dict]:
        """Images built by paas (label paas.app): id, app, repo digests, tags."""
        images = await self._guard("list images", lambda: self._client().images.list(
            filters={"label": [LABEL_APP]}))
        return [{"id": i["Id"], "app": (i.get("Labels") or {}).get(LABEL_APP, ""),
                 "digests": i.get("RepoDigests") or [], "tags": i.get("RepoTags") or []} for i in images]

    async def remove_image(self, image_id: str) -> bool:
        """Remove unless a container still uses it (Docker refuses then: never forced)."""
        try:
            await self._guard("remove image", lambda: self._client().images.delete(image_id, force=False))
            return True
        except RuntimeFailed as e:
            log.info("kept image %s: %s", image_id[:19], e)
            return False

    async def logs(self, container_id: str, tail: int = 50) -> list[str]:
        c = await self._guard("get", lambda: self._client().containers.get(container_id))
        lines = await self._guard("logs", lambda: c.log(stdout=True, stderr=True, tail=tail))
        return [line.rstrip("\n") for line in lines]


async def wait_for_docker(runtime: DockerRuntime, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await runtime.ping()
            return True
        except RuntimeUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.5)
