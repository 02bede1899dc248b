"""The controller's HTTP API under /api/v1 (aiohttp): bearer-token auth, JSON
errors, and thin handlers over the store; the rules live in spec, reconcile
and views.
"""
from __future__ import annotations

import dataclasses
import hmac
import time
from typing import Any

from aiohttp import web

from controller.builder import Builder
from controller.reconcile import Observed, Release, plan_assignments
from controller.releases import counts_of, describe_change, downtime_problems, record_release, release_content
from controller.views import replica_rows, rollout_state
from paas import store as keys
from paas.model import AppSpec, Node
from paas.spec import SpecError, env_key_problem, parse_spec
from paas.store import Delete, Entry, Put, Store, StoreUnavailable

MAX_BODY = 1024 * 1024
STORE = web.AppKey("store", Store)
TOKEN = web.AppKey("token", str)
DOMAIN = web.AppKey("cluster_domain", str)
BUILDER = web.AppKey("builder", Builder)


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


async def _parse_deploy(request: web.Request, body: dict[str, Any], allow_unbuilt: bool = False
                        ) -> tuple[AppSpec, dict | None, dict] | web.Response:
    """The spec (and its finished build) of a deploy body, or the error response."""
    text, filename = body.get("spec"), body.get("filename", "app.yaml")
    if not isinstance(text, str):
        return error(400, "body must be JSON with a `spec` string holding the YAML")
    try:
        spec = parse_spec(text, filename)
    except SpecError as e:
        return error(422, "invalid spec", problems=[str(p) for p in e.problems])
    build = None
    if spec.build is not None:
        source = body.get("build")
        entry = await request.app[STORE].get(keys.build_key(spec.name, source)) if isinstance(source, str) else None
        if entry is None and not allow_unbuilt:
            return error(422, "invalid spec", problems=[
                f"{filename}:1: build: no finished build of this source; `paas deploy` uploads and builds it"])
        build = entry.value if entry else None
    return spec, build, body


async def deploy(request: web.Request) -> web.Response:
    """Create or replace an app from a YAML spec: a new release when image, env or
    spec changed (rolled out, or queued behind the rollout under way); only a new
    scale when just the replica counts changed."""
    parsed = await _parse_deploy(request, await request.json())
    if isinstance(parsed, web.Response):
        return parsed
    spec, build, body = parsed
    store = request.app[STORE]
    current = await store.get(keys.app_key(spec.name))
    if current is not None and not body.get("allow_downtime"):
        problems = downtime_problems(spec, counts_of(spec))
        if problems:
            return error(422, "this rollout cannot keep the app serving; deploy with --allow-downtime "
                              "to accept downtime", problems=problems)
    config = current.value.get("config", {}) if current else {}
    content = release_content(spec, build["image"] if build else spec.image, config, build)
    return await _record(store, spec.name, content, app_spec=spec, scale=counts_of(spec), note="deploy")


async def plan_deploy(request: web.Request) -> web.Response:
    """What `deploy` would do with this spec, applying nothing."""
    body = await request.json()
    build_pending = None
    if body.get("build_pending"):
        build_pending, body["build"] = body["build_pending"], None
    parsed = await _parse_deploy(request, body, allow_unbuilt=build_pending is not None)
    if isinstance(parsed, web.Response):
        return parsed
    spec, build, _ = parsed
    store = request.app[STORE]
    current = await store.get(keys.app_key(spec.name))
    old = None
    if current is not None:
        entry = await store.get(keys.release_key(spec.name, current.value.get("queued") or current.value["release"]))
        old = entry.value if entry else None
    image = build["image"] if build else spec.image or f"(built from source {str(build_pending)[:16]})"
    content = release_content(spec, image, current.value.get("config", {}) if current else {}, build)
    old_scale = {**counts_of(AppSpec.from_dict(old["spec"])), **current.value.get("scale", {})} if old else {}
    change = describe_change(old, content, old_scale, counts_of(spec))
    change["placement"] = await _placement_preview(store, spec.name, content)
    return web.json_response({"app": spec.name, **change})


