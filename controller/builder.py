"""The build adapter: a context tar -> `docker build` under a cpu and memory cap
-> push to the cluster registry -> the image pinned by digest.

One build per app at a time (others queue). A directory with a Procfile and no
Dockerfile gets one from a jinja2 template. Docker's errors become
`BuildFailed` (with the failing step and the last log lines) or
`RegistryUnavailable`.
"""
from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiodocker
import aiodocker.exceptions
import aiohttp
import jinja2

Emit = Callable[[dict[str, Any]], Awaitable[None]]
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                                autoescape=False, undefined=jinja2.StrictUndefined)
_PROCFILE_LINE = re.compile(r"^([a-z][a-z0-9-]{0,19}):\s*(.+)$")
LOG_TAIL = 20


class BuildFailed(Exception):
    def __init__(self, message: str, step: str | None, log_tail: list[str]):
        super().__init__(message)
        self.step, self.log_tail = step, log_tail


class RegistryUnavailable(Exception):
    pass


@dataclass(frozen=True)
class BuiltImage:
    image: str          # <registry>/<app>@sha256:...
    tag: str            # <registry>/<app>:<source-hash>
    digest: str
    size: int
    procfile: dict[str, str]


def parse_procfile(text: str) -> dict[str, str]:
    processes = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _PROCFILE_LINE.match(line)
        if m is None:
            raise BuildFailed(f"Procfile: cannot read line {line!r} (expected `name: command`)", None, [])
        processes[m.group(1)] = m.group(2).strip()
    return processes


def _has_requirements(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


def prepare_context(context: IO[bytes], dockerfile: str, base_image: str) -> tuple[IO[bytes], dict[str, str]]:
    """The context as Docker gets it: unchanged when it has the Dockerfile, else with
    one rendered from its Procfile. Returns the tar and the Procfile's processes."""
    context.seek(0)
    with tarfile.open(fileobj=context, mode="r:") as tar:
        names = set(tar.getnames())
        procfile = parse_procfile(tar.extractfile("Procfile").read().decode()) if "Procfile" in names else {}
        requirements = tar.extractfile("requirements.txt").read().decode() \
            if "requirements.txt" in names else ""
    context.seek(0)
    if dockerfile in names:
        return context, procfile
    if not procfile:
        raise BuildFailed(f"the context has no {dockerfile} and no Procfile to make one from", None, [])
    text = _TEMPLATES.get_template("Dockerfile.procfile.j2").render(
        base_image=base_image, requirements=_has_requirements(requirements),
        web=procfile.get("web") or next(iter(procfile.values())))
    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    with tarfile.open(fileobj=context, mode="r:") as src, tarfile.open(fileobj=out, mode="w:") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(dockerfile)
        info.size = len(text.encode())
        dst.addfile(info, io.BytesIO(text.encode()))
    out.seek(0)
    return out, procfile


class Builder:
    def __init__(self, registry: str, memory: int = 2 * 1024**3, cpus: float = 1.0,
                 procfile_base: str | None = None, docker_url: str | None = None):
        self.registry, self.memory, self.cpus = registry, memory, cpus
        self.procfile_base = procfile_base or f"{registry}/paas/python:3"
        self.docker_url = docker_url
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, app: str) -> asyncio.Lock:
        return self._locks.setdefault(app, asyncio.Lock())

    async def build(self, app: str, source_hash: str, context: IO[bytes], dockerfile: str,
                    emit: Emit, on: tuple[str, str] | None = None) -> BuiltImage:
        """`on`: (node name, Docker URL) of a node labelled builder=true; else this host's Docker."""
        tag = f"{self.registry}/{app}:{source_hash[:16]}"
        lock = self.lock(app)
        if lock.locked():
            await emit({"status": f"queued behind another build of {app}"})
        async with lock:
            context, procfile = prepare_context(context, dockerfile, self.procfile_base)
            if on is not None:
                await emit({"status": f"building on {on[0]} (labelled builder)"})
            docker = aiodocker.Docker(url=on[1] if on else self.docker_url)
            try:
                await self._docker_build(docker, app, source_hash, tag, context, dockerfile, emit)
                digest = await self._push(docker, tag, emit)
                size = (await docker.images.inspect(tag)).get("Size", 0)
            except (aiohttp.ClientConnectionError, FileNotFoundError) as e:
                raise BuildFailed(f"dockerd on the controller's host is not reachable ({e})", None, []) from e
            finally:
                await docker.close()
        return BuiltImage(image=f"{self.registry}/{app}@{digest}", tag=tag, digest=digest, size=size,
                          procfile=procfile)

    async def _docker_build(self, docker: aiodocker.Docker, app: str, source_hash: str, tag: str,
                            context: IO[bytes], dockerfile: str, emit: Emit) -> None:
        params = {
            "t": tag, "dockerfile": dockerfile, "rm": "1", "forcerm": "1",
            "buildargs": json.dumps({"PAAS_REGISTRY": self.registry}),
            "labels": json.dumps({"paas.app": app, "paas.source": source_hash}),
            # a heavy build must not starve the replicas serving on this host
            "memory": str(self.memory), "memswap": str(self.memory),
            "cpuperiod": "100000", "cpuquota": str(int(self.cpus * 100000)),
        }
        step, tail = None, []
        cm = docker._query("build", "POST", params=params, data=context.read(),
                           headers={"content-type": "application/x-tar"},
                           timeout=docker._resolve_long_running_timeout(None))
        try:
            async for chunk in docker.images._handle_response(cm, True):
                if "error" in chunk:
                    raise BuildFailed(chunk["error"].strip(), step, tail[-LOG_TAIL:])
                for line in filter(str.strip, chunk.get("stream", "").splitlines()):
                    if line.startswith("Step "):
                        step = line.strip()
                        await emit({"step": step})
                    tail.append(line)
                    await emit({"log": line})
        except aiodocker.exceptions.DockerError as e:
            raise BuildFailed(e.message, step, tail[-LOG_TAIL:]) from e

    async def _push(self, docker: aiodocker.Docker, tag: str, emit: Emit) -> str:
        await emit({"status": f"pushing {tag}"})
        name, _, version = tag.rpartition(":")
        digest = None
        try:
            async for chunk in docker.images.push(name, tag=version, stream=True):
                if "error" in chunk:
                    raise RegistryUnavailable(f"registry {self.registry}: {chunk['error']}")
                aux = chunk.get("aux") or {}
                digest = aux.get("Digest", digest)
                if chunk.get("status") in ("Pushed", "Layer already exists", "Mounted from"):
                    await emit({"progress": f"{chunk.get('id', '')} {chunk['status'].lower()}"})
        except aiodocker.exceptions.DockerError as e:
            raise RegistryUnavailable(f"registry {self.registry} is not reachable: {e.message}") from e
        if digest is None:
            raise RegistryUnavailable(f"registry {self.registry} did not report a digest for {tag}")
        return digest
