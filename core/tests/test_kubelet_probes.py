"""Probe and lifecycle-handler actions against real servers on loopback, and the ProbeManager's rules.

HTTP answers come from an aiohttp server, TCP from a listener, gRPC health from a grpc.aio server with a
generic handler. Exec goes through a small fake RuntimeService (one neighbour of the module) and, in one
root test, through the real runc runtime with busybox.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from microkube.kubelet.handlers import (
    USER_AGENT,
    ActionResult,
    decode_health_response,
    encode_health_request,
    run_action,
)
from microkube.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeFailure, ProbeManager, event_message
from microkube_interfaces import cri
from microkube_interfaces.errors import NotFound, Retryable

LOOPBACK = "127.0.0.1"


class FakeRuntime:
    """The one RuntimeService call the handlers use: exec_sync, answered from a table."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int]] = []
        self.answers: dict[str, cri.ExecSyncResponse | Exception] = {}

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> cri.ExecSyncResponse:  # noqa: ASYNC109
        self.calls.append((container_id, cmd, timeout))
        answer = self.answers.get(" ".join(cmd), cri.ExecSyncResponse(b"", b"", 0))
        if isinstance(answer, Exception):
            raise answer
        return answer


async def act(action: dict[str, Any], *, runtime: Any = None, container: dict[str, Any] | None = None,
              limit: float = 2.0, purpose: str = "probe", pod_ip: str = LOOPBACK) -> ActionResult:
    fake: Any = runtime or FakeRuntime()
    return await run_action(action, runtime=fake, container_id="c1", pod_ip=pod_ip,
                            container=container or {"name": "app"}, timeout=limit,
                            purpose=purpose)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# --- an HTTP server whose answers the tests flip ---------------------------------------------------


