"""Seconds from `paas deploy` of a `build:` spec to every replica healthy and
routed, on a real local cluster:

  cold    a new app with a source never built before: pack and upload the
          context, docker build on the controller's dockerd, push to the cluster
          registry, agents pull by digest, roll out 3 web replicas. The base image
          (<registry>/paas/python:3) stays cached in dockerd: the cold part is the
          app's own layers, not Debian.
  cached  the same source again with one env var changed: a new release and a
          rollout, but no build (the CLI says "cached sha256:...").
  pack    size of the packed context and the time to pack it in-process.

Run: .venv/bin/python benchmarks/build.py [--runs N]
It starts its own cluster (`paas up`) under a temporary $PAAS_HOME with ports
of its own, and stops it at the end, removing the app images it built from
dockerd. Prints figures; asserts nothing on time.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import ROOT, LocalCluster, cluster_env, local_cluster, spread

sys.path.insert(0, str(ROOT))
from paas.context import pack_context  # noqa: E402 - needs the checkout on sys.path first

APP_PREFIX = "bbuild-"
DOCKERFILE = """\
ARG PAAS_REGISTRY
FROM ${PAAS_REGISTRY}/paas/python:3
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000
WORKDIR /app
COPY app.py run.txt ./
USER 10001
CMD ["python3", "app.py"]
"""
SPEC = """\
name: {name}
build: {{context: ., dockerfile: Dockerfile}}
processes:
  web:
    command: ["python3", "app.py"]
    replicas: 3
    port: 8000
    health: {{path: /healthz, interval: 0.25s, timeout: 0.25s}}
    resources: {{cpu: 0.1, memory: 64Mi}}
env:
  GREETING: {greeting}
"""


def make_context(directory: Path, name: str, greeting: str) -> Path:
    """A context of its own for one run: manifests/pyapp's app.py, a file whose content is
    new every run (so no layer of the app's own is cached), the Dockerfile and the spec."""
    directory.mkdir(parents=True)
    shutil.copy(ROOT / "manifests" / "pyapp" / "app.py", directory / "app.py")
    (directory / "run.txt").write_text(f"{uuid.uuid4()}\n")
    (directory / "Dockerfile").write_text(DOCKERFILE)
    (directory / ".dockerignore").write_text("app.yaml\n")
    return write_spec(directory, name, greeting)


def write_spec(directory: Path, name: str, greeting: str) -> Path:
    spec = directory / "app.yaml"
    spec.write_text(SPEC.format(name=name, greeting=greeting))
    return spec


def timed_deploy(cluster: LocalCluster, spec: Path) -> tuple[float, dict[str, float], str]:
    """Run `paas deploy SPEC`; seconds to healthy+routed, seconds at which some CLI
    messages appeared (built and pushed, release recorded), and its stderr."""
    marks = {"built and pushed": "built+pushed", ": release v": "release recorded"}
    seen: dict[str, float] = {}
    lines = []
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "paas.cli", "deploy", str(spec), "--timeout", "300"],
                            cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:
            lines.append(line)
            for needle, label in marks.items():
                if needle in line and label not in seen:
                    seen[label] = time.monotonic() - t0
        proc.stdout.read()
        code = proc.wait(timeout=330)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    err = "".join(lines)
    if code != 0:
        sys.exit(f"deploy of {spec} failed (exit {code}):\n{err}\n{cluster.logs_tail()}")
    return elapsed, seen, err


def check_served(cluster: LocalCluster, name: str, greeting: str) -> None:
    status, body = cluster.get(f"{name}.localhost")
    if status != 200 or f"GREETING={greeting}" not in body:
        sys.exit(f"{name}.localhost through the router answered {status}: {body!r}, expected GREETING={greeting}")


def pack_figures(context: Path, repeat: int = 20) -> tuple[int, int, list[float]]:
    times, packed = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        packed = pack_context(context, "Dockerfile")
        times.append(time.perf_counter() - t0)
        packed.file.close()
    return packed.size, packed.files, times


def remove_app_images(registry: str) -> int:
    """Best effort: the images this benchmark built or pulled (only `<registry>/bbuild-*`)."""
    refs = subprocess.run(["docker", "images", "--filter", f"reference={registry}/{APP_PREFIX}*",
                           "--format", "{{.ID}}"], capture_output=True, text=True).stdout.split()
    ids = sorted(set(refs))
    if ids:
        subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True)
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="cold + cached deploy pairs, each with a new app")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    registry = cluster_env("bench-build", 2)["PAAS_REGISTRY"]
    cold, cached, built_at, recorded, pack_sizes, pack_times, files = [], [], [], [], [], [], 0
    try:
        with local_cluster("bench-build", port_offset=2) as cluster:
            for run in range(args.runs):
                name = f"{APP_PREFIX}{tag}-{run}"
                context = cluster.home / name
                spec = make_context(context, name, "cold")
                size, files, times = pack_figures(context)
                pack_sizes.append(size)
                pack_times.extend(times)

                elapsed, marks, err = timed_deploy(cluster, spec)
                if "built and pushed" not in err or "Step " not in err:
                    sys.exit(f"the cold deploy of {name} did not build:\n{err}")
                check_served(cluster, name, "cold")
                cold.append(elapsed)
                built_at.append(marks.get("built+pushed", float("nan")))

                write_spec(context, name, "cached")      # same source, one env var changed
                elapsed, marks, err = timed_deploy(cluster, spec)
                if "cached sha256:" not in err or "Step " in err or "release v2" not in err:
                    sys.exit(f"the second deploy of {name} was not a cache hit with a new release:\n{err}")
                check_served(cluster, name, "cached")
                cached.append(elapsed)
                recorded.append(marks.get("release recorded", float("nan")))
                cluster.paas_ok("destroy", name)
                print(f"run {run + 1}/{args.runs}: cold {cold[-1]:.2f} s (built+pushed at "
                      f"{built_at[-1]:.2f} s), cached {cached[-1]:.2f} s", flush=True)
    finally:
        removed = remove_app_images(registry)      # after `paas down`: no container uses them any more

    print(f"context: {files} files, {statistics.median(pack_sizes) / 1024:.1f} KiB packed; pack time "
          f"{spread([t * 1000 for t in pack_times], 'ms', 3).replace('runs', 'packs')}")
    print(f"cold deploy, new app + new source, 3 replicas to healthy+routed (base image "
          f"{registry}/paas/python:3 cached in dockerd): {spread(cold)}")
    print(f"  of which pack + upload + build + push ('built and pushed' printed at): {spread(built_at)}")
    print(f"cached deploy, same source + changed env var (new release, no build) to healthy+routed: "
          f"{spread(cached)}")
    print(f"  of which cache look-up + release recorded ('release v2' printed at): {spread(recorded)}; the rest "
          "is the rolling update of 3 replicas (max_surge 1, max_unavailable 0, default drain 5s)")
    print(f"removed {removed} leftover app image(s) {registry}/{APP_PREFIX}* from dockerd "
          "(the agents' image clean-up usually gets there first)")


if __name__ == "__main__":
    main()
