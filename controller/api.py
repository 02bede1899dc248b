"""The controller's HTTP API under /api/v1 (aiohttp): bearer-token auth, JSON
errors, and thin handlers over the store; the rules live in spec, reconcile
and views.
"""
from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web

from controller.views import replica_rows, rollout_state
from paas import store as keys
from paas.model import AppSpec
from paas.spec import SpecError, parse_spec
from paas.store import Delete, Put, Store, StoreUnavailable

MAX_BODY = 1024 * 1024
STORE = web.AppKey("store", Store)
TOKEN = web.AppKey("token", str)
DOMAIN = web.AppKey("cluster_domain", str)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_and_auth(request: web.Request, handler):
    if request.path != "/api/v1/health":
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {request.app[TOKEN]}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return error(401, "missing or wrong API token (paas keeps it in $PAAS_HOME/token)")
    try:
        return await handler(request)
    except StoreUnavailable as e:
        return error(503, str(e))
    except web.HTTPException as e:
        if e.status >= 400:
            return error(e.status, e.reason)
        raise


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def deploy(request: web.Request) -> web.Response:
    """Create or replace an app from a YAML spec; a new release when anything changed."""
    body = await request.json()
    text, filename = body.get("spec"), body.get("filename", "app.yaml")
    if not isinstance(text, str):
        return error(400, "body must be JSON with a `spec` string holding the YAML")
    try:
        spec = parse_spec(text, filename)
    except SpecError as e:
        return error(422, "invalid spec", problems=[str(p) for p in e.problems])
    if spec.build is not None:
        return error(422, "invalid spec", problems=[f"{filename}:1: build: building images is not "
                                                     "supported by this controller yet; use `image:`"])
    store = request.app[STORE]
    for _ in range(5):
        result = await _create_release(store, spec)
        if result is not None:
            return web.json_response(result, status=201 if result["changed"] else 200)
    return error(409, f"app {spec.name} is being changed concurrently; try again")


async def _create_release(store: Store, spec: AppSpec) -> dict[str, Any] | None:
    current = await store.get(keys.app_key(spec.name))
    image, env = spec.image, dict(spec.env)
    if current is not None:
        number = current.value["release"]
        release = await store.get(keys.release_key(spec.name, number))
        if release is not None and release.value["spec"] == spec.to_dict() and release.value["image"] == image:
            return {"app": spec.name, "release": number, "changed": False}
        number += 1
    else:
        number = 1
    now = time.time()
    release_value = {"number": number, "image": image, "env": env, "spec": spec.to_dict(), "created": now}
    app_value = {"spec": spec.to_dict(), "release": number,
                 "created": current.value["created"] if current else now, "updated": now}
    ok = await store.commit(
        [Put(keys.release_key(spec.name, number), release_value), Put(keys.app_key(spec.name), app_value)],
        expect={keys.app_key(spec.name): current.mod_revision if current else 0})
    return {"app": spec.name, "release": number, "changed": True} if ok else None


async def list_apps(request: web.Request) -> web.Response:
    store = request.app[STORE]
    apps = await store.values(keys.prefix("apps"))
    snapshot = await _snapshot(store)
    result = []
    for app in sorted(apps, key=lambda a: a["spec"]["name"]):
        result.append(_app_summary(request, app, snapshot))
    return web.json_response(result)


