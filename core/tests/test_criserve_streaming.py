"""cri-serve's streaming server, over real gRPC and real WebSockets, against a fake runtime.

The end-to-end proof (runc behind cri-serve, the containerd pack's client) is the CRI suite in
plugins/containerd/tests/test_criserve_cri_conformance.py; these cases pin the parts the suite cannot reach:
tokens are single use and expire (an injected clock, no sleeping), bad flags are INVALID_ARGUMENT naming the
field, unknown containers and sandboxes NOT_FOUND, undeclared capabilities UNIMPLEMENTED, and the session
takes its flags and ports from the token's request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import pytest

from microkube import criserve
from microkube.criserve_streaming import TOKEN_TTL, parse_address
from microkube_interfaces import cri, errors
from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb

RUNNING, CREATED = "c-running", "c-created"
READY = "s-ready"


class EchoStream:
    """A ContainerStream whose process writes ``out`` and ``err``, echoes stdin to stdout and exits 3 at EOF."""

    def __init__(self, stdin: bool) -> None:
        self.stdin = stdin
        self.stdout: asyncio.Queue[bytes] = asyncio.Queue()
        self.stdout.put_nowait(b"out\n")
        if not stdin:
            self.stdout.put_nowait(b"")
        self.stderr = b"err\n"
        self.closed = False

    async def write_stdin(self, data: bytes) -> None:
        self.stdout.put_nowait(data)

    async def close_stdin(self) -> None:
        self.stdout.put_nowait(b"")

    async def read_stdout(self, n: int = 65536) -> bytes:
        return await self.stdout.get()

    async def read_stderr(self, n: int = 65536) -> bytes:
        data, self.stderr = self.stderr, b""
        return data

    async def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        return 3

    async def close(self) -> None:
        self.closed = True


class EchoPort:
    def __init__(self, port: int) -> None:
        self.data: asyncio.Queue[bytes] = asyncio.Queue()
        self.data.put_nowait(f"port {port}\n".encode())

    async def read(self, n: int = 65536) -> bytes:
        return await self.data.get()

    async def write(self, data: bytes) -> None:
        self.data.put_nowait(data.upper())

    async def close(self) -> None:
        self.data.put_nowait(b"")


class FakeRuntime:
    """Only what the streaming server calls: a running and a created container, a ready sandbox."""

    def __init__(self) -> None:
        self.execs: list[tuple[str, list[str], bool, bool]] = []

    async def container_status(self, container_id: str, verbose: bool = False) -> cri.ContainerStatus:
        states = {RUNNING: cri.ContainerState.CONTAINER_RUNNING, CREATED: cri.ContainerState.CONTAINER_CREATED}
        if container_id not in states:
            raise errors.NotFound(f"container {container_id} not found")
        return cri.ContainerStatus(id=container_id, metadata=cri.ContainerMetadata(name="app"),
                                   state=states[container_id], created_at=1)

    async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> cri.PodSandboxStatus:
        if pod_sandbox_id != READY:
            raise errors.NotFound(f"pod sandbox {pod_sandbox_id} not found")
        return cri.PodSandboxStatus(id=READY, metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"),
                                    state=cri.PodSandboxState.SANDBOX_READY, created_at=1)

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool = False,
                   stdin: bool = False) -> EchoStream:
        self.execs.append((container_id, cmd, tty, stdin))
        return EchoStream(stdin)

    async def attach(self, container_id: str, *, stdin: bool = False) -> EchoStream:
        return EchoStream(stdin)

    async def port_forward(self, pod_sandbox_id: str, port: int) -> EchoPort:
        return EchoPort(port)


@dataclasses.dataclass
class FakePack:
    runtime: FakeRuntime
    capabilities: cri.RuntimeCapabilities
    images: Any = None


ALL = cri.RuntimeCapabilities(supports_exec_streaming=True, supports_attach=True, supports_tty=True,
                              supports_port_forward=True)


@dataclasses.dataclass
class Served:
    runtime: FakeRuntime
    channel: Any
    now: list[float]

    async def call(self, method: str, request: Any) -> Any:
        response: dict[str, Any] = {"Exec": pb.ExecResponse, "Attach": pb.AttachResponse,
                                    "PortForward": pb.PortForwardResponse}
        rpc = self.channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response[method].FromString)
        return await rpc(request, timeout=10)

    async def fails(self, method: str, request: Any, code: str) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.call(method, request)
        assert info.value.code() == grpc.StatusCode[code], info.value.details()
        return str(info.value.details())


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mk-crisrv-") as d:  # short: unix socket paths are limited
        yield Path(d)


async def _serve(socket_dir: Path, capabilities: cri.RuntimeCapabilities) -> AsyncIterator[Served]:
    runtime, now, stop, ready = FakeRuntime(), [0.0], asyncio.Event(), asyncio.Event()
    sock = socket_dir / "cri.sock"
    task = asyncio.create_task(criserve.serve(FakePack(runtime, capabilities), sock, ready=ready.set, stop=stop,
                                              clock=lambda: now[0]))
    await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    channel = grpc.aio.insecure_channel(f"unix://{sock}")
    try:
        yield Served(runtime, channel, now)
    finally:
        await channel.close()
        stop.set()
        await task


@pytest.fixture
async def served(socket_dir: Path) -> AsyncIterator[Served]:
    async for s in _serve(socket_dir, ALL):
        yield s


@pytest.fixture
async def served_plain(socket_dir: Path) -> AsyncIterator[Served]:
    """A runtime that declares exec streaming and port-forward only (runc's set)."""
    async for s in _serve(socket_dir, dataclasses.replace(ALL, supports_attach=False, supports_tty=False)):
        yield s


async def _session(url: str, *, send: bytes = b"", protocol: str = "v5.channel.k8s.io") -> dict[int, bytes]:
    """Open ``url`` as a remote-command WebSocket, send ``send`` on stdin (then close it, v5), collect channels."""
    got: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http://", "ws://"),
                                                                      protocols=(protocol,)) as ws:
        if send:
            await ws.send_bytes(b"\x00" + send)
            await ws.send_bytes(b"\xff\x00")
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                got[message.data[0]] = got.get(message.data[0], b"") + message.data[1:]
    return got


