"""SSH keys: the ones allowed to `git push` (GET, POST and DELETE /api/v1/keys), and
the git server's own host key (a file, made once, so known_hosts stays valid).

Each key lives in etcd under /paas/keys/<fingerprint> (SHA256, as `ssh-keygen -l`
prints it) as {"name", "key" (one OpenSSH line), "fingerprint", "type", "added"}.
The git server looks keys up there by fingerprint when a client authenticates.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from controller.api import STORE
from paas import store as keys
from paas.store import Delete, Put, Store

MAX_KEY_BYTES = 16 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_NAME_HINT = "1-64 characters of A-Z, a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit"


def key_key(fingerprint: str) -> str:
    return f"{keys.PREFIX}/keys/{fingerprint}"


async def find_key(store: Store, key: asyncssh.SSHKey) -> dict[str, Any] | None:
    """The stored entry of a public key, None when it is not allowed to push."""
    entry = await store.get(key_key(key.get_fingerprint("sha256")))
    return entry.value if entry else None


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key, made on first start and kept, so known_hosts stays valid."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        asyncssh.generate_private_key("ssh-ed25519", comment="paas git server").write_private_key(tmp)
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return asyncssh.read_private_key(path)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def parse_key(text: Any, name: Any) -> tuple[asyncssh.SSHKey, str] | str:
    """The public key of one OpenSSH line and the name it goes by, or what is wrong."""
    if not isinstance(text, str) or not text.strip():
        return "body must be JSON with `key`: one public key line, as in ~/.ssh/id_ed25519.pub"
    text = text.strip()
    if "PRIVATE KEY" in text:
        return "that is a private key; give the public one (the .pub file)"
    if len(text) > MAX_KEY_BYTES or "\n" in text or "\r" in text:
        return "`key` must be one line of an OpenSSH public key file (at most 16 KiB)"
    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError) as e:
        return f"not an OpenSSH public key: {e}"
    if name is None or name == "":
        comment = key.get_comment() or ""
        name = comment if _NAME.match(comment) else "key-" + hashlib.sha256(key.public_data).hexdigest()[:8]
    if not isinstance(name, str) or not _NAME.match(name):
        return f"invalid key name {name!r}: {_NAME_HINT}"
    return key, name


async def list_keys(request: web.Request) -> web.Response:
    rows = await request.app[STORE].values(keys.prefix("keys"))
    return web.json_response(sorted(rows, key=lambda k: k["name"]))


async def add_key(request: web.Request) -> web.Response:
    store: Store = request.app[STORE]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "body must be JSON: {\"key\": \"ssh-ed25519 AAAA... comment\", \"name\": \"alice\"}")
    parsed = parse_key(body.get("key"), body.get("name"))
    if isinstance(parsed, str):
        return _error(400, parsed)
    key, name = parsed
    fingerprint = key.get_fingerprint("sha256")
    existing, _ = await store.list(keys.prefix("keys"))
    for entry in existing.values():
        if entry.value["fingerprint"] == fingerprint:
            return _error(409, f"this key ({fingerprint}) is already added as {entry.value['name']}")
        if entry.value["name"] == name:
            return _error(409, f"a key named {name} exists already; choose another name (--name)")
    value = {"name": name, "fingerprint": fingerprint, "type": key.get_algorithm(),
             "key": key.export_public_key("openssh").decode().strip(), "added": time.time()}
    if not await store.commit([Put(key_key(fingerprint), value)], expect={key_key(fingerprint): 0}):
        return _error(409, "the key was added concurrently; try again")
    return web.json_response(value, status=201)


async def remove_key(request: web.Request) -> web.Response:
    """Remove a key by name (or by fingerprint)."""
    store: Store = request.app[STORE]
    wanted = request.match_info["name"]
    existing, _ = await store.list(keys.prefix("keys"))
    for entry in existing.values():
        if wanted in (entry.value["name"], entry.value["fingerprint"]):
            await store.commit([Delete(entry.key)], expect={entry.key: entry.mod_revision})
            return web.json_response({**entry.value, "removed": True})
    return _error(404, f"no key named {wanted} (see `paas keys`)")


def add_key_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/api/v1/keys", list_keys),
        web.post("/api/v1/keys", add_key),
        web.delete("/api/v1/keys/{name:.+}", remove_key),
    ])
