"""exec and attach over WebSocket: Kubernetes' remote-command channel protocol.

Subprotocols ``v5.channel.k8s.io`` (kubectl 1.30+) and ``v4.channel.k8s.io`` (the Python client): every
binary message is one channel byte and data. Channels: 0 stdin, 1 stdout, 2 stderr, 3 the final status (a
JSON metav1.Status: Success, or Failure with reason NonZeroExitCode and the exit code in
``details.causes``), 4 terminal resize (``{"Width": w, "Height": h}``). v5 adds the client's close message
``[255, channel]``, with which kubectl says stdin is at its end (``echo x | kubectl exec -i ... -- cat``).

A runtime without terminal support (``supports_tty`` false) answers a ``tty`` request with a Failure status
naming the limitation; ``kubectl exec -it`` then prints it and exits 1 (``kubectl exec -i`` works).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from microkube_interfaces import cri, errors

log = logging.getLogger(__name__)

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

OpenStream = Callable[[bool, bool], Awaitable[cri.ContainerStream]]


def flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "").lower()
    if value in ("true", "1"):
        return True
    if value in ("", "false", "0"):
        return False
    raise errors.Invalid.field(name, f"must be true or false, not {query[name]!r}")


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def failure(message: str, reason: str = "InternalError") -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason}


def exit_status(code: int, command: list[str]) -> dict[str, Any]:
    if code == 0:
        return success()
    where = f"error executing command {command}, exit code {code}" if command else f"exit code {code}"
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: {where}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def websocket_for(request: web.Request, what: str) -> web.WebSocketResponse:
    """The WebSocket response for a remote-command request, or errors.Invalid explaining what is needed."""
    socket = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    ready = socket.can_prepare(request)
    if not ready.ok or ready.protocol not in PROTOCOLS:
        raise errors.Invalid(f"{what} needs a WebSocket upgrade with subprotocol {' or '.join(PROTOCOLS)}; "
                             "this kubelet does not speak SPDY for exec and attach")
    return socket


async def serve(request: web.Request, open_stream: OpenStream, *, what: str, command: list[str]) -> web.StreamResponse:
    """Run one exec/attach session on ``request`` (already checked for everything but the runtime)."""
    query = request.query
    stdin, stdout, stderr, tty = (flag(query, n) for n in ("stdin", "stdout", "stderr", "tty"))
    if not (stdin or stdout or stderr):
        raise errors.Invalid("you must specify at least one of stdin, stdout, stderr")
    socket = websocket_for(request, what)
    await socket.prepare(request)
    v5 = socket.ws_protocol == PROTOCOLS[0]
    try:
        stream = await open_stream(tty, stdin)
    except errors.MicrokubeError as exc:
        await _send(socket, ERROR, orjson.dumps(failure(f"{what}: {exc}")))
        await socket.close()
        return socket
    try:
        await _session(socket, stream, stdin=stdin, stdout=stdout, stderr=stderr and not tty, v5=v5,
                       command=command)
    finally:
        await stream.close()
        if not socket.closed:
            await socket.close()
    return socket


async def _send(socket: web.WebSocketResponse, channel: int, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await socket.send_bytes(bytes([channel]) + data)


async def _session(socket: web.WebSocketResponse, stream: cri.ContainerStream, *, stdin: bool, stdout: bool,
                   stderr: bool, v5: bool, command: list[str]) -> None:
    async def pump(read: Callable[[int], Awaitable[bytes]], channel: int, forward: bool) -> None:
        while True:
            data = await read(65536)
            if not data:
                return
            if forward:
                await _send(socket, channel, data)

    async def receive() -> None:
        async for message in socket:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, data = message.data[0], message.data[1:]
            if channel == STDIN and stdin and data:
                try:
                    await stream.write_stdin(data)
                except (OSError, errors.MicrokubeError):
                    pass  # the process closed its stdin; its output and exit still arrive
            elif channel == RESIZE and data:
                with contextlib.suppress(ValueError, KeyError, TypeError, errors.MicrokubeError):
                    size = orjson.loads(data)
                    await stream.resize(int(size["Width"]), int(size["Height"]))
            elif channel == CLOSE and v5 and data[:1] == bytes([STDIN]) and stdin:
                with contextlib.suppress(OSError, errors.MicrokubeError):
                    await stream.close_stdin()

    async def run() -> int:
        await asyncio.gather(pump(stream.read_stdout, STDOUT, stdout), pump(stream.read_stderr, STDERR, stderr))
        return await stream.wait()

    runner = asyncio.create_task(run())
    receiver = asyncio.create_task(receive())
    try:
        done, _ = await asyncio.wait({runner, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            code = runner.result()
            await _send(socket, ERROR, orjson.dumps(exit_status(code, command)))
        # else: the client went away; closing the stream ends the process
    finally:
        for task in (runner, receiver):
            task.cancel()
        await asyncio.gather(runner, receiver, return_exceptions=True)
