"""`paas up` / `paas down`: a multi-host cluster played on one machine.

dockerd (when not running), etcd, the registry, a controller, one agent per
node address and a router, each a process of its own with a pid file and a log
under $PAAS_HOME. `up` is idempotent: what already runs is left alone.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from paas import baseimage


def paas_home() -> Path:
    return Path(os.environ.get("PAAS_HOME", Path.home() / ".paas"))


@dataclass
class ClusterConfig:
    name: str = "local"
    etcd_port: int = 2379
    api_port: int = 7070
    router_listen: str = "127.0.0.1:8080"
    registry: str = "127.0.0.1:5000"
    nodes: list[str] = field(default_factory=lambda: ["127.0.0.11", "127.0.0.12", "127.0.0.13"])
    cluster_domain: str = "localhost"
    node_memory_mib: int = 2048
    node_cpu: float = 2.0
    lease_ttl: int = 5
    git_port: int = 2222

    @property
    def etcd(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @staticmethod
    def from_env() -> ClusterConfig:
        c = ClusterConfig()
        env = os.environ
        c.name = env.get("PAAS_CLUSTER", c.name)
        c.etcd_port = int(env.get("PAAS_ETCD_PORT", c.etcd_port))
        c.api_port = int(env.get("PAAS_API_PORT", c.api_port))
        c.router_listen = env.get("PAAS_ROUTER_LISTEN", c.router_listen)
        c.registry = env.get("PAAS_REGISTRY", c.registry)
        c.git_port = int(env.get("PAAS_GIT_PORT", c.git_port))
        if env.get("PAAS_NODES"):
            c.nodes = env["PAAS_NODES"].split(",")
        return c


def config_path(home: Path) -> Path:
    return home / "cluster.json"


def load_config(home: Path) -> ClusterConfig | None:
    try:
        return ClusterConfig(**json.loads(config_path(home).read_text()))
    except FileNotFoundError:
        return None


def process_alive(pid: int) -> bool:
    """Running, and not a zombie: where nothing reaps our orphans, the dead linger as zombies."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Supervisor:
    """Starts and stops background processes, each with a pid file and a log."""

    def __init__(self, home: Path):
        self.home = home
        self.run_dir, self.log_dir = home / "run", home / "logs"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
        """Start unless running; True when it was started now."""
        if self.pid(name) is not None:
            return False
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        return True

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        pid = self.pid(name)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return True
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        return True

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))


def wait_until(what: str, check: Callable[[], bool], seconds: float, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    hint = f"; see {log_file}" if log_file else ""
    raise ClusterError(f"{what} did not come up within {seconds:g}s{hint}")


class ClusterError(Exception):
    pass


def tcp_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (OSError, ValueError):
        return False


def docker_running() -> bool:
    return subprocess.run(["docker", "version"], capture_output=True, timeout=20).returncode == 0


def up(home: Path, config: ClusterConfig, say: Callable[[str], None]) -> ClusterConfig:
    for tool in ("etcd", "nginx", "docker-registry", "dockerd", "docker"):
        if shutil.which(tool) is None:
            raise ClusterError(f"`{tool}` is not installed; run `make setup` (apt: docker.io etcd-server "
                               "nginx docker-registry busybox-static)")
    home.mkdir(parents=True, exist_ok=True)
    existing = load_config(home)
    if existing is not None:
        config = existing     # a running cluster keeps its ports and addresses
    config_path(home).write_text(json.dumps(asdict(config), indent=2))
    token_file = home / "token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
    sup = Supervisor(home)
    py = sys.executable

    if not docker_running():
        say("starting dockerd")
        sup.start("dockerd", ["dockerd"])
        wait_until("dockerd", docker_running, 60, sup.log_dir / "dockerd.log")

    say(f"etcd on {config.etcd}")
    peer = f"http://127.0.0.1:{config.etcd_port + 1}"
    sup.start("etcd", ["etcd", "--name", "paas", "--data-dir", str(home / "etcd"),
                       "--listen-client-urls", f"http://{config.etcd}",
                       "--advertise-client-urls", f"http://{config.etcd}",
                       "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                       "--initial-cluster", f"paas={peer}", "--log-level", "warn"])
    wait_until("etcd", lambda: http_ok(f"http://{config.etcd}/health"), 30, sup.log_dir / "etcd.log")

    say(f"registry on {config.registry}")
    registry_conf = home / "registry" / "config.yml"
    registry_conf.parent.mkdir(parents=True, exist_ok=True)
    registry_conf.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {home / 'registry' / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {config.registry}\n")
    sup.start("registry", ["docker-registry", "serve", str(registry_conf)])
    wait_until("registry", lambda: http_ok(f"http://{config.registry}/v2/"), 30, sup.log_dir / "registry.log")

    say("base images")
    baseimage.ensure_base_image(config.registry, say)
    baseimage.ensure_python_base_image(config.registry, say)   # debootstrap: about a minute, once per machine

    # agents first, so a controller starting up finds every node already registered
    for i, address in enumerate(config.nodes, start=1):
        say(f"agent node-{i} on {address}")
        sup.start(f"agent-node-{i}", [py, "-m", "agent", "--node", f"node-{i}", "--address", address,
                                      "--cluster", config.name, "--etcd", config.etcd,
                                      "--cpu", str(config.node_cpu), "--memory", str(config.node_memory_mib),
                                      "--ttl", str(config.lease_ttl)])
    say(f"router on {config.router_listen}")
    sup.start("router", [py, "-m", "agent", "--node", "router", "--role", "router",
                         "--address", config.router_listen.rpartition(":")[0], "--cluster", config.name,
                         "--etcd", config.etcd, "--listen", config.router_listen,
                         "--workdir", str(home / "router"), "--cluster-domain", config.cluster_domain,
                         "--ttl", str(config.lease_ttl)])
    wait_until("router", lambda: tcp_open(config.router_listen), 30, sup.log_dir / "router.log")
    say(f"controller on {config.api_url}")
    sup.start("controller", [py, "-m", "controller", "--etcd", config.etcd, "--listen", f"127.0.0.1:{config.api_port}",
                             "--token-file", str(token_file), "--cluster-domain", config.cluster_domain,
                             "--ttl", str(config.lease_ttl), "--registry", config.registry,
                             "--git-listen", f"127.0.0.1:{config.git_port}", "--git-dir", str(home / "git"),
                             "--git-host-key", str(home / "git_host_ed25519_key")])
    wait_until("controller", lambda: http_ok(f"{config.api_url}/api/v1/health"), 30,
               sup.log_dir / "controller.log")

    return config


def down(home: Path, say: Callable[[str], None]) -> None:
    config = load_config(home)
    sup = Supervisor(home)
    # the controller first: agents going away must not look like lost nodes to it
    for name in ["controller", *[n for n in sup.names() if n.startswith("agent-")], "router"]:
        if sup.stop(name):
            say(f"stopped {name}")
    nginx_pid = home / "router" / "nginx.pid"
    if nginx_pid.exists():
        try:
            os.kill(int(nginx_pid.read_text()), signal.SIGQUIT)
            say("stopped nginx")
        except (OSError, ValueError):
            pass
    if config is not None and docker_running():
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=paas.cluster={config.name}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
            say(f"removed {len(ids)} app containers (etcd keeps the apps; `paas up` brings them back)")
    for name in ("registry", "etcd", "dockerd"):
        if sup.stop(name, timeout=20):
            say(f"stopped {name}")
