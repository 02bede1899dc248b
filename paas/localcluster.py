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
    controllers: int = 1
    etcd_members: int = 1

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.etcd_port + 10 * i}" for i in range(self.etcd_members)]

    @property
    def etcd(self) -> str:
        return ",".join(self.etcd_endpoints)

    @property
    def api_url(self) -> str:
        """Every controller's API; the CLI moves on when one refuses."""
        return ",".join(f"http://127.0.0.1:{self.api_port + i}" for i in range(self.controllers))

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


def up(home: Path, config: ClusterConfig, say: Callable[[str], None], controllers: int | None = None,
       etcd_members: int | None = None) -> ClusterConfig:
    for tool in ("etcd", "nginx", "docker-registry", "dockerd", "docker"):
        if shutil.which(tool) is None:
            raise ClusterError(f"`{tool}` is not installed; run `make setup` (apt: docker.io etcd-server "
                               "nginx docker-registry busybox-static)")
    config = _settle_config(home, config, controllers, etcd_members)
    token_file = home / "token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
    sup = Supervisor(home)
    if not docker_running():
        _start_dockerd(sup, say)
    _start_etcd(sup, home, config, say)
    _start_registry(sup, home, config, say)
    say("base images")
    baseimage.ensure_base_image(config.registry, say)
    baseimage.ensure_python_base_image(config.registry, say)   # debootstrap: about a minute, once per machine
    _start_agents(sup, home, config, say)      # agents first: a new controller finds every node registered
    _start_controllers(sup, home, config, token_file, say)
    return config


