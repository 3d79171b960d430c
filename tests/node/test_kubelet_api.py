"""The kubelet API behind the API server, with real runc containers and real kubectl.

One API server process (no controllers), one KubeletServer in this event loop with a CA-signed serving
certificate for 127.0.0.1, and one pod sandbox with two busybox containers: ``app`` prints a numbered
line every 0.2 s, ``web`` serves a page with busybox httpd on port 80. The Node (InternalIP 127.0.0.1,
kubeletEndpoint port) and the Pod (bound to it, Running) are created through the API; kubectl then reads
logs, execs, copies files and port-forwards through the API server's relay to the kubelet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from microkube.apiserver.pki import ensure_pki
from microkube.client import Client
from microkube.kubelet.server import ContainerLocation, KubeletServer
from microkube.testing import ServerProcess
from microkube_interfaces import cri, errors

RUNC = shutil.which("runc") or "/usr/sbin/runc"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NODE = "kapi-node"
POD = "kapi-pod"
TICKER = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.2; done"
HTTPD = "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 80 -h /www"

pytestmark = [
    pytest.mark.root,
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runc containers"),
    pytest.mark.skipif(not os.path.exists(RUNC) or not os.path.exists("/bin/busybox")
                       or not os.path.exists(KUBECTL), reason="needs runc, busybox and kubectl"),
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass
class Directory:
    """The PodDirectory of the test: one pod, its sandbox and containers."""

    sandbox: str = ""
    containers: dict[str, ContainerLocation] = field(default_factory=dict)
    obj: dict[str, Any] = field(default_factory=dict)

    def _check(self, namespace: str, name: str) -> None:
        if (namespace, name) != ("default", POD):
            raise errors.NotFound(f"pod {namespace}/{name} does not run on this node")

    def sandbox_id(self, namespace: str, name: str) -> str:
        self._check(namespace, name)
        return self.sandbox

    def container(self, namespace: str, name: str, container: str, *, previous: bool = False) -> ContainerLocation:
        self._check(namespace, name)
        if container not in self.containers:
            raise errors.NotFound(f'container "{container}" in pod "{name}" not found')
        if previous:
            raise errors.NotFound(f'previous terminated container "{container}" in pod "{name}" not found')
        return self.containers[container]

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        self._check(namespace, name)
        return self.obj


@dataclass
class Env:
    server: ServerProcess
    kubelet: KubeletServer
    kubelet_port: int
    pki_dir: Path
    tmp: Path

    async def kubectl(self, *args: str, stdin: bytes | None = None, check: bool = True,
                      limit: float = 30) -> subprocess.CompletedProcess[bytes]:
        result = await asyncio.to_thread(
            subprocess.run, [KUBECTL, "--kubeconfig", str(self.server.kubeconfig), *args], input=stdin,
            capture_output=True, timeout=limit, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([KUBECTL, "--kubeconfig", str(self.server.kubeconfig), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count_lines(path: str) -> int:
    return Path(path).read_text().count("\n") if os.path.exists(path) else 0


async def _wait_output(directory: Directory, pack: Any) -> None:
    """Until the ticker logged a few lines and httpd answers inside the pod."""
    deadline = asyncio.get_running_loop().time() + 15
    log_path = directory.containers["app"].log_path
    while True:
        lines = await asyncio.to_thread(_count_lines, log_path)
        try:
            stream = await pack.runtime.port_forward(directory.sandbox, 80)
            await stream.close()
            ready = True
        except errors.Retryable:
            ready = False
        if lines >= 5 and ready:
            return
        assert asyncio.get_running_loop().time() < deadline, "containers did not start"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kapi_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    from microkube_runc import cgroups
    from microkube_runc.busybox import import_busybox
    from microkube_runc.runtime import create_runtime

    tmp = tmp_path_factory.mktemp("kapi")
    server = ServerProcess(tmp / "server", components=False).start()
    parent = os.path.join(cgroups.own_cgroup("memory"), f"kapi-{os.getpid()}")
    pack = create_runtime({"root": str(tmp / "runc"), "cgroupParent": parent, "runc": RUNC})
    kubelet: KubeletServer | None = None
    client: Client | None = None
    try:
        pki = ensure_pki(server.data_dir)
        cert, key = pki.issue_serving_cert("kapi-kubelet", ["127.0.0.1"])
        (tmp / "kubelet.crt").write_bytes(cert)
        (tmp / "kubelet.key").write_bytes(key)
        await import_busybox(pack.images)
        sandbox_config = cri.PodSandboxConfig(cri.PodSandboxMetadata(POD, "uid-kapi", "default"),
                                              log_directory=str(tmp / "logs"))
        directory = Directory(sandbox=await pack.runtime.run_pod_sandbox(sandbox_config))
        for name, script in (("app", TICKER), ("web", HTTPD)):
            config = cri.ContainerConfig(cri.ContainerMetadata(name), cri.ImageSpec("busybox"),
                                         command=("sh", "-c", script), log_path=f"{name}/0.log")
            cid = await pack.runtime.create_container(directory.sandbox, config, sandbox_config)
            await pack.runtime.start_container(cid)
            directory.containers[name] = ContainerLocation(cid, str(tmp / "logs" / name / "0.log"), running=True)
        kubelet = KubeletServer(directory, pack.runtime, pack.capabilities, cert_file=tmp / "kubelet.crt",
                                key_file=tmp / "kubelet.key", client_ca_file=pki.ca_cert)
        port = await kubelet.start("127.0.0.1", 0)
        client = Client.from_kubeconfig(server.kubeconfig)
        await client.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node",
                                                             "metadata": {"name": NODE}})
        node = await client.request("GET", f"/api/v1/nodes/{NODE}")
        node["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                        {"type": "Hostname", "address": NODE}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
        await client.request("PUT", f"/api/v1/nodes/{NODE}/status", body=node)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": POD, "namespace": "default",
                            "annotations": {"kubectl.kubernetes.io/default-container": "app"}},
               "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox"},
                                                         {"name": "web", "image": "busybox"}]}}
        directory.obj = await client.request("POST", "/api/v1/namespaces/default/pods", body=pod)
        directory.obj["status"] = {"phase": "Running"}
        await client.request("PUT", f"/api/v1/namespaces/default/pods/{POD}/status", body=directory.obj)
        await _wait_output(directory, pack)
        yield Env(server, kubelet, port, pki.directory, tmp)
    finally:
        if client is not None:
            await client.close()
        if kubelet is not None:
            await kubelet.stop()
        for sandbox in await pack.runtime.list_pod_sandbox():
            await pack.runtime.remove_pod_sandbox(sandbox.id)
        await pack.runtime.close()
        cgroups.remove_tree(parent)
        server.stop()


def _lines(output: bytes) -> list[str]:
    return output.decode().splitlines()


async def test_logs_tail_timestamps_since(kapi_env: Env) -> None:
    tail = _lines((await kapi_env.kubectl("logs", POD, "--tail=3")).stdout)
    assert len(tail) == 3 and all(re.fullmatch(r"line \d+", line) for line in tail)
    numbers = [int(line.split()[1]) for line in tail]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    stamped = _lines((await kapi_env.kubectl("logs", POD, "-c", "app", "--timestamps", "--tail=2")).stdout)
    assert len(stamped) == 2
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z line \d+", line) for line in stamped)
    recent = _lines((await kapi_env.kubectl("logs", POD, "--since=1h")).stdout)
    assert recent[0] == "line 0" and len(recent) >= 5
    # a time after every line written so far: nothing older comes back
    assert (await kapi_env.kubectl("logs", POD, "--since-time=2999-01-01T00:00:00Z")).stdout == b""
    limited = (await kapi_env.kubectl("logs", POD, "--limit-bytes=9")).stdout
    assert limited == b"line 0\nli"


async def test_logs_follow_streams_new_lines(kapi_env: Env) -> None:
    process = await asyncio.to_thread(kapi_env.popen, "logs", "-f", "--tail=1", POD)
    try:
        assert process.stdout is not None
        seen = [await asyncio.to_thread(process.stdout.readline) for _ in range(4)]
    finally:
        process.kill()
        await asyncio.to_thread(process.wait)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    numbers = [int(line.split()[1]) for line in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 4))


async def test_log_errors_pass_through(kapi_env: Env) -> None:
    previous = await kapi_env.kubectl("logs", POD, "--previous", check=False)
    assert previous.returncode == 1
    assert b'previous terminated container "app" in pod "kapi-pod" not found' in previous.stderr
    unknown = await kapi_env.kubectl("logs", POD, "-c", "nope", check=False)
    assert unknown.returncode == 1 and b"container nope is not valid" in unknown.stderr


async def test_exec_output_stdin_and_exit_codes(kapi_env: Env) -> None:
    assert (await kapi_env.kubectl("exec", POD, "--", "echo", "hi")).stdout == b"hi\n"
    both = await kapi_env.kubectl("exec", POD, "-c", "web", "--", "sh", "-c", "echo out; echo err >&2")
    assert (both.stdout, both.stderr) == (b"out\n", b"err\n")
    piped = await kapi_env.kubectl("exec", "-i", POD, "--", "cat", stdin=b"x\n")
    assert piped.stdout == b"x\n"
    failed = await kapi_env.kubectl("exec", POD, "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3


async def test_kubectl_cp_both_ways(kapi_env: Env) -> None:
    source = kapi_env.tmp / "upload.txt"
    payload = b"".join(b"payload line %d\n" % i for i in range(2000))
    source.write_bytes(payload)
    await kapi_env.kubectl("cp", str(source), f"default/{POD}:/tmp/upload.txt", "-c", "app")
    inside = await kapi_env.kubectl("exec", POD, "--", "wc", "-c", "/tmp/upload.txt")
    assert inside.stdout.split()[0] == str(len(payload)).encode()
    target = kapi_env.tmp / "download.txt"
    await kapi_env.kubectl("cp", f"default/{POD}:/tmp/upload.txt", str(target), "-c", "app")
    assert target.read_bytes() == payload


async def test_port_forward_with_kubectl(kapi_env: Env) -> None:
    local = _free_port()
    process = await asyncio.to_thread(kapi_env.popen, "port-forward", f"pod/{POD}", f"{local}:80")
    try:
        assert process.stdout is not None
        first = await asyncio.to_thread(process.stdout.readline)
        assert b"Forwarding from 127.0.0.1" in first, process.stderr.read() if process.stderr else first
        for _ in range(3):  # each request is a new forwarded connection
            body = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{local}/")
            assert body == b"hello-from-pod\n"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


async def test_python_client_exec_and_port_forward(kapi_env: Env) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import portforward, stream

    def run() -> tuple[str, bytes]:
        api_client = kubernetes.config.new_client_from_config(str(kapi_env.server.kubeconfig))
        try:
            api = kubernetes.client.CoreV1Api(api_client)
            session = stream(api.connect_get_namespaced_pod_exec, POD, "default", container="app",
                             command=["echo", "from-python"], stderr=True, stdin=False, stdout=True, tty=False,
                             _preload_content=False)
            session.run_forever(timeout=10)
            output = session.read_stdout()
            code = session.returncode
            session.close()
            assert code == 0
            forward = portforward(api.connect_get_namespaced_pod_portforward, POD, "default", ports="80")
            sock = forward.socket(80)
            sock.setblocking(True)
            sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            sock.close()
            forward.close()
            deadline = time.monotonic() + 10
            while forward.connected and time.monotonic() < deadline:  # its proxy thread closes the WebSocket
                time.sleep(0.02)
            return str(output), answer
        finally:
            api_client.close()

    # The kubernetes client's WebSocket streams leave their TLS sockets to the garbage collector when the
    # server closes first; collect them here, quietly, instead of in whatever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        output, answer = await asyncio.to_thread(run)
        gc.collect()
    assert output == "from-python\n"
    assert answer.startswith(b"HTTP/1.") and answer.endswith(b"hello-from-pod\n")


async def test_kubelet_needs_credentials_and_known_paths(kapi_env: Env) -> None:
    context = ssl.create_default_context(cafile=str(kapi_env.pki_dir / "ca.crt"))
    base = f"https://127.0.0.1:{kapi_env.kubelet_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz", ssl=context) as response:
            assert (response.status, await response.text()) == (200, "ok")
        async with session.get(f"{base}/containerLogs/default/{POD}/app", ssl=context) as response:
            assert response.status == 401
    context = ssl.create_default_context(cafile=str(kapi_env.pki_dir / "ca.crt"))
    context.load_cert_chain(kapi_env.pki_dir / "admin.crt", kapi_env.pki_dir / "admin.key")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/containerLogs/default/{POD}/app?tailLines=1", ssl=context) as response:
            assert response.status == 200 and (await response.text()).startswith("line ")
        async with session.get(f"{base}/nothing/here", ssl=context) as response:
            assert response.status == 404 and (await response.json())["kind"] == "Status"
        async with session.get(f"{base}/containerLogs/default/{POD}/app?tailLines=x", ssl=context) as response:
            assert response.status == 400 and "tailLines" in (await response.json())["message"]


async def test_kubelet_takes_bearer_tokens_when_given_an_authenticator(kapi_env: Env) -> None:
    async def authenticate(token: str) -> str | None:
        return "tester" if token == "good" else None

    context = ssl.create_default_context(cafile=str(kapi_env.pki_dir / "ca.crt"))
    url = f"https://127.0.0.1:{kapi_env.kubelet_port}/containerLogs/default/{POD}/app?tailLines=1"
    kapi_env.kubelet.authenticate_token = authenticate
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=context, headers={"Authorization": "Bearer good"}) as response:
                assert response.status == 200
            async with session.get(url, ssl=context, headers={"Authorization": "Bearer bad"}) as response:
                assert response.status == 401
    finally:
        kapi_env.kubelet.authenticate_token = None


async def test_unreachable_kubelet_is_named(kapi_env: Env) -> None:
    async with Client.from_kubeconfig(kapi_env.server.kubeconfig) as client:
        other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kapi-gone"}}
        await client.request("POST", "/api/v1/nodes", body=other)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kapi-orphan", "namespace": "default"},
               "spec": {"nodeName": "kapi-gone", "containers": [{"name": "c", "image": "busybox"}]}}
        await client.request("POST", "/api/v1/namespaces/default/pods", body=pod)
    result = await kapi_env.kubectl("logs", "kapi-orphan", check=False)
    assert result.returncode == 1 and b"node kapi-gone has no InternalIP or Hostname" in result.stderr


async def _exec_socket(kapi_env: Env, query: str) -> Any:
    from microkube.testing import client_ssl_context

    url, context = client_ssl_context(kapi_env.server.kubeconfig)
    session = aiohttp.ClientSession()
    try:
        socket = await session.ws_connect(f"{url}/api/v1/namespaces/default/pods/{POD}/exec?{query}",
                                          protocols=["v5.channel.k8s.io"], ssl=context)
    except BaseException:
        await session.close()
        raise
    return session, socket


async def test_tty_exec_resizes_and_attach_streams(kapi_env: Env) -> None:
    """A tty exec through the relay: output on channel 1 only, the terminal takes the size sent on channel 4;
    ``kubectl attach`` streams the main process's output."""
    query = "container=app&command=sh&command=-c&command=while+read+x%3B+do+stty+size%3B+done&stdin=true" \
            "&stdout=true&tty=true"
    session, socket = await _exec_socket(kapi_env, query)
    try:
        assert socket.protocol == "v5.channel.k8s.io"
        await socket.send_bytes(b"\x04" + json.dumps({"Width": 91, "Height": 21}).encode())
        shown = b""
        for _ in range(50):  # each line typed makes the shell print the size it sees (the resize is asynchronous)
            await socket.send_bytes(b"\x00\r")
            message = await socket.receive_bytes(timeout=10)
            assert message[0] == 1, message
            shown += message[1:]
            if b"21 91" in shown:
                break
        assert b"21 91" in shown, shown
        await socket.send_bytes(b"\x00\x04")  # end of input on a terminal
        while (message := await socket.receive_bytes(timeout=10))[0] != 3:
            assert message[0] == 1
        assert json.loads(message[1:])["status"] == "Success"
    finally:
        await socket.close()
        await session.close()

    attach = kapi_env.popen("attach", POD, "-c", "app")
    try:
        assert attach.stdout is not None
        lines = [await asyncio.to_thread(attach.stdout.readline) for _ in range(2)]
        assert all(line.startswith(b"line ") for line in lines), lines
    finally:
        attach.kill()
        attach.communicate()


async def test_runtime_without_terminals_or_attach_is_explained(kapi_env: Env) -> None:
    """A runtime that declares no tty and no attach: the kubelet answers with the limit and the way around it."""
    declared = kapi_env.kubelet.capabilities
    kapi_env.kubelet.capabilities = dataclasses.replace(declared, supports_tty=False, supports_attach=False)
    try:
        session, socket = await _exec_socket(kapi_env, "container=app&command=sh&stdin=true&stdout=true&tty=true")
        try:
            message = await socket.receive_bytes(timeout=10)
        finally:
            await socket.close()
            await session.close()
        assert message[0] == 3
        status = json.loads(message[1:])
        assert status["status"] == "Failure" and "cannot allocate a terminal" in status["message"]
        attach = await kapi_env.kubectl("attach", POD, "-c", "app", check=False)
        assert attach.returncode == 1 and b"does not support attach" in attach.stderr
    finally:
        kapi_env.kubelet.capabilities = declared