class Web:
    def __init__(self) -> None:
        self.status = 200
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/redirect-local", self.redirect_local)
        app.router.add_get("/redirect-away", self.redirect_away)
        app.router.add_get("/loop", self.loop)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def health(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.Response(status=self.status, text=f"answer {self.status}")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="late")

    async def redirect_local(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/health")

    async def redirect_away(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://elsewhere.invalid/")

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")


@pytest.fixture
async def http() -> AsyncIterator[Web]:
    server = Web()
    await server.start()
    try:
        yield server
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


async def test_http_get_status_codes_headers_and_messages(http: Web) -> None:
    action = {"httpGet": {"path": "/health", "port": http.port}}
    result = await act(action)
    assert result.ok and result.output == "answer 200"
    assert http.seen[-1]["User-Agent"] == USER_AGENT and http.seen[-1]["Accept"] == "*/*"

    http.status = 500
    result = await act(action)
    assert not result.ok and not result.errored
    assert result.message == "HTTP probe failed with statuscode: 500"
    # A lifecycle hook only fails on transport errors, as kubelet's.
    assert (await act(action, purpose="hook")).ok

    http.status = 200
    custom = {"httpGet": {"path": "health", "port": "web", "httpHeaders": [
        {"name": "User-Agent", "value": "mine"}, {"name": "X-Probe", "value": "1"}]}}
    result = await act(custom, container={"name": "app", "ports": [{"name": "web", "containerPort": http.port}]})
    assert result.ok
    assert http.seen[-1]["User-Agent"] == "mine" and http.seen[-1]["X-Probe"] == "1"


async def test_http_get_redirects_timeouts_and_refusals(http: Web) -> None:
    assert (await act({"httpGet": {"path": "/redirect-local", "port": http.port}})).ok
    http.status = 503
    local = await act({"httpGet": {"path": "/redirect-local", "port": http.port}})
    assert not local.ok and "statuscode: 503" in local.message  # followed to /health on the same host

    away = await act({"httpGet": {"path": "/redirect-away", "port": http.port}})
    assert away.ok and away.message.startswith("Probe terminated redirects")

    loop = await act({"httpGet": {"path": "/loop", "port": http.port}})
    assert not loop.ok and "stopped after 10 redirects" in loop.message

    slow = await act({"httpGet": {"path": "/slow", "port": http.port}}, limit=0.3)
    assert not slow.ok and "context deadline exceeded" in slow.message
    assert slow.message.startswith(f'Get "http://{LOOPBACK}:{http.port}/slow"')

    port = free_port()
    refused = await act({"httpGet": {"path": "/", "port": port}})
    assert not refused.ok and not refused.errored
    assert refused.message == (f'Get "http://{LOOPBACK}:{port}/": '
                               f"dial tcp {LOOPBACK}:{port}: connect: connection refused")


async def test_named_ports_and_bad_actions() -> None:
    unknown = await act({"tcpSocket": {"port": "metrics"}}, container={"name": "app", "ports": []})
    assert not unknown.ok and unknown.errored and unknown.message == "port metrics not found"
    bad = await act({"tcpSocket": {"port": 70000}})
    assert bad.errored and "invalid port number: 70000" in bad.message
    none = await act({})
    assert none.errored and "exec, httpGet, tcpSocket or grpc" in none.message
    assert (await act({"grpc": {"port": 1}}, purpose="hook")).errored


async def test_tcp_socket() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await act({"tcpSocket": {"port": port}})).ok
        assert (await act({"tcpSocket": {"port": str(port), "host": LOOPBACK}}, pod_ip="127.0.0.2")).ok
    finally:
        server.close()
        await server.wait_closed()
    refused = await act({"tcpSocket": {"port": port}})
    assert not refused.ok and refused.message == f"dial tcp {LOOPBACK}:{port}: connect: connection refused"


# --- exec -----------------------------------------------------------------------------------------


async def test_exec_through_a_fake_runtime() -> None:
    runtime = FakeRuntime()
    runtime.answers["cat /tmp/healthy"] = cri.ExecSyncResponse(b"", b"cat: can't open '/tmp/healthy'\n", 1)
    runtime.answers["sleep 10"] = Retryable("exec timed out")
    runtime.answers["gone"] = NotFound("container c1 not found")
    assert (await act({"exec": {"command": ["true"]}}, runtime=runtime, limit=3)).ok
    assert runtime.calls[-1] == ("c1", ["true"], 3)

    failed = await act({"exec": {"command": ["cat", "/tmp/healthy"]}}, runtime=runtime)
    assert not failed.ok and failed.message == "cat: can't open '/tmp/healthy'\n"
    hook = await act({"exec": {"command": ["cat", "/tmp/healthy"]}}, runtime=runtime, purpose="hook")
    assert hook.message.startswith("command 'cat /tmp/healthy' exited with 1: ")

    timed_out = await act({"exec": {"command": ["sleep", "10"]}}, runtime=runtime)
    assert not timed_out.ok and not timed_out.errored and timed_out.message == 'command "sleep 10" timed out'
    gone = await act({"exec": {"command": ["gone"]}}, runtime=runtime)
    assert gone.errored
    assert (await act({"exec": {"command": []}}, runtime=runtime)).errored


async def test_sleep_handler() -> None:
    assert (await act({"sleep": {"seconds": 0}}, purpose="hook")).ok
    cut = await act({"sleep": {"seconds": 30}}, purpose="hook", limit=0.05)
    assert not cut.ok and "terminated before sleep hook finished" in cut.message
    assert (await act({"sleep": {"seconds": "x"}}, purpose="hook")).errored


# --- gRPC health ----------------------------------------------------------------------------------


def test_health_messages_encode_and_decode() -> None:
    assert encode_health_request("") == b""
    assert encode_health_request("db") == b"\x0a\x02db"
    assert decode_health_response(b"\x08\x01") == 1
    assert decode_health_response(b"") == 0
    assert decode_health_response(b"\x12\x01x\x08\x02") == 2  # an unknown field first
    with pytest.raises(ValueError):
        decode_health_response(b"\x08")


@pytest.fixture
async def grpc_health() -> AsyncIterator[tuple[int, dict[str, int]]]:
    import grpc  # type: ignore[import-untyped]
    import grpc.aio  # type: ignore[import-untyped]

    statuses: dict[str, int] = {"": 1, "ok": 1, "down": 2}

    async def check(request: bytes, context: Any) -> bytes:
        service = request[2:].decode() if request else ""
        if service not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return b"\x08" + bytes([statuses[service]])

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    try:
        yield port, statuses
    finally:
        await server.stop(None)


async def test_grpc_health(grpc_health: tuple[int, dict[str, int]]) -> None:
    port, _ = grpc_health
    serving = await act({"grpc": {"port": port}})
    assert serving.ok, serving.message
    assert (await act({"grpc": {"port": port, "service": "ok"}})).ok
    down = await act({"grpc": {"port": port, "service": "down"}})
    assert not down.ok and down.message == 'service unhealthy (responded with "NOT_SERVING")'
    unknown = await act({"grpc": {"port": port, "service": "nope"}})
    assert not unknown.ok
    assert unknown.message == "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"


async def test_grpc_unimplemented_and_unreachable(http: Web) -> None:
    import grpc
    import grpc.aio

    server = grpc.aio.server()  # no services at all
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    try:
        result = await act({"grpc": {"port": port}})
        assert not result.ok and result.message.startswith("this server does not implement the grpc health protocol")
    finally:
        await server.stop(None)
    closed = free_port()
    refused = await act({"grpc": {"port": closed}}, limit=0.5)
    assert not refused.ok
    assert refused.message.startswith(f'timeout: failed to connect service "{LOOPBACK}:{closed}" within 0.5s')


# --- exec through the real runc runtime ------------------------------------------------------------


RUNC = shutil.which("runc") or "/usr/sbin/runc"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(RUNC), reason="needs root and runc")
async def test_exec_through_runc(tmp_path: Path) -> None:
    from microkube_runc import cgroups
    from microkube_runc.busybox import import_busybox
    from microkube_runc.runtime import create_runtime

    parent = os.path.join(cgroups.own_cgroup("memory"), f"mkprobe-{os.getpid()}")
    pack = create_runtime({"root": str(tmp_path / "runc"), "cgroupParent": parent, "runc": RUNC})
    rt = pack.runtime
    try:
        await import_busybox(pack.images)
        sandbox = cri.PodSandboxConfig(cri.PodSandboxMetadata("probe", "uid-probe", "default"),
                                       log_directory=str(tmp_path / "logs"))
        sid = await rt.run_pod_sandbox(sandbox)
        config = cri.ContainerConfig(cri.ContainerMetadata("app"), cri.ImageSpec("busybox"),
                                     command=("sh", "-c", "touch /tmp/healthy; exec sleep 3600"),
                                     log_path="app/0.log")
        cid = await rt.create_container(sid, config, sandbox)
        await rt.start_container(cid)

        async def run(command: list[str], limit: float = 5) -> ActionResult:
            return await run_action({"exec": {"command": command}}, runtime=rt, container_id=cid, pod_ip="",
                                    container={"name": "app"}, timeout=limit)

        assert (await run(["cat", "/tmp/healthy"])).ok
        missing = await run(["cat", "/tmp/missing"])
        assert not missing.ok and "/tmp/missing" in missing.message
        slow = await run(["sleep", "10"], limit=1)
        assert not slow.ok and slow.message == 'command "sleep 10" timed out'
    finally:
        for entry in await rt.list_pod_sandbox():
            await rt.remove_pod_sandbox(entry.id)
        await rt.close()
        cgroups.remove_tree(parent)