async def _placement_preview(store: Store, name: str, content: dict[str, Any]) -> dict[str, Any]:
    """Where the release's replicas would go, placed from scratch beside the other apps."""
    used: dict[str, tuple[float, int]] = {}
    for a in await store.values(keys.prefix("assignments")):
        if a["app"] != name:
            cpu, memory = used.get(a["node"], (0.0, 0))
            used[a["node"]] = (cpu + a["resources"]["cpu"], memory + a["resources"]["memory"])
    nodes = {}
    for n in map(Node.from_dict, await store.values(keys.prefix("nodes"))):
        if "worker" in n.roles:    # what other apps use is not offered
            cpu, memory = used.get(n.name, (0.0, 0))
            nodes[n.name] = dataclasses.replace(n, cpu=n.cpu - cpu, memory=n.memory - memory)
    release = Release(app=name, number=0, image=content["image"], spec=AppSpec.from_dict(content["spec"]),
                      env=content["env"])
    plan = plan_assignments({name: release}, nodes, [], Observed(), time.time(), lambda: "plan")
    per_node: dict[str, list[str]] = {}
    for a in plan.create:
        per_node.setdefault(a.node, []).append(f"{a.process}.{a.index}")
    return {"nodes": per_node, "pending": plan.pending.get(name, {})}


async def _record(store: Store, name: str, content: dict[str, Any], **kwargs: Any) -> web.Response:
    for _ in range(5):
        result = await record_release(store, name, content, **kwargs)
        if result is not None:
            return web.json_response(result, status=201 if result["changed"] else 200)
    return error(409, f"app {name} is being changed concurrently; try again")


async def _app_entry(store: Store, name: str) -> Entry | web.Response:
    app = await store.get(keys.app_key(name))
    return error(404, f"no app named {name}") if app is None else app


async def _current(store: Store, name: str) -> tuple[Any, dict[str, Any]] | web.Response:
    app = await _app_entry(store, name)
    if isinstance(app, web.Response):
        return app
    release = await store.get(keys.release_key(name, app.value.get("queued") or app.value["release"]))
    if release is None:
        return error(409, f"app {name} has no release yet")
    return app, release.value


async def rollback(request: web.Request) -> web.Response:
    """A new release equal to vN (default: the newest one before the current)."""
    store, name = request.app[STORE], request.match_info["name"]
    found = await _current(store, name)
    if isinstance(found, web.Response):
        return found
    app, _ = found
    body = await request.json() if request.can_read_body else {}
    to = body.get("to")
    current = app.value["release"]
    if to is None:
        older = [r["number"] for r in await store.values(keys.prefix("releases", name)) if r["number"] < current]
        if not older:
            return error(409, f"{name} has no release before v{current} to roll back to")
        to = max(older)
    target = await store.get(keys.release_key(name, int(to))) if isinstance(to, int) else None
    if target is None:
        return error(404, f"{name} has no release v{to}")
    content = {k: target.value.get(k) for k in ("image", "env", "spec", "source", "config")}
    return await _record(store, name, content, note=f"rollback to v{to}")


async def scale(request: web.Request) -> web.Response:
    """Desired replica counts per process, stored as they are (not deltas); no restart."""
    store, name = request.app[STORE], request.match_info["name"]
    found = await _current(store, name)
    if isinstance(found, web.Response):
        return found
    app, release = found
    counts = await request.json()
    processes = release["spec"]["processes"]
    problems = [f"{p}: no such process (processes: {', '.join(sorted(processes))})"
                for p in counts if p not in processes]
    problems += [f"{p}: replicas must be an integer between 0 and 100, got {n!r}" for p, n in counts.items()
                 if p in processes and (not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100)]
    if problems:
        return error(422, "invalid scale", problems=problems)
    new_scale = {**app.value.get("scale", {}), **counts}
    if not await store.commit([Put(keys.app_key(name), {**app.value, "scale": new_scale, "updated": time.time()})],
                              expect={keys.app_key(name): app.mod_revision}):
        return error(409, f"app {name} is being changed concurrently; try again")
    return web.json_response({"app": name, "scale": new_scale})


async def get_config(request: web.Request) -> web.Response:
    store, name = request.app[STORE], request.match_info["name"]
    found = await _current(store, name)
    if isinstance(found, web.Response):
        return found
    app, release = found
    return web.json_response({"app": name, "config": app.value.get("config", {}), "env": release["env"],
                              "release": release["number"]})


