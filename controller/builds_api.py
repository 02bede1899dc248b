"""Build routes of the API: upload a context and stream its build back, look up a
finished build by source hash, list an app's images."""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from typing import Any

from aiohttp import web

from controller.api import BUILDER, STORE, error
from controller.builder import BuildFailed, RegistryUnavailable
from paas import store as keys
from paas.store import Store

MAX_CONTEXT = 200 * 1024 * 1024 + 16 * 1024 * 1024     # the CLI's limit on file bytes, plus tar headers
_SOURCE_HASH = re.compile(r"^[0-9a-f]{64}$")
_APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_DOCKERFILE = re.compile(r"^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/-]{1,200}$")


async def get_build(request: web.Request) -> web.Response:
    name, source = request.match_info["name"], request.match_info["source"]
    entry = await request.app[STORE].get(keys.build_key(name, source))
    if entry is None:
        return error(404, f"no build of {name} from source {source[:16]}")
    return web.json_response(entry.value)


async def post_build(request: web.Request) -> web.StreamResponse:
    """Build a context tar (the body) and push it; the response streams NDJSON events:
    {"step"}, {"log"}, {"status"}, {"progress"}, then {"done": build} or {"error", "step", "log_tail"}."""
    name = request.match_info["name"]
    source = request.query.get("source", "")
    dockerfile = request.query.get("dockerfile", "Dockerfile")
    if not _APP_NAME.match(name) or not _SOURCE_HASH.match(source) or not _DOCKERFILE.match(dockerfile):
        return error(400, "bad app name, source hash or dockerfile path")
    context, digest, size = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024), hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(1024 * 1024):
        size += len(chunk)
        if size > MAX_CONTEXT:
            return error(413, f"build context over {MAX_CONTEXT // 1024 // 1024} MiB")
        digest.update(chunk)
        context.write(chunk)
    if digest.hexdigest() != source:
        return error(400, "the uploaded context does not match its source hash")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)

    async def emit(event: dict[str, Any]) -> None:
        await resp.write(json.dumps(event).encode() + b"\n")

    try:
        built = await request.app[BUILDER].build(name, source, context, dockerfile, emit,
                                                 on=await builder_node(request.app[STORE]))
        record = {"source": source, "image": built.image, "tag": built.tag, "digest": built.digest,
                  "size": built.size, "procfile": built.procfile, "dockerfile": dockerfile,
                  "created": time.time()}
        await request.app[STORE].put(keys.build_key(name, source), record)
        await emit({"done": record})
    except BuildFailed as e:
        await emit({"error": str(e), "step": e.step, "log_tail": e.log_tail})
    except RegistryUnavailable as e:
        await emit({"error": str(e)})
    await resp.write_eof()
    return resp


async def list_images(request: web.Request) -> web.Response:
    """The app's built images, newest first, with the releases that run each."""
    store, name = request.app[STORE], request.match_info["name"]
    builds = await store.values(keys.prefix("builds", name))
    releases = await store.values(keys.prefix("releases", name))
    rows = []
    for b in sorted(builds, key=lambda b: b["created"], reverse=True):
        used = sorted(r["number"] for r in releases if r["image"] == b["image"])
        rows.append({"image": b["image"], "tag": b["tag"], "size": b["size"], "source": b["source"],
                     "created": b["created"], "releases": used})
    return web.json_response(rows)


async def builder_node(store: Store) -> tuple[str, str] | None:
    """The first live node labelled builder=true that says where its Docker is."""
    for node in sorted(await store.values(keys.prefix("nodes")), key=lambda n: n["name"]):
        if node.get("labels", {}).get("builder") in ("true", "yes", "1") and node.get("docker_url"):
            return node["name"], node["docker_url"]
    return None


def add_build_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/api/v1/apps/{name}/builds/{source}", get_build),
        web.post("/api/v1/apps/{name}/builds", post_build),
        web.get("/api/v1/apps/{name}/images", list_images),
    ])