async def get_app(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    app = await store.get(keys.app_key(name))
    if app is None:
        return error(404, f"no app named {name}")
    summary = _app_summary(request, app.value, await _snapshot(store))
    return web.json_response(summary)


async def delete_app(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    app = await store.get(keys.app_key(name))
    if app is None:
        return error(404, f"no app named {name}")
    await store.commit([Delete(keys.app_key(name)), Delete(keys.prefix("releases", name), prefix=True),
                        Delete(keys.rollout_key(name))], expect={keys.app_key(name): app.mod_revision})
    return web.json_response({"app": name, "deleted": True})


async def app_replicas_gone(request: web.Request) -> web.Response:
    """How many containers of a deleted app still run (for `paas destroy` to wait on)."""
    name = request.match_info["name"]
    snapshot = await _snapshot(request.app[STORE])
    left = [a for a in snapshot["assignments"] if a["app"] == name]
    left += [s for s in snapshot["statuses"].values() if s.get("app") == name]
    return web.json_response({"app": name, "remaining": len(left)})


async def list_nodes(request: web.Request) -> web.Response:
    snapshot = await _snapshot(request.app[STORE])
    return web.json_response(_node_rows(snapshot))


async def cluster_status(request: web.Request) -> web.Response:
    store = request.app[STORE]
    revision = await store.ping()
    snapshot = await _snapshot(store)
    apps = [_app_summary(request, a, snapshot) for a in await store.values(keys.prefix("apps"))]
    leader = await store.get(f"{keys.PREFIX}/leader")
    return web.json_response({
        "etcd": {"endpoints": store.describe(), "revision": revision},
        "leader": leader.value.get("id") if leader else None,
        "nodes": _node_rows(snapshot),
        "routers": [r["node"] for r in snapshot["routers"]],
        "apps": [{"app": a["app"], "release": a["release"], **a["rollout"]} for a in apps],
    })


async def _snapshot(store: Store) -> dict[str, Any]:
    nodes = await store.values(keys.prefix("nodes"))
    statuses = {s["id"]: s for s in await store.values(keys.prefix("status"))}
    return {
        "nodes": nodes,
        "assignments": await store.values(keys.prefix("assignments")),
        "statuses": statuses,
        "routers": await store.values(keys.prefix("routers")),
        "scheduling": {e.key.rsplit("/", 1)[1]: e.value
                       for e in (await store.list(keys.prefix("scheduling")))[0].values()},
    }


def _app_summary(request: web.Request, app: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    spec = AppSpec.from_dict(app["spec"])
    live = {n["name"] for n in snapshot["nodes"]}
    rows = replica_rows([a for a in snapshot["assignments"] if a["app"] == spec.name],
                        snapshot["statuses"], snapshot["routers"], live)
    pending = snapshot["scheduling"].get(spec.name, {}).get("pending", {})
    hosts = [f"{spec.name}.{request.app[DOMAIN]}", *spec.domains]
    return {"app": spec.name, "release": app["release"], "image": spec.image, "hosts": hosts,
            "created": app.get("created"), "updated": app.get("updated"), "spec": app["spec"],
            "replicas": rows, "rollout": rollout_state(spec, app["release"], rows, pending)}


def _node_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n in sorted(snapshot["nodes"], key=lambda n: n["name"]):
        mine = [a for a in snapshot["assignments"] if a["node"] == n["name"]]
        rows.append({
            "name": n["name"], "address": n["address"], "roles": n.get("roles", []), "state": "ready",
            "labels": n.get("labels", {}), "cpu": n["cpu"], "memory": n["memory"],
            "cpu_used": round(sum(a["resources"]["cpu"] for a in mine), 3),
            "memory_used": sum(a["resources"]["memory"] for a in mine),
            "replicas": len(mine), "agent_version": n.get("agent_version", ""),
        })
    return rows


def make_app(store: Store, token: str, cluster_domain: str = "localhost") -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_BODY)
    app[STORE], app[TOKEN], app[DOMAIN] = store, token, cluster_domain
    app.add_routes([
        web.get("/api/v1/health", health),
        web.post("/api/v1/apps", deploy),
        web.get("/api/v1/apps", list_apps),
        web.get("/api/v1/apps/{name}", get_app),
        web.delete("/api/v1/apps/{name}", delete_app),
        web.get("/api/v1/apps/{name}/remaining", app_replicas_gone),
        web.get("/api/v1/nodes", list_nodes),
        web.get("/api/v1/status", cluster_status),
    ])
    return app
