"""Port-forward over WebSocket, two subprotocols.

``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31+): the WebSocket's binary messages carry the byte stream of
a SPDY/3.1 session (message boundaries mean nothing). For every local connection the client opens two
streams with headers ``streamType`` (``error`` or ``data``), ``port`` and ``requestID``; this side
connects to the port inside the pod and pumps the data stream both ways; a failure is written as text on
the error stream. When the pod side closes, both streams are finished (FIN), which ends the client's
connection.

``v4.channel.k8s.io`` with ``?ports=80,8080`` (the Python client): for the i-th port, channel 2i carries
data and 2i+1 errors; the first message on each of them is the port as 2 bytes, little endian.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from microkube.kubelet import spdy
from microkube_interfaces import cri, errors

log = logging.getLogger(__name__)

SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
CHANNELS = "v4.channel.k8s.io"
PROTOCOLS = (SPDY_TUNNEL, CHANNELS)
#: How long a data stream waits for its error stream (the client opens the error stream first).
PAIR_TIMEOUT = 10.0

Connect = Callable[[int], Awaitable[cri.PortStream]]


def _port(text: str, field: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise errors.Invalid.field(field, f"must be a port number, not {text!r}") from None
    if not 0 < port < 65536:
        raise errors.Invalid.field(field, f"must be 1-65535, not {port}")
    return port


async def serve(request: web.Request, connect: Connect, what: str) -> web.StreamResponse:
    socket = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    ready = socket.can_prepare(request)
    if not ready.ok or ready.protocol not in PROTOCOLS:
        raise errors.Invalid(f"port-forward needs a WebSocket upgrade with subprotocol {' or '.join(PROTOCOLS)}; "
                             "this kubelet does not take plain SPDY upgrades")
    if ready.protocol == CHANNELS:
        ports = [_port(p, "ports") for p in ",".join(request.query.getall("ports", [])).split(",") if p.strip()]
        if not ports:
            raise errors.Invalid.field("ports", "required with v4.channel.k8s.io: the ports to forward (ports=80,…)")
        await socket.prepare(request)
        await _serve_channels(socket, connect, ports, what)
    else:
        await socket.prepare(request)
        await _serve_spdy(socket, connect, what)
    return socket


# --- SPDY tunnel ----------------------------------------------------------------------------------


class _Pair:
    def __init__(self) -> None:
        self.error: spdy.Stream | None = None
        self.error_ready = asyncio.Event()


async def _serve_spdy(socket: web.WebSocketResponse, connect: Connect, what: str) -> None:
    pairs: dict[str, _Pair] = {}

    async def send(data: bytes) -> None:
        if socket.closed:
            raise ConnectionError("the port-forward WebSocket is closed")
        await socket.send_bytes(data)

    async def on_stream(stream: spdy.Stream) -> None:
        kind, request_id = stream.header("streamType"), stream.header("requestID")
        pair = pairs.setdefault(request_id, _Pair())
        if kind == "error":
            pair.error = stream
            pair.error_ready.set()
            return
        if kind != "data":
            await stream.send_reset(spdy.PROTOCOL_ERROR)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pair.error_ready.wait(), PAIR_TIMEOUT)
        try:
            await _forward_spdy(stream, pair.error, stream.header("port"), connect, what)
        finally:
            pairs.pop(request_id, None)

    session = spdy.Session(send, on_stream)
    try:
        async for message in socket:
            if message.type == WSMsgType.BINARY:
                await session.feed(message.data)
            elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    except spdy.ProtocolError as exc:
        log.info("port-forward to %s: %s", what, exc)
    except ConnectionError:
        pass
    finally:
        await session.close()
        await socket.close()


async def _forward_spdy(data: spdy.Stream, error: spdy.Stream | None, port_text: str, connect: Connect,
                        what: str) -> None:
    async def fail(message: str) -> None:
        with contextlib.suppress(ConnectionError):
            if error is not None:
                await error.write(message.encode(), fin=True)
            await data.close()

    try:
        port = _port(port_text, "port")
        target = await connect(port)
    except errors.MicrokubeError as exc:
        await fail(f"error forwarding port {port_text} to pod {what}: {exc}")
        return

    async def to_client() -> None:
        while chunk := await target.read(65536):
            await data.write(chunk)

    async def to_pod() -> None:
        while chunk := await data.read():
            await target.write(chunk)
        if not data.reset:
            close_write = getattr(target, "close_write", None)  # an optional half-close of the PortStream
            if close_write is not None:
                await close_write()
            await asyncio.Event().wait()  # the pod's side decides when the connection ends

    tasks = [asyncio.create_task(to_client()), asyncio.create_task(to_pod())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None and not isinstance(task.exception(), ConnectionError | OSError):
                await fail(f"error forwarding port {port} to pod {what}: {task.exception()}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await target.close()
        with contextlib.suppress(ConnectionError):
            await data.close()
            if error is not None:
                await error.close()


# --- v4 channels ----------------------------------------------------------------------------------


async def _serve_channels(socket: web.WebSocketResponse, connect: Connect, ports: list[int], what: str) -> None:
    targets: dict[int, cri.PortStream] = {}

    async def send(channel: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await socket.send_bytes(bytes([channel]) + data)

    for index, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await send(2 * index, prefix)
        await send(2 * index + 1, prefix)
        try:
            targets[index] = await connect(port)
        except errors.MicrokubeError as exc:
            await send(2 * index + 1, f"error forwarding port {port} to pod {what}: {exc}".encode())

    async def to_client(index: int, target: cri.PortStream) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await target.read(65536):
                await send(2 * index, chunk)

    pumps = [asyncio.create_task(to_client(i, t)) for i, t in targets.items()]

    async def all_closed() -> None:
        await asyncio.gather(*pumps)

    async def receive() -> None:
        async for message in socket:
            if message.type != WSMsgType.BINARY or len(message.data) < 2:
                continue
            channel, payload = message.data[0], message.data[1:]
            target = targets.get(channel // 2) if channel % 2 == 0 else None
            if target is not None:
                with contextlib.suppress(ConnectionError, OSError, errors.MicrokubeError):
                    await target.write(payload)

    receiver = asyncio.create_task(receive())
    closed = asyncio.create_task(all_closed())
    try:
        await asyncio.wait([receiver, closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        receiver.cancel()
        closed.cancel()
        await asyncio.gather(receiver, closed, *pumps, return_exceptions=True)
        for target in targets.values():
            await target.close()
        await socket.close()
