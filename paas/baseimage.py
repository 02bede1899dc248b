"""Base images that need no Docker Hub.

- busybox: busybox-static in an otherwise empty root filesystem, imported with
  `docker import` and pushed to the cluster registry as
  <registry>/paas/busybox:latest. Made by `paas base-image` (and by `paas up`
  when missing). Its `httpd` serves manifests/hello.yaml and the tests.
- python: Debian bookworm (minbase) + python3, made on the host with
  `debootstrap` from the Debian mirror apt already uses, imported as the local
  tag paas/python:3 (built once per machine, shared by every cluster on it) and
  pushed as <registry>/paas/python:3. Apps build `FROM` it (manifests/pyapp).
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import glob
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator

BUSYBOX = "/bin/busybox"


class BaseImageError(Exception):
    pass


def base_image_ref(registry: str) -> str:
    return f"{registry}/paas/busybox:latest"


def _docker(*args: str, data: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], input=data, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise BaseImageError(f"docker {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode().strip()


def rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """A tar of /bin/busybox, a link per applet, and the few files programs expect."""
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "www", "home", "proc", "sys", "dev", "var"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file("www/index.html", b"paas busybox base image\n")
    return buf.getvalue()


def ensure_base_image(registry: str, say: Callable[[str], None] = lambda _: None, force: bool = False) -> str:
    """Build (unless present) and push the base image; returns its reference."""
    ref = base_image_ref(registry)
    if not os.path.exists(BUSYBOX):
        raise BaseImageError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    present = subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0
    if force or not present:
        say(f"importing {ref} from {BUSYBOX}")
        _docker("import", "-c", "ENV PATH=/bin", "-c", "WORKDIR /", "-", ref, data=rootfs_tar())
    say(f"pushing {ref}")
    _docker("push", ref)
    return ref


# -- Debian + python3 -------------------------------------------------------------------------------

PYTHON_LOCAL_TAG = "paas/python:3"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_INCLUDE = ("python3-minimal", "python3")
DEBOOTSTRAP_TIMEOUT = 1800
# PATH includes the sbin directories: without them dpkg (so `apt-get install` in a Dockerfile) refuses to
# run ("'ldconfig' not found in PATH"), and useradd (in /usr/sbin) is not found.
PYTHON_IMAGE_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "ENV LANG=C.UTF-8", 'CMD ["python3"]')
_LOCK_FILE = "/var/tmp/paas-python-base.lock"
# Removed from the rootfs after debootstrap: nothing in a container needs them.
# (/usr/share/doc is stripped to each package's copyright file; /usr/lib/locale/C.utf8 stays.)
_STRIP = ("var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
          "var/log/*", "usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*", "usr/share/linda/*",
          "usr/share/locale/*", "dev/*", "tmp/*", "var/tmp/*", "etc/hostname", "etc/resolv.conf")
_KEEP = ("usr/share/locale/locale.alias",)


def python_base_image_ref(registry: str) -> str:
    return f"{registry}/paas/python:3"


def debian_mirror(paths: list[str] | None = None) -> str:
    """The Debian mirror apt uses on this host (from /etc/apt/sources.list.d/*.sources in deb822
    form, then /etc/apt/sources.list), preferring an entry for DEBIAN_SUITE; DEFAULT_MIRROR if none."""
    if paths is None:
        paths = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"] + \
            sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    found: list[tuple[str, list[str]]] = []       # (uri, suites) in file order
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        found += _deb822_entries(text) if path.endswith(".sources") else _one_line_entries(text)
    usable = [(uri.rstrip("/"), suites) for uri, suites in found
              if re.match(r"(https?|file|ftp)://", uri) and not any("security" in s for s in suites)]
    for uri, suites in usable:
        if DEBIAN_SUITE in suites:
            return uri
    return usable[0][0] if usable else DEFAULT_MIRROR


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
            if m and not line.startswith("#"):
                fields[m[1].lower()] = m[2].strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            suites = fields.get("suites", "").split()
            out += [(uri, suites) for uri in fields.get("uris", "").split()]
    return out


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()   # drop [options]
        if len(line) >= 3 and line[0] == "deb":
            out.append((line[1], [line[2]]))
    return out


def _ensure_debootstrap(say: Callable[[str], None]) -> str:
    found = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.exists(p)), None)
    if found:
        return found
    say("installing debootstrap with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise BaseImageError(f"{' '.join(cmd)} failed; install debootstrap by hand:\n{tail}")
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def _mounts_under(path: str) -> list[str]:
    """Mount points strictly inside `path`, deepest first (debootstrap mounts proc/sys in the target)."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")    # octal escapes like \040
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(path: str) -> None:
    """Unmount whatever debootstrap left mounted inside `path`, then delete it, never crossing
    into another filesystem (a leftover bind mount must not take the host's files with it)."""
    if not os.path.lexists(path):
        return
    for point in _mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise BaseImageError(f"cannot remove {path}: still mounted inside it: {', '.join(left)}")
    subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _strip_rootfs(root: str) -> None:
    if _mounts_under(root):
        raise BaseImageError(f"refusing to strip {root}: something is still mounted inside it")
    for pattern in _STRIP:
        for p in glob.glob(os.path.join(root, pattern)):
            if os.path.relpath(p, root) not in _KEEP:
                _remove(p)
    doc = os.path.join(root, "usr/share/doc")
    for pkg in os.listdir(doc) if os.path.isdir(doc) else ():
        d = os.path.join(doc, pkg)
        if os.path.isdir(d) and not os.path.islink(d):      # keep each package's copyright file only
            for name in os.listdir(d):
                if name != "copyright":
                    _remove(os.path.join(d, name))
    # dpkg must not put the stripped files back when a Dockerfile apt-get installs something.
    os.makedirs(os.path.join(root, "etc/dpkg/dpkg.cfg.d"), exist_ok=True)
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/paas-nodoc"), "w") as f:
        f.write("path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
                "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
                "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
                "path-exclude /usr/share/lintian/*\n")


def build_debian_rootfs(root: str, mirror: str | None = None, say: Callable[[str], None] = lambda _: None,
                        suite: str = DEBIAN_SUITE, include: tuple[str, ...] = DEBOOTSTRAP_INCLUDE) -> None:
    """debootstrap a minbase Debian `suite` with `include` into the empty/new directory `root`,
    then strip apt lists, caches, docs, man pages and locales. Needs root and the network to
    the mirror; takes minutes. Raises BaseImageError (with debootstrap's last lines) on failure;
    `root` is left for the caller to remove (see `_remove_tree`)."""
    debootstrap = _ensure_debootstrap(say)
    mirror = mirror or debian_mirror()
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(include)}", suite, root, mirror]
    say(f"debootstrap {suite} from {mirror} (a few minutes, once per machine)")
    tail: collections.deque[str] = collections.deque(maxlen=25)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
                            start_new_session=True)

    def kill() -> None:     # debootstrap and everything it runs in the chroot
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        kill()

    watchdog = threading.Timer(DEBOOTSTRAP_TIMEOUT, on_timeout)     # fires even if it prints nothing
    watchdog.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            stage = line.endswith("...") and len(line.split()) > 3     # not "I: Unpacking libc6..."
            if line.startswith("I: ") and (stage or "successfully" in line):
                say(f"debootstrap: {line[3:]}")           # stage lines only, not one per package
    except BaseException:
        kill()
        raise
    finally:
        watchdog.cancel()
        code = proc.wait()
    if timed_out.is_set():
        tail.append(f"(killed after {DEBOOTSTRAP_TIMEOUT}s)")
    if code != 0:
        log = os.path.join(root, "debootstrap", "debootstrap.log")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                tail.extend(["--- debootstrap.log:"] + f.read().splitlines()[-10:])
        raise BaseImageError(f"debootstrap {suite} failed (exit {code}):\n" + "\n".join(tail))
    if not os.path.exists(os.path.join(root, "usr/bin/python3")):
        raise BaseImageError(f"debootstrap finished but {root}/usr/bin/python3 is missing")
    say("stripping apt lists, caches, docs, man pages and locales")
    _strip_rootfs(root)


def _import_dir(root: str, tag: str, changes: tuple[str, ...]) -> None:
    """`tar -C root -c . | docker import -c ... - tag`, streamed."""
    if _mounts_under(root):
        raise BaseImageError(f"refusing to import {root}: something is still mounted inside it")
    tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    args = ["docker", "import"] + [a for c in changes for a in ("-c", c)] + ["-", tag]
    imp = subprocess.run(args, stdin=tar.stdout, capture_output=True, timeout=600)
    assert tar.stdout is not None and tar.stderr is not None
    tar.stdout.close()
    tar_err = tar.stderr.read().decode(errors="replace").strip()
    if tar.wait() != 0:
        raise BaseImageError(f"tar of {root} failed: {tar_err}")
    if imp.returncode != 0:
        raise BaseImageError(f"docker import: {imp.stderr.decode(errors='replace').strip()}")


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One python base image build per machine at a time (paas up, paas base-image, tests)."""
    with open(_LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _image_present(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def import_python_base_image(say: Callable[[str], None] = lambda _: None, force: bool = False,
                             mirror: str | None = None) -> str:
    """Make the local image PYTHON_LOCAL_TAG (paas/python:3) unless the Docker Engine has it
    (or `force`): debootstrap + strip + docker import. Needs no registry. Returns the tag."""
    with _machine_lock():
        if not force and _image_present(PYTHON_LOCAL_TAG):
            return PYTHON_LOCAL_TAG
        root = f"/var/tmp/paas-debootstrap-{os.getpid()}"
        _remove_tree(root)
        started = time.monotonic()
        try:
            os.makedirs(root, mode=0o755)
            build_debian_rootfs(root, mirror, say)
            say(f"importing {PYTHON_LOCAL_TAG}")
            _import_dir(root, PYTHON_LOCAL_TAG, PYTHON_IMAGE_CHANGES)
        finally:
            _remove_tree(root)
        size = int(_docker("image", "inspect", "-f", "{{.Size}}", PYTHON_LOCAL_TAG))
        say(f"built {PYTHON_LOCAL_TAG} in {time.monotonic() - started:.0f}s ({size / 1e6:.0f} MB)")
    return PYTHON_LOCAL_TAG


def ensure_python_base_image(registry: str, say: Callable[[str], None] = lambda _: None,
                             force: bool = False) -> str:
    """Build paas/python:3 locally unless present (or `force`), then tag it for `registry`
    and push it; returns <registry>/paas/python:3."""
    local = import_python_base_image(say, force)
    ref = python_base_image_ref(registry)
    _docker("tag", local, ref)
    say(f"pushing {ref}")
    _docker("push", ref)
    return ref
