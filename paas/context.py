"""Packs a build context into a reproducible tar, honouring `.dockerignore`.

The same files give the same bytes (sorted entries, zero times and owners), so
the tar's sha256 is the source hash that names the image and tells the
controller it has built this source before.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_CONTEXT_BYTES = 200 * 1024 * 1024


class ContextError(Exception):
    pass


@dataclass(frozen=True)
class PackedContext:
    file: IO[bytes]          # the tar, positioned at 0
    size: int
    source_hash: str         # sha256 hex of the tar
    files: int


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on slash paths."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
                out[-1] = "(?:.*/)?"
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                out.append(f"[{'^' + body[1:] if body.startswith('!') else body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    # a pattern that names a directory excludes everything below it too
    return re.compile("^" + "".join(out) + "(?:/.*)?$")


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
        if pattern in ("", "."):
            continue
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for negate, regex in rules:      # the last matching rule wins, as in Docker
        if regex.match(path):
            ignored = not negate
    return ignored


def pack_context(root: str | Path, dockerfile: str = "Dockerfile",
                 limit: int = MAX_CONTEXT_BYTES) -> PackedContext:
    root = Path(root).resolve()
    if not root.is_dir():
        raise ContextError(f"build context {root} is not a directory")
    ignore = root / ".dockerignore"
    rules = parse_dockerignore(ignore.read_text()) if ignore.exists() else []
    always = {dockerfile, ".dockerignore"}
    out = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    digest = hashlib.sha256()
    counted, files = 0, 0

    class _Hashing:
        def write(self, data: bytes) -> int:
            digest.update(data)
            return out.write(data)

    with tarfile.open(fileobj=_Hashing(), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(root, rules, always):
            full = root / rel
            st = full.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                counted += st.st_size
                if counted > limit:
                    raise ContextError(f"build context {root} is over {limit // (1024 * 1024)} MiB; "
                                       "leave files out with .dockerignore")
                info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
                with open(full, "rb") as f:
                    tar.addfile(info, f)
                files += 1
    size = out.tell()
    out.seek(0)
    return PackedContext(file=out, size=size, source_hash=digest.hexdigest(), files=files)


def _walk(root: Path, rules: list, always: set[str]) -> list[str]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames.sort()
        # ignored directories are still walked: a `!pattern` may bring a file below them back
        for name in [*dirnames, *filenames]:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel in always or not is_ignored(rel, rules):
                paths.append(rel)
    return sorted(paths)