async def set_config(request: web.Request) -> web.Response:
    """Set and unset config vars: a new release with the new env, rolled out."""
    store, name = request.app[STORE], request.match_info["name"]
    found = await _current(store, name)
    if isinstance(found, web.Response):
        return found
    app, release = found
    body = await request.json()
    changes, unset = body.get("set", {}), body.get("unset", [])
    problems = [p for k in [*changes, *unset] if (p := env_key_problem(k))]
    problems += [f"{k}: value must be a string without NUL, at most 32 KiB" for k, v in changes.items()
                 if not isinstance(v, str) or "\x00" in v or len(v) > 32 * 1024]
    if problems:
        return error(422, "invalid config", problems=problems)
    config = {k: v for k, v in {**app.value.get("config", {}), **changes}.items() if k not in unset}
    spec = AppSpec.from_dict(app.value["spec"])
    content = {k: release[k] for k in ("image", "spec", "source")}
    content.update(env={**spec.env, **config}, config=config)
    return await _record(store, name, content, note="config " + " ".join(
        [f"set {k}" for k in changes] + [f"unset {k}" for k in unset]))


async def list_releases(request: web.Request) -> web.Response:
    store, name = request.app[STORE], request.match_info["name"]
    app = await _app_entry(store, name)
    if isinstance(app, web.Response):
        return app
    rows = []
    for r in sorted(await store.values(keys.prefix("releases", name)), key=lambda r: r["number"], reverse=True):
        rows.append({"release": r["number"], "image": r["image"], "created": r["created"],
                     "note": r.get("note"), "outcome": r.get("outcome"), "source": r.get("source"),
                     "env_keys": sorted(r.get("env", {})), "current": r["number"] == app.value["release"],
                     "queued": r["number"] == app.value.get("queued")})
    return web.json_response(rows)


async def list_apps(request: web.Request) -> web.Response:
    store = request.app[STORE]
    apps = await store.values(keys.prefix("apps"))
    snapshot = await _snapshot(store)
    result = []
    for app in sorted(apps, key=lambda a: a["spec"]["name"]):
        result.append(await _app_summary(request, app, snapshot))
    return web.json_response(result)


