"""The base image that needs no internet: busybox-static in an otherwise empty
root filesystem, imported with `docker import` and pushed to the cluster
registry as <registry>/paas/busybox:latest.

Made by `paas base-image` (and by `paas up` when missing). Its `httpd` serves
manifests/hello.yaml and the tests.
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable

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