# --- the ProbeManager -----------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def pod(uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": uid}}


def http_probe(port: int, **fields: Any) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 1, **fields}


@pytest.fixture
async def manager() -> AsyncIterator[tuple[ProbeManager, list[str]]]:
    changes: list[str] = []
    probes = ProbeManager(FakeRuntime(), changes.append)  # type: ignore[arg-type]
    try:
        yield probes, changes
    finally:
        await probes.close()


async def test_readiness_transitions_with_thresholds(http: Web, manager: tuple[ProbeManager, list[str]]) -> None:
    probes, changes = manager
    container = {"name": "app", "readinessProbe": http_probe(http.port, successThreshold=2, failureThreshold=2)}
    http.status = 500
    probes.start(pod(), container, "c1", LOOPBACK)
    assert probes.started("uid-1", "app") and not probes.ready("uid-1", "app")
    await eventually(lambda: len(http.seen) >= 2)
    assert not probes.ready("uid-1", "app")
    failures = probes.failures("uid-1")
    assert failures and failures[0] == ProbeFailure("app", READINESS, "HTTP probe failed with statuscode: 500")
    assert event_message(READINESS, failures[0].message) == (
        "Readiness probe failed: HTTP probe failed with statuscode: 500")
    assert probes.last_failure("uid-1", "app", READINESS) == "HTTP probe failed with statuscode: 500"

    http.status = 200
    seen = len(http.seen)
    await eventually(lambda: probes.ready("uid-1", "app"))
    assert len(http.seen) >= seen + 2  # two successes needed
    assert "uid-1" in changes

    http.status = 503
    await eventually(lambda: not probes.ready("uid-1", "app"))
    assert probes.liveness_failed("uid-1", "app") is None