async def get_app(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    app = await _app_entry(store, name)
    if isinstance(app, web.Response):
        return app
    summary = await _app_summary(request, app.value, await _snapshot(store))
    return web.json_response(summary)


async def delete_app(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    app = await _app_entry(store, name)
    if isinstance(app, web.Response):
        return app
    await store.commit([Delete(keys.app_key(name)), Delete(keys.prefix("releases", name), prefix=True),
                        Delete(keys.rollout_key(name)), Delete(keys.prefix("builds", name), prefix=True)], expect={keys.app_key(name): app.mod_revision})
    return web.json_response({"app": name, "deleted": True})


async def app_replicas_gone(request: web.Request) -> web.Response:
    """How many containers of a deleted app still run (for `paas destroy` to wait on)."""
    name = request.match_info["name"]
    snapshot = await _snapshot(request.app[STORE])
    left = [a for a in snapshot["assignments"] if a["app"] == name]
    left += [s for s in snapshot["statuses"].values() if s.get("app") == name]
    return web.json_response({"app": name, "remaining": len(left)})


async def drain_node(request: web.Request) -> web.Response:
    """Move every replica off the node, health-gated like a rolling update; `undrain` ends
    it; `forget` removes a lost node from the listing."""
    store, name = request.app[STORE], request.match_info["name"]
    known = {n["name"] for n in await store.values(keys.prefix("nodes"))}
    known |= {n["name"] for n in await store.values(keys.prefix("nodes-seen"))}
    if name not in known:
        return error(404, f"no node named {name}")
    verb = request.match_info["verb"]
    if verb == "drain":
        await store.put(keys.drain_key(name), {"node": name, "since": time.time()})
    elif verb == "undrain":
        await store.delete(keys.drain_key(name))
    else:     # forget a lost node for good (a decommissioned host)
        if await store.get(keys.node_key(name)) is not None:
            return error(409, f"{name} is alive; only a lost node can be forgotten (stop its agent first)")
        await store.commit([Delete(keys.seen_node_key(name)), Delete(keys.drain_key(name))])
    return web.json_response({"node": name, "draining": verb == "drain", "forgotten": verb == "forget"})


async def list_nodes(request: web.Request) -> web.Response:
    snapshot = await _snapshot(request.app[STORE])
    return web.json_response(_node_rows(snapshot))


async def cluster_status(request: web.Request) -> web.Response:
    store = request.app[STORE]
    revision = await store.ping()
    snapshot = await _snapshot(store)
    apps = [await _app_summary(request, a, snapshot) for a in await store.values(keys.prefix("apps"))]
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
        "seen_nodes": {n["name"]: n for n in await store.values(keys.prefix("nodes-seen"))},
        "drains": {e.key.rsplit("/", 1)[1] for e in (await store.list(keys.prefix("drains")))[0].values()},
        "assignments": await store.values(keys.prefix("assignments")),
        "statuses": statuses,
        "routers": await store.values(keys.prefix("routers")),
        "rollouts": {e.key.rsplit("/", 1)[1]: e.value
                     for e in (await store.list(keys.prefix("rollouts")))[0].values()},
        "scheduling": {e.key.rsplit("/", 1)[1]: e.value
                       for e in (await store.list(keys.prefix("scheduling")))[0].values()},
    }


async def _app_summary(request: web.Request, app: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    spec = AppSpec.from_dict(app["spec"])
    live = {n["name"] for n in snapshot["nodes"]}
    rows = replica_rows([a for a in snapshot["assignments"] if a["app"] == spec.name],
                        snapshot["statuses"], snapshot["routers"], live)
    pending = snapshot["scheduling"].get(spec.name, {}).get("pending", {})
    hosts = [f"{spec.name}.{request.app[DOMAIN]}", *spec.domains]
    release = await request.app[STORE].get(keys.release_key(spec.name, app["release"]))
    release_spec = AppSpec.from_dict(release.value["spec"]) if release else spec
    return {"app": spec.name, "release": app["release"], "queued": app.get("queued"),
            "image": release.value["image"] if release else spec.image, "hosts": hosts,
            "created": app.get("created"), "updated": app.get("updated"), "spec": app["spec"],
            "scale": app.get("scale", {}), "replicas": rows,
            "rollout": rollout_state(release_spec, app.get("scale", {}), app["release"], rows, pending),
            "deploy": snapshot["rollouts"].get(spec.name)}


def _node_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """Live nodes, and nodes seen before whose lease expired (lost)."""
    rows = []
    live = {n["name"]: n for n in snapshot["nodes"]}
    lost = {name: {**n, "cpu": 0, "memory": 0} for name, n in snapshot["seen_nodes"].items() if name not in live}
    for n in sorted([*live.values(), *lost.values()], key=lambda n: n["name"]):
        mine = [a for a in snapshot["assignments"] if a["node"] == n["name"]]
        state = "lost" if n["name"] in lost else "draining" if n["name"] in snapshot["drains"] else "ready"
        rows.append({
            "name": n["name"], "address": n["address"], "roles": n.get("roles", []), "state": state,
            "labels": n.get("labels", {}), "cpu": n["cpu"], "memory": n["memory"],
            "cpu_used": round(sum(a["resources"]["cpu"] for a in mine), 3),
            "memory_used": sum(a["resources"]["memory"] for a in mine),
            "replicas": len(mine), "agent_version": n.get("agent_version", ""),
        })
    return rows


def make_app(store: Store, token: str, builder: Builder, cluster_domain: str = "localhost") -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_BODY)
    app[STORE], app[TOKEN], app[DOMAIN], app[BUILDER] = store, token, cluster_domain, builder
    app.add_routes([
        web.get("/api/v1/health", health),
        web.post("/api/v1/apps", deploy),
        web.post("/api/v1/plan", plan_deploy),
        web.get("/api/v1/apps", list_apps),
        web.get("/api/v1/apps/{name}", get_app),
        web.delete("/api/v1/apps/{name}", delete_app),
        web.get("/api/v1/apps/{name}/remaining", app_replicas_gone),
        web.post("/api/v1/apps/{name}/rollback", rollback),
        web.post("/api/v1/apps/{name}/scale", scale),
        web.get("/api/v1/apps/{name}/config", get_config),
        web.post("/api/v1/apps/{name}/config", set_config),
        web.get("/api/v1/apps/{name}/releases", list_releases),
        web.get("/api/v1/nodes", list_nodes),
        web.post("/api/v1/nodes/{name}/{verb:drain|undrain|forget}", drain_node),
        web.get("/api/v1/status", cluster_status),
    ])
    # here, not at the top: these modules import this one
    from controller.builds_api import add_build_routes
    from controller.keys_api import add_key_routes
    add_build_routes(app)
    add_key_routes(app)
    return app