def _start_dockerd(sup: Supervisor, say: Callable[[str], None]) -> None:
    """Start dockerd, first letting one that is still shutting down finish: a new one
    refuses to start while the old one's pid file is there."""
    pid_file = Path("/var/run/docker.pid")
    try:
        old = int(pid_file.read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and process_alive(old):
        say("waiting for the previous dockerd to stop or answer")
        wait_until("the previous dockerd to stop", lambda: not process_alive(old) or docker_running(), 60)
        if docker_running():
            return
    pid_file.unlink(missing_ok=True)      # stale: its process is gone
    say("starting dockerd")
    sup.start("dockerd", ["dockerd"])
    wait_until("dockerd", docker_running, 60, sup.log_dir / "dockerd.log")


def _settle_config(home: Path, config: ClusterConfig, controllers: int | None,
                   etcd_members: int | None) -> ClusterConfig:
    """A running cluster keeps its ports and addresses; the number of controllers may change."""
    home.mkdir(parents=True, exist_ok=True)
    existing = load_config(home)
    if existing is not None:
        if etcd_members is not None and etcd_members != existing.etcd_members:
            raise ClusterError(f"this cluster has {existing.etcd_members} etcd member(s); the number is chosen "
                               f"when the cluster is first made (paas down, then remove {home})")
        config = existing
    if controllers is not None:
        config.controllers = controllers
    if etcd_members is not None and existing is None:
        config.etcd_members = etcd_members
    config_path(home).write_text(json.dumps(asdict(config), indent=2))
    return config


def _start(sup: Supervisor, name: str, argv: list[str], listen: str) -> None:
    """Start unless running; refuse when another process holds its address, so two
    clusters never mistake each other's services for their own."""
    if sup.pid(name) is None and tcp_open(listen):
        raise ClusterError(f"cannot start {name}: {listen} is in use by a process this $PAAS_HOME ({sup.home}) "
                           "did not start; another paas cluster? stop it, or give this one other ports "
                           "(PAAS_ETCD_PORT, PAAS_API_PORT, PAAS_ROUTER_LISTEN, PAAS_REGISTRY, PAAS_GIT_PORT)")
    sup.start(name, argv)


def _start_etcd(sup: Supervisor, home: Path, config: ClusterConfig, say: Callable[[str], None]) -> None:
    say(f"etcd on {config.etcd}")
    members = [(f"paas-{i}" if config.etcd_members > 1 else "paas", client, f"http://127.0.0.1:{int(client.rpartition(':')[2]) + 1}")
               for i, client in enumerate(config.etcd_endpoints)]
    initial = ",".join(f"{name}={peer}" for name, _, peer in members)
    for i, (name, client, peer) in enumerate(members):
        data = home / ("etcd" if config.etcd_members == 1 else f"etcd-{i}")
        _start(sup, "etcd" if config.etcd_members == 1 else f"etcd-{i}",
               ["etcd", "--name", name, "--data-dir", str(data), "--listen-client-urls", f"http://{client}",
                "--advertise-client-urls", f"http://{client}", "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", initial,
                "--initial-cluster-state", "new", "--log-level", "warn"], client)
    for client in config.etcd_endpoints:
        wait_until(f"etcd on {client}", lambda c=client: http_ok(f"http://{c}/health"), 30, sup.log_dir)


def _start_registry(sup: Supervisor, home: Path, config: ClusterConfig, say: Callable[[str], None]) -> None:
    say(f"registry on {config.registry}")
    registry_conf = home / "registry" / "config.yml"
    registry_conf.parent.mkdir(parents=True, exist_ok=True)
    registry_conf.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {home / 'registry' / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {config.registry}\n")
    _start(sup, "registry", ["docker-registry", "serve", str(registry_conf)], config.registry)
    wait_until("registry", lambda: http_ok(f"http://{config.registry}/v2/"), 30, sup.log_dir / "registry.log")


def _start_agents(sup: Supervisor, home: Path, config: ClusterConfig, say: Callable[[str], None]) -> None:
    py = sys.executable
    for i, address in enumerate(config.nodes, start=1):
        say(f"agent node-{i} on {address}")
        sup.start(f"agent-node-{i}", [py, "-m", "agent", "--node", f"node-{i}", "--address", address,
                                      "--cluster", config.name, "--etcd", config.etcd,
                                      "--cpu", str(config.node_cpu), "--memory", str(config.node_memory_mib),
                                      "--ttl", str(config.lease_ttl)])
    say(f"router on {config.router_listen}")
    _start(sup, "router", [py, "-m", "agent", "--node", "router", "--role", "router",
                           "--address", config.router_listen.rpartition(":")[0], "--cluster", config.name,
                           "--etcd", config.etcd, "--listen", config.router_listen,
                           "--workdir", str(home / "router"), "--cluster-domain", config.cluster_domain,
                           "--ttl", str(config.lease_ttl)], config.router_listen)
    wait_until("router", lambda: tcp_open(config.router_listen), 30, sup.log_dir / "router.log")


def _start_controllers(sup: Supervisor, home: Path, config: ClusterConfig, token_file: Path,
                       say: Callable[[str], None]) -> None:
    """Controller 1 keeps the historic name `controller`; each serves the API and git,
    one of them leads."""
    for i in range(config.controllers):
        name = "controller" if i == 0 else f"controller-{i + 1}"
        api, git = f"127.0.0.1:{config.api_port + i}", f"127.0.0.1:{config.git_port + i}"
        say(f"{name} on http://{api}")
        _start(sup, name, [sys.executable, "-m", "controller", "--etcd", config.etcd, "--listen", api,
                           "--token-file", str(token_file), "--cluster-domain", config.cluster_domain,
                           "--ttl", str(config.lease_ttl), "--registry", config.registry, "--id", name,
                           "--git-listen", git, "--git-dir", str(home / "git"),
                           "--git-host-key", str(home / "git_host_ed25519_key")], api)
        wait_until(name, lambda a=api: http_ok(f"http://{a}/api/v1/health"), 30, sup.log_dir / f"{name}.log")


def down(home: Path, say: Callable[[str], None]) -> None:
    config = load_config(home)
    sup = Supervisor(home)
    # controllers first: agents going away must not look like lost nodes to them
    names = sup.names()
    for name in [*[n for n in names if n.startswith("controller")], *[n for n in names if n.startswith("agent-")],
                 "router"]:
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
    for name in ["registry", *[n for n in names if n.startswith("etcd")], "dockerd"]:
        if sup.stop(name, timeout=20):
            say(f"stopped {name}")