async def test_readiness_result_survives_probe_errors(http: Web, manager: tuple[ProbeManager, list[str]]) -> None:
    probes, _ = manager
    container = {"name": "app", "ports": [{"name": "web", "containerPort": http.port}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": "web"}, "periodSeconds": 1}}
    probes.start(pod(), container, "c1", LOOPBACK)
    await eventually(lambda: probes.ready("uid-1", "app"))
    # The same container under a spec whose port name no longer resolves: every run errors, ready stays.
    broken = {**container, "readinessProbe": {"httpGet": {"path": "/health", "port": "gone"}, "periodSeconds": 1}}
    probes.start(pod(), broken, "c1", LOOPBACK)
    assert not probes.ready("uid-1", "app")  # a new instance starts unready
    await eventually(lambda: probes.last_failure("uid-1", "app", READINESS) == "port gone not found")
    assert not probes.ready("uid-1", "app")


async def test_liveness_failure_and_replacement(http: Web, manager: tuple[ProbeManager, list[str]]) -> None:
    probes, changes = manager
    container = {"name": "app", "livenessProbe": http_probe(http.port, failureThreshold=2)}
    probes.start(pod(), container, "c1", LOOPBACK)
    await eventually(lambda: len(http.seen) >= 1)
    assert probes.ready("uid-1", "app") and probes.liveness_failed("uid-1", "app") is None
    http.status = 500
    await eventually(lambda: probes.liveness_failed("uid-1", "app") is not None)
    assert probes.liveness_failed("uid-1", "app") == "Container app failed liveness probe, will be restarted"
    kinds = {f.kind for f in probes.failures("uid-1")}
    assert kinds == {LIVENESS}
    assert changes.count("uid-1") >= 3  # two failures and the restart verdict

    http.status = 200
    probes.start(pod(), container, "c2", LOOPBACK)
    assert probes.liveness_failed("uid-1", "app") is None
    seen = len(http.seen)
    await eventually(lambda: len(http.seen) >= seen + 2)
    assert probes.liveness_failed("uid-1", "app") is None


async def test_startup_gates_liveness_and_readiness(http: Web, manager: tuple[ProbeManager, list[str]]) -> None:
    probes, _ = manager
    startup_port = free_port()
    container = {"name": "app",
                 "startupProbe": {"tcpSocket": {"port": startup_port}, "periodSeconds": 1, "failureThreshold": 30},
                 "livenessProbe": http_probe(http.port),
                 "readinessProbe": http_probe(http.port)}
    probes.start(pod(), container, "c1", LOOPBACK)
    await eventually(lambda: probes.last_failure("uid-1", "app", STARTUP) is not None)
    await asyncio.sleep(1.5)
    assert not probes.started("uid-1", "app") and not probes.ready("uid-1", "app")
    assert http.seen == []  # nothing else probed before the start

    listener = await asyncio.start_server(lambda r, w: w.close(), LOOPBACK, startup_port)
    try:
        await eventually(lambda: probes.started("uid-1", "app"))
        await eventually(lambda: probes.ready("uid-1", "app"))
        assert len(http.seen) >= 2  # liveness and readiness both ran
    finally:
        listener.close()
        await listener.wait_closed()


async def test_startup_failure_counts_as_liveness_failure(manager: tuple[ProbeManager, list[str]]) -> None:
    probes, _ = manager
    container = {"name": "app", "startupProbe": {"tcpSocket": {"port": free_port()}, "periodSeconds": 1,
                                                 "failureThreshold": 2}}
    probes.start(pod(), container, "c1", LOOPBACK)
    await eventually(lambda: probes.liveness_failed("uid-1", "app") is not None)
    assert probes.liveness_failed("uid-1", "app") == "Container app failed startup probe, will be restarted"
    assert not probes.started("uid-1", "app")


async def test_no_probes_stop_and_bad_specs(manager: tuple[ProbeManager, list[str]]) -> None:
    probes, _ = manager
    probes.start(pod(), {"name": "plain"}, "c1", LOOPBACK)
    assert probes.started("uid-1", "plain") and probes.ready("uid-1", "plain")
    probes.stop("uid-1")
    assert not probes.ready("uid-1", "plain") and probes.failures("uid-1") == []
    with pytest.raises(ValueError, match=r"livenessProbe\.periodSeconds"):
        probes.start(pod(), {"name": "app", "livenessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": -1}},
                     "c1", LOOPBACK)


async def test_initial_delay_holds_the_first_probe(http: Web, manager: tuple[ProbeManager, list[str]]) -> None:
    probes, _ = manager
    container = {"name": "app", "readinessProbe": http_probe(http.port, initialDelaySeconds=2)}
    probes.start(pod(), container, "c1", LOOPBACK)
    await asyncio.sleep(1)
    assert http.seen == []
    await eventually(lambda: probes.ready("uid-1", "app"))

