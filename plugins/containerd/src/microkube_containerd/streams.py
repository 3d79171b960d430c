"""exec, attach and port-forward through a CRI streaming server's URL, spoken as WebSocket.

The URL a runtime returns for Exec/Attach/PortForward is a one-time token on its streaming server (the
Kubernetes remote-command and port-forward handlers). Over WebSocket with subprotocol
``v4.channel.k8s.io`` every binary message starts with a channel byte: exec/attach use 0 stdin, 1 stdout,
2 stderr, 3 error (a Status JSON when the process ends) and 4 resize (``{"Width":…,"Height":…}``);
port-forward uses 0 data and 1 error for the one port, and the server first sends the port number
(2 bytes, little endian) on each. v4 cannot half-close stdin: ``close_stdin`` does so only when the
server speaks ``v5.channel.k8s.io`` (channel 255); over v4 (containerd 1.6's streaming server) it raises
Unsupported rather than pretend the process saw end of file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from microkube_interfaces.errors import Retryable, Unsupported

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def _ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


async def _connect(url: str, protocols: tuple[str, ...]) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(_ws_url(url), protocols=protocols, max_msg_size=0, autoping=True)
    except (aiohttp.ClientError, OSError) as exc:
        await session.close()
        raise Retryable(f"streaming server {url}: {exc}") from None
    return session, ws


class _Pipe:
    """Bytes from one channel, readable in pieces of at most ``n``; ``b""`` after end of stream."""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._rest = b""
        self._eof = False

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.put_nowait(data)

    def end(self) -> None:
        self._chunks.put_nowait(b"")

    async def read(self, n: int) -> bytes:
        if not self._rest:
            if self._eof:
                return b""
            self._rest = await self._chunks.get()
            if not self._rest:
                self._eof = True
                self._chunks.put_nowait(b"")
                return b""
        data, self._rest = self._rest[:n], self._rest[n:]
        return data


def exit_code_of(status: dict[str, Any]) -> int:
    """The exit code in the Status JSON a remote-command server sends on the error channel."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    return 126


class WebSocketStream:
    """cri.ContainerStream over one WebSocket to the runtime's streaming server."""

    def __init__(self, session: aiohttp.ClientSession, ws: Any, *, tty: bool, stdin: bool,
                 exit_code: Callable[[], Awaitable[int]] | None = None) -> None:
        self._session, self._ws = session, ws
        self.tty, self.stdin = tty, stdin
        self._stdout, self._stderr = _Pipe(), _Pipe()
        self._status: dict[str, Any] | None = None
        self._exit_code = exit_code
        self._v5 = ws.protocol == "v5.channel.k8s.io"
        self._stdin_closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if tty:
            self._stderr.end()

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel == STDOUT:
                    self._stdout.feed(data)
                elif channel == STDERR:
                    self._stderr.feed(data)
                elif channel == ERROR and data:
                    with contextlib.suppress(ValueError):
                        self._status = json.loads(data)
        finally:
            self._stdout.end()
            if not self.tty:
                self._stderr.end()

    async def write_stdin(self, data: bytes) -> None:
        if not self.stdin:
            raise Unsupported("stdin: the stream was opened without stdin")
        if self._stdin_closed:
            raise Unsupported("stdin: already closed")
        await self._ws.send_bytes(bytes([STDIN]) + data)

    async def close_stdin(self) -> None:
        if self._stdin_closed or not self.stdin:
            return
        if not self._v5:
            raise Unsupported(f"close_stdin: the streaming server speaks {self._ws.protocol or 'no subprotocol'}, "
                              "which cannot signal end of input (v5.channel.k8s.io can)")
        self._stdin_closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.send_bytes(bytes([CLOSE, STDIN]))

    async def read_stdout(self, n: int = 65536) -> bytes:
        return await self._stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        return await self._stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        if self.tty:
            await self._ws.send_bytes(bytes([RESIZE]) + json.dumps({"Width": width, "Height": height}).encode())

    async def wait(self) -> int:
        await asyncio.shield(self._reader)
        if self._exit_code is not None:
            return await self._exit_code()
        return exit_code_of(self._status or {"status": "Success"})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._session.close()


async def open_exec_stream(url: str, *, tty: bool, stdin: bool,
                           exit_code: Callable[[], Awaitable[int]] | None = None) -> WebSocketStream:
    session, ws = await _connect(url, PROTOCOLS)
    return WebSocketStream(session, ws, tty=tty, stdin=stdin, exit_code=exit_code)


class WebSocketPortStream:
    """cri.PortStream: one TCP connection into the sandbox through the streaming server."""

    def __init__(self, session: aiohttp.ClientSession, ws: Any, port: int) -> None:
        self._session, self._ws, self.port = session, ws, port
        self._data = _Pipe()
        self._prefix_seen: set[int] = set()
        self.error = b""
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel not in self._prefix_seen:
                    self._prefix_seen.add(channel)  # the first message of a channel is its port number
                    data = data[2:]
                if channel == 0:
                    self._data.feed(data)
                elif channel == 1 and data:
                    self.error += data
        finally:
            self._data.end()

    async def read(self, n: int = 65536) -> bytes:
        return await self._data.read(n)

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(b"\x00" + data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._session.close()


async def open_port_stream(url: str, port: int) -> WebSocketPortStream:
    session, ws = await _connect(url, ("v4.channel.k8s.io",))
    return WebSocketPortStream(session, ws, port)
