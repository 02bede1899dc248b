"""The base images: the busybox rootfs tar (fast, no Docker) and the Debian + python3 image
(real Docker; debootstrap runs once per machine, then the local tag paas/python:3 is reused)."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest

from paas import baseimage


def test_busybox_rootfs_tar_has_busybox_and_applet_links():
    with tarfile.open(fileobj=io.BytesIO(baseimage.rootfs_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        busybox = members["bin/busybox"]
        assert busybox.isfile() and busybox.mode & 0o111 and busybox.size == os.path.getsize(baseimage.BUSYBOX)
        for applet in ("sh", "httpd", "ls", "cat"):
            link = members[f"bin/{applet}"]
            assert link.issym() and link.linkname == "busybox", applet
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
        assert b"nobody" in tar.extractfile("etc/passwd").read()


def test_debian_mirror_from_apt_sources(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\n# http://snapshot.example/\nURIs: http://security.example/debian-security\n"
                       "Suites: bookworm-security\nComponents: main\n\n"
                       "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert baseimage.debian_mirror([str(sources)]) == "http://mirror.example/debian"
    listing = tmp_path / "sources.list"
    listing.write_text("# deb http://old.example/debian bookworm main\n"
                       "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert baseimage.debian_mirror([str(listing)]) == "http://one.example/debian"
    assert baseimage.debian_mirror([str(tmp_path / "missing")]) == baseimage.DEFAULT_MIRROR


def test_python_base_image_runs_python(cluster):
    # the cluster fixture is here for the Docker Engine it starts when none runs
    # First run on a machine: debootstrap bookworm (about a minute with a fast mirror); later: cached.
    tag = baseimage.import_python_base_image()
    assert tag == baseimage.PYTHON_LOCAL_TAG == "paas/python:3"
    run = subprocess.run(["docker", "run", "--rm", tag, "python3", "-c", "print(1+1)"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "2"
    # The web app's imports work and the image speaks UTF-8.
    run = subprocess.run(["docker", "run", "--rm", tag, "python3", "-c",
                          "import http.server, locale; print(locale.getpreferredencoding())"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "UTF-8", run.stderr


def test_python_base_image_ref():
    assert baseimage.python_base_image_ref("127.0.0.1:5000") == "127.0.0.1:5000/paas/python:3"


def test_debootstrap_failure_reports_its_output(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(baseimage.BaseImageError, match=r"(?s)debootstrap bookworm failed.*127\.0\.0\.1:9"):
        baseimage.build_debian_rootfs(str(root), mirror="http://127.0.0.1:9/debian")   # nothing listens there