async def _refused(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(url.replace("http://", "ws://"), protocols=("v5.channel.k8s.io",))
        return info.value.status


def _exec(container_id: str = RUNNING, **flags: bool) -> pb.ExecRequest:
    return pb.ExecRequest(container_id=container_id, cmd=["sh", "-c", "x"],
                          **({"stdout": True, "stderr": True} | flags))


async def test_exec_session_uses_the_token_request(served: Served) -> None:
    """The URL serves one exec with the request's flags: stdin in, stdout out, stderr not asked for and not sent,
    the exit code in the final status."""
    url = (await served.call("Exec", _exec(stdin=True, stderr=False))).url
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    got = await _session(url + "?stderr=true", send=b"hello\n")  # the client's query is not the request
    assert got[1] == b"out\nhello\n" and 2 not in got
    status = json.loads(got[3])
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "3"
    assert served.runtime.execs == [(RUNNING, ["sh", "-c", "x"], False, True)]


async def test_token_single_use(served: Served) -> None:
    """A URL serves one connection; a second use is 404."""
    url = (await served.call("Exec", _exec())).url
    assert (await _session(url))[2] == b"err\n"
    assert await _refused(url) == 404
    assert await _refused(url.replace("/exec/", "/attach/")) == 404
    other = (await served.call("Exec", _exec())).url
    assert other != url


async def test_token_expiry(served: Served) -> None:
    """A URL not used within the token TTL (one minute) is 404; one used just before it works."""
    early = (await served.call("Exec", _exec())).url
    late = (await served.call("Exec", _exec())).url
    served.now[0] += TOKEN_TTL - 1
    assert 1 in await _session(early)
    served.now[0] += 1
    assert await _refused(late) == 404


async def test_token_path_must_match_the_call(served: Served) -> None:
    """An exec token on the attach path is refused (and used up)."""
    url = (await served.call("Exec", _exec())).url
    assert await _refused(url.replace("/exec/", "/attach/")) == 404
    assert await _refused(url) == 404


async def test_bad_flags_are_invalid_argument(served: Served) -> None:
    """Exec/Attach: at least one of stdin, stdout, stderr; tty excludes stderr; a command is required — each
    INVALID_ARGUMENT naming the field."""
    none = await served.fails("Exec", _exec(stdout=False, stderr=False), "INVALID_ARGUMENT")
    assert "stdin" in none and "stdout" in none and "stderr" in none
    assert "stderr" in await served.fails("Exec", _exec(tty=True), "INVALID_ARGUMENT")
    assert "cmd" in await served.fails("Exec", pb.ExecRequest(container_id=RUNNING, stdout=True),
                                       "INVALID_ARGUMENT")
    assert "stderr" in await served.fails("Attach", pb.AttachRequest(container_id=RUNNING, tty=True, stdout=True,
                                                                     stderr=True), "INVALID_ARGUMENT")
    assert "stdin" in await served.fails("Attach", pb.AttachRequest(container_id=RUNNING), "INVALID_ARGUMENT")
    assert "port" in await served.fails("PortForward", pb.PortForwardRequest(pod_sandbox_id=READY, port=[0]),
                                        "INVALID_ARGUMENT")


async def test_unknown_and_not_running(served: Served) -> None:
    """Unknown containers and sandboxes are NOT_FOUND; a container that is not running is INVALID_ARGUMENT."""
    await served.fails("Exec", _exec("nope"), "NOT_FOUND")
    await served.fails("Attach", pb.AttachRequest(container_id="nope", stdout=True), "NOT_FOUND")
    await served.fails("PortForward", pb.PortForwardRequest(pod_sandbox_id="nope", port=[80]), "NOT_FOUND")
    assert "not running" in await served.fails("Exec", _exec(CREATED), "INVALID_ARGUMENT")


async def test_undeclared_capabilities_unimplemented(served_plain: Served) -> None:
    """What the runtime does not declare (here attach and tty) is UNIMPLEMENTED at the call."""
    await served_plain.fails("Attach", pb.AttachRequest(container_id=RUNNING, stdout=True), "UNIMPLEMENTED")
    await served_plain.fails("Exec", _exec(tty=True, stderr=False), "UNIMPLEMENTED")
    assert (await served_plain.call("Exec", _exec())).url


async def test_attach_session(served: Served) -> None:
    url = (await served.call("Attach", pb.AttachRequest(container_id=RUNNING, stdin=True, stdout=True,
                                                        stderr=True))).url
    got = await _session(url, send=b"in\n")
    assert got[1] == b"out\nin\n" and got[2] == b"err\n"


async def test_port_forward_ports_from_the_request(served: Served) -> None:
    """v4 channels carry the request's ports (the client names none); data goes both ways."""
    url = (await served.call("PortForward", pb.PortForwardRequest(pod_sandbox_id=READY, port=[8080]))).url
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http://", "ws://"),
                                                                      protocols=("v4.channel.k8s.io",)) as ws:
        first = [await ws.receive_bytes(timeout=10) for _ in range(2)]
        assert sorted(first) == [b"\x00" + struct.pack("<H", 8080), b"\x01" + struct.pack("<H", 8080)]
        assert await ws.receive_bytes(timeout=10) == b"\x00port 8080\n"
        await ws.send_bytes(b"\x00ping")
        assert await ws.receive_bytes(timeout=10) == b"\x00PING"


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:10010") == ("127.0.0.1", 10010)
    assert parse_address("[::1]:0") == ("::1", 0)
    assert parse_address("localhost") == ("localhost", 0)
    for bad, words in (("0.0.0.0:1", "unspecified"), ("127.0.0.1:x", "not a number"), ("host.example:1", "IP"),
                       ("127.0.0.1:70000", "between"), (":1", "HOST:PORT")):
        with pytest.raises(errors.Invalid, match=words) as info:
            parse_address(bad)
        assert "--streaming-address" in str(info.value)
