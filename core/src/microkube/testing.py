"""microkube's test kit: run a real ``microkube server`` process and drive it with real clients.

Use it as a pytest plugin (``pytest_plugins = ["microkube.testing"]``). ``ServerProcess`` starts the
actual command in a fresh data dir on a free loopback port and waits until it serves; ``Kubectl`` runs
the machine's kubectl 1.32 against it with its discovery and HTTP caches isolated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBECTL_CANDIDATES = ("/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "kubectl")
READY_MARKER = "microkube API server ready at "


def find_kubectl() -> str | None:
    for candidate in KUBECTL_CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


@dataclass
class ServerProcess:
    """A ``microkube server`` child process."""

    data_dir: Path
    store: str = ""
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    #: run the controller manager and scheduler beside the API server (off: tests drive the API alone)
    components: bool = False
    #: ``server``, or ``up`` for the control plane and this machine as a node
    subcommand: str = "server"
    port: int = 0
    process: subprocess.Popen[str] | None = None
    url: str = ""
    log_path: Path | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "microkube.cli", self.subcommand, "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}"]
        if self.store:
            args += ["--store", self.store]
        if not self.components:
            args += ["--no-controller-manager", "--no-scheduler"]
        return [*args, *self.extra_args]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        env = {**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if READY_MARKER in line:
                self.url = line.split(READY_MARKER, 1)[1].split(";", 1)[0].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        self.stop()
        raise RuntimeError(f"microkube server did not become ready; log:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


def client_ssl_context(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    """The server URL and a TLS context (CA + admin client certificate) from a kubeconfig file."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    if "client-certificate-data" in user:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            context.load_cert_chain(cert, key)
    return cluster["server"], context


@contextlib.asynccontextmanager
async def in_process_server(data_dir: Path) -> AsyncIterator[tuple[Any, str, str]]:
    """An API server in this event loop (memory store, plain HTTP on a free loopback port).

    Yields (server, url, bearer token of a system:masters user)."""
    from microkube.apiserver.pki import ensure_pki
    from microkube.apiserver.server import APIServer
    from microkube.plugins import Plugins
    from microkube.store.memory import MemoryStore
    from microkube_interfaces.hookspecs import ServerSettings

    pki = ensure_pki(data_dir, [])
    token = "test-token"
    (data_dir / "tokens.csv").write_text(f"{token},tester,u1,system:masters\n")
    store = MemoryStore()
    server = APIServer(plugins=Plugins(autoload=False), store=store, settings=ServerSettings(data_dir=str(data_dir)),
                       sa_key_path=pki.sa_key, port=0)
    await server.start()
    try:
        yield server, server.url, token
    finally:
        await server.stop()
        await store.close()


@dataclass
class Kubectl:
    """The real kubectl, isolated: its own HOME and cache dir, pointed at one server."""

    binary: str
    kubeconfig: Path
    home: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.home / "cache"),
            "NO_PROXY": "*",
        }

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], input=input, capture_output=True, text=True,
                                timeout=timeout, env={**self.env(), **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def __call__(self, *args: str, **kwargs: Any) -> str:
        return self.run(*args, **kwargs).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env())


@pytest.fixture(scope="module")
def microkube_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``microkube server`` on SQLite, one per test module."""
    server = ServerProcess(tmp_path_factory.mktemp("microkube")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubectl(microkube_server: ServerProcess, tmp_path: Path) -> Kubectl:
    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    return Kubectl(binary, microkube_server.kubeconfig, tmp_path / "kubectl-home")


@contextlib.asynccontextmanager
async def running_controllers(client: Any, *registrations: Any) -> AsyncIterator[None]:
    """A ControllerManager running just these ControllerRegistrations for the duration of the block."""
    from microkube.controllers.manager import ControllerManager

    running = asyncio.create_task(ControllerManager(client, registrations).run())
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` (every 0.5 s, up to ``timeout`` seconds) until it returns something true; return that.
    Errors a poll of a real process may meet (a failed kubectl, a missing key) count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, KeyError, IndexError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


def own_memory_cgroup() -> str:
    """This process's memory cgroup (cgroup v1), under which tests nest the cgroups their runtimes make."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return "/"


def remove_cgroup_tree(parent: str, *, kill: bool = False) -> list[str]:
    """Remove the cgroup directory ``parent`` (a cgroupfs path) and everything below it in every v1 hierarchy,
    deepest first, killing the processes left in it when ``kill``; returns the directories that remain."""
    remaining = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        if kill:
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
        for directory in [*sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), top]:
            try:
                directory.rmdir()
            except OSError:
                remaining.append(str(directory))
    return remaining


def pod_running_with_ip(kubectl: Kubectl, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until pod ``name`` is Running with a pod IP; return it."""

    def running() -> dict[str, Any] | None:
        pod: dict[str, Any] = kubectl.json("get", "pod", name)
        return pod if pod["status"].get("phase") == "Running" and pod["status"].get("podIP") else None

    found: dict[str, Any] = eventually(running, timeout, f"pod {name} Running with an IP")
    return found


@contextlib.contextmanager
def kubelet_node(server: ServerProcess, node_name: str, directory: Path, *args: str,
                 plugins: str) -> Iterator[Kubectl]:
    """A ``microkube kubelet`` process registering ``node_name`` with ``server`` (node credentials issued from the
    server's CA), loading only the packs in ``plugins``; yields kubectl once the node is Ready and deletes every
    pod before the kubelet stops. With the runc pack its pods' cgroups go under a private parent below this
    process's memory cgroup, which must be empty once the pods are gone (it is removed either way); the host's
    ``ip_forward``, which pod networks may switch on, is restored."""
    from microkube import bootstrap

    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    node_dir = directory / "node"
    node_dir.mkdir()
    cgroup_parent = ""
    if "runc" in plugins.split(","):
        cgroup_parent = f"{own_memory_cgroup().rstrip('/')}/microkube-{node_name}-{os.urandom(4).hex()}"
        args = (*args, f"--runtime-option=cgroupParent={cgroup_parent}")
    ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    kubeconfig, cert, key = bootstrap.local_credentials(server.data_dir, node_name, node_dir, ["127.0.0.1"])
    with (directory / "kubelet.log").open("w") as log:
        kubelet = subprocess.Popen(
            [sys.executable, "-m", "microkube.cli", "kubelet", "--kubeconfig", str(kubeconfig), "--root-dir",
             str(node_dir), "--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--client-ca-file",
             str(server.data_dir / "pki" / "ca.crt"), "--node-name", node_name, "--node-ip", "127.0.0.1",
             "--kubelet-port", "0", *args],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "0", "MICROKUBE_PLUGINS": plugins})
        kubectl = Kubectl(binary, server.kubeconfig, directory / "kubectl-home")
        try:
            eventually(lambda: "True" in kubectl("get", "node", node_name, "-o",
                                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}"),
                       60, f"node {node_name} Ready")
            yield kubectl
        finally:
            kubectl.run("delete", "pods", "--all", "--grace-period=1", "--wait=true", check=False, timeout=60)
            kubelet.terminate()
            kubelet.wait(30)
            Path("/proc/sys/net/ipv4/ip_forward").write_text(ip_forward)
            if cgroup_parent:
                left = remove_cgroup_tree(cgroup_parent)
                if left:
                    remove_cgroup_tree(cgroup_parent, kill=True)
                    raise AssertionError(f"cgroups left after every pod was deleted: {left}")
