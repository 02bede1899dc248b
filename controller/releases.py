"""Releases: what a deploy, a rollback or a config change records in etcd.

A release is image + env + spec (its replica counts aside: scaling makes no
release and restarts nothing). A new release starts a rollout at once, or is
queued behind the rollout under way; a newer queued release supersedes an
older queued one.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from controller import rollout as ro
from paas import store as keys
from paas.model import AppSpec
from paas.store import Put, Store


def release_content(spec: AppSpec, image: str, config: Mapping[str, str],
                    build: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """image, env and spec of a release; processes without a command take the Procfile's."""
    spec_value = spec.to_dict()
    for name, process in spec_value["processes"].items():
        if process["command"] is None and build and name in build.get("procfile", {}):
            process["command"] = ["sh", "-c", build["procfile"][name]]
    return {"image": image, "env": {**spec.env, **config}, "config": dict(config), "spec": spec_value,
            "source": build["source"] if build else None}


def _without_counts(spec_value: Mapping[str, Any]) -> dict[str, Any]:
    processes = {n: {k: v for k, v in p.items() if k != "replicas"} for n, p in spec_value["processes"].items()}
    return {**spec_value, "processes": processes}


def same_content(release: Mapping[str, Any], content: Mapping[str, Any]) -> bool:
    return (release["image"] == content["image"] and release.get("env", {}) == content["env"]
            and _without_counts(release["spec"]) == _without_counts(content["spec"]))


def counts_of(spec: AppSpec) -> dict[str, int]:
    return {name: p.replicas for name, p in spec.processes.items()}


def downtime_problems(spec: AppSpec, scale: Mapping[str, int]) -> list[str]:
    """Routed processes whose rollout would leave no replica serving."""
    problems = []
    r = spec.rollout
    for name, p in sorted(spec.processes.items()):
        count = scale.get(name, p.replicas)
        if p.port is not None and count >= 1 and r.max_surge == 0 and r.max_unavailable >= count:
            problems.append(f"processes.{name}: {count} replica(s) with rollout max_surge 0 and "
                            f"max_unavailable {r.max_unavailable} stops every replica at once")
    return problems


def describe_change(old: Mapping[str, Any] | None, content: Mapping[str, Any], old_scale: Mapping[str, int],
                    new_scale: Mapping[str, int]) -> dict[str, Any]:
    """What a deploy would change, for `paas deploy --plan` (env values are not shown:
    they may be secrets)."""
    old_env = old.get("env", {}) if old else {}
    env = content["env"]
    spec = AppSpec.from_dict(content["spec"])
    processes = sorted(set(old_scale) | set(new_scale))
    change = {
        "new_app": old is None,
        "image": {"from": old["image"] if old else None, "to": content["image"]},
        "env": {"added": sorted(set(env) - set(old_env)), "removed": sorted(set(old_env) - set(env)),
                "changed": sorted(k for k in set(env) & set(old_env) if env[k] != old_env[k])},
        "replicas": {p: {"from": old_scale.get(p, 0), "to": new_scale.get(p, 0)} for p in processes},
        "new_release": old is None or not same_content(old, content),
        "rollout": {"max_surge": spec.rollout.max_surge, "max_unavailable": spec.rollout.max_unavailable},
        "downtime": downtime_problems(spec, new_scale) if old else [],
    }
    if change["new_app"]:
        change["strategy"] = "create: start every replica"
    elif change["new_release"]:
        change["strategy"] = (f"rolling update: at most {spec.rollout.max_surge} extra and "
                              f"{spec.rollout.max_unavailable} unavailable replica(s) at a time; each old "
                              "replica leaves the router, drains, then stops")
    elif old_scale != new_scale:
        change["strategy"] = "scale only: no new release, running replicas are not restarted"
    else:
        change["strategy"] = "no change"
    return change


async def record_release(store: Store, name: str, content: dict[str, Any], *, app_spec: AppSpec | None = None,
                         scale: Mapping[str, int] | None = None, note: str | None = None
                         ) -> dict[str, Any] | None:
    """Record a release (or only a new scale when the content is unchanged).
    None when another writer changed the app meanwhile: the caller tries again."""
    app_entry = await store.get(keys.app_key(name))
    rollout_entry = await store.get(keys.rollout_key(name))
    app = dict(app_entry.value) if app_entry else {}
    now = time.time()
    expect = {keys.app_key(name): app_entry.mod_revision if app_entry else 0,
              keys.rollout_key(name): rollout_entry.mod_revision if rollout_entry else 0}
    target = app.get("queued") or app.get("release")
    if target:
        latest = await store.get(keys.release_key(name, target))
        if latest is not None and same_content(latest.value, content):
            new_scale = {**app.get("scale", {}), **(scale or {})}
            changed_scale = new_scale != app.get("scale")
            if changed_scale or (app_spec is not None and app_spec.to_dict() != app.get("spec")):
                new_app = {**app, "scale": new_scale, "updated": now}
                if app_spec is not None:
                    new_app["spec"] = app_spec.to_dict()
                if not await store.commit([Put(keys.app_key(name), new_app)], expect=expect):
                    return None
            return {"app": name, "release": target, "changed": False, "scaled": changed_scale,
                    "queued": bool(app.get("queued"))}

    number = app.get("last_release", app.get("release", 0)) + 1
    rolling = ro.is_rolling(rollout_entry.value if rollout_entry else None)
    new_app = {
        "spec": (app_spec.to_dict() if app_spec else app["spec"]),
        "release": app["release"] if rolling else number,
        "queued": number if rolling else None,
        "last_release": number,
        "scale": {**app.get("scale", {}), **(scale or {})},
        # a rollback restores the config of its release too
        "config": content["config"] if content.get("config") is not None else app.get("config", {}),
        "created": app.get("created", now), "updated": now,
    }
    release_value = {**content, "app": name, "number": number, "created": now, "note": note, "outcome": None}
    ops = [Put(keys.release_key(name, number), release_value), Put(keys.app_key(name), new_app)]
    superseded = await store.get(keys.release_key(name, app["queued"])) if rolling and app.get("queued") else None
    if superseded is not None:
        ops.append(Put(superseded.key, {**superseded.value, "outcome": f"superseded by v{number} before it ran"}))
        expect[superseded.key] = superseded.mod_revision
    if not rolling:
        deadline = AppSpec.from_dict(content["spec"]).rollout.progress_deadline
        ops.append(Put(keys.rollout_key(name), ro.start_rollout(number, app.get("release"), deadline, now)))
    if not await store.commit(ops, expect=expect):
        return None
    return {"app": name, "release": number, "changed": True, "queued": rolling, "image": content["image"],
            "superseded": app.get("queued") if rolling and app.get("queued") else None}
