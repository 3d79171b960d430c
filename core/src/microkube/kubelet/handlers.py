"""The actions a probe or a lifecycle hook runs against a container: exec, httpGet, tcpSocket, grpc, sleep.

Behaviour and messages follow kubelet 1.32 (``pkg/probe/{exec,http,tcp,grpc}`` and
``pkg/kubelet/lifecycle/handlers.go``):

- exec: ``ExecSync`` in the container; exit 0 succeeds, otherwise the combined output (at most 10 KiB) is
  the message. A runtime timeout is a failure (``command "…" timed out``); any other runtime error is
  ``errored`` (a probe keeps its previous result then).
- httpGet: GET ``scheme://host:port/path`` with ``User-Agent: kube-probe/1.32`` and ``Accept: */*``
  unless the action's headers set them, no certificate verification, no keep-alive; redirects are
  followed (at most 10) only while they stay on the same host, otherwise the redirect itself answers
  (a success with a warning, as kubelet). Status 200-399 succeeds; anything else is
  ``HTTP probe failed with statuscode: N``. For a lifecycle hook (``purpose="hook"``) any HTTP answer
  succeeds, as kubelet only reports transport errors of hooks.
- tcpSocket: a TCP connect within the timeout.
- grpc: ``grpc.health.v1.Health/Check`` over plaintext HTTP/2 to ``pod_ip:port``; SERVING succeeds.
  The two messages are encoded by hand (field 1 of each), so no generated code is needed.
- sleep (hooks only): sleeps ``seconds``, cut short by ``timeout`` (the grace period).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from microkube_interfaces import cri
from microkube_interfaces.errors import MicrokubeError, Retryable

USER_AGENT = "kube-probe/1.32"
#: kubelet reads at most this much of a probe's output or response body.
MAX_OUTPUT = 10 * 1024
MAX_REDIRECTS = 10
GRPC_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
#: grpc.health.v1.HealthCheckResponse.ServingStatus
GRPC_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

Purpose = Literal["probe", "hook"]


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str = ""
    output: str = ""
    #: The action could not be carried out at all (unknown named port, container gone, no handler):
    #: kubelet throws such a probe result away and keeps the previous one.
    errored: bool = False


class PortError(ValueError):
    pass


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A probe's port: a number, a container port's name, or a number written as a string."""
    if isinstance(port, bool) or port is None:
        raise PortError(f"invalid port {port!r}: set a number or the name of one of the container's ports")
    if isinstance(port, int):
        number = port
    elif isinstance(port, str):
        for entry in container.get("ports") or []:
            if isinstance(entry, dict) and entry.get("name") == port:
                number = int(entry.get("containerPort") or 0)
                break
        else:
            if not port.isdigit():
                raise PortError(f"port {port} not found")
            number = int(port)
    else:
        raise PortError(f"invalid port {port!r}: set a number or the name of one of the container's ports")
    if not 0 < number < 65536:
        raise PortError(f"invalid port number: {number}")
    return number


def _join_host_port(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _go_duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _dial_error(hostport: str, exc: BaseException) -> str:
    """A connect error in the words of Go's net package (``dial tcp 10.0.0.5:80: connect: connection refused``)."""
    if isinstance(exc, TimeoutError):
        return f"dial tcp {hostport}: i/o timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET):
            return f"dial tcp {hostport}: connect: {os.strerror(exc.errno).lower()}"
        return f"dial tcp {hostport}: {os.strerror(exc.errno).lower()}"
    return f"dial tcp {hostport}: {exc}"


async def run_action(action: dict[str, Any], *, runtime: cri.RuntimeService, container_id: str, pod_ip: str,
                     container: dict[str, Any], timeout: float, purpose: Purpose = "probe") -> ActionResult:  # noqa: ASYNC109 (the contract)
    """Run one probe or lifecycle-handler action; ``timeout`` in seconds (0 or less: none, hooks only)."""
    try:
        if action.get("exec") is not None:
            return await _exec(action["exec"], runtime, container_id, timeout, purpose)
        if action.get("httpGet") is not None:
            return await _http_get(action["httpGet"], pod_ip, container, timeout, purpose)
        if action.get("tcpSocket") is not None:
            return await _tcp_socket(action["tcpSocket"], pod_ip, container, timeout)
        if action.get("grpc") is not None:
            if purpose == "hook":
                return ActionResult(False, "grpc is not a lifecycle handler: use exec, httpGet, tcpSocket or sleep",
                                    errored=True)
            return await _grpc(action["grpc"], pod_ip, container, timeout)
        if action.get("sleep") is not None:
            return await _sleep(action["sleep"], timeout)
    except PortError as exc:
        return ActionResult(False, str(exc), errored=True)
    handlers = "exec, httpGet, tcpSocket or grpc" if purpose == "probe" else "exec, httpGet, tcpSocket or sleep"
    return ActionResult(False, f"no handler: set one of {handlers}", errored=True)


# --- exec -----------------------------------------------------------------------------------------


async def _exec(spec: dict[str, Any], runtime: cri.RuntimeService, container_id: str, limit: float,
                purpose: Purpose) -> ActionResult:
    command = [str(c) for c in (spec.get("command") or [])]
    if not command:
        return ActionResult(False, "exec.command: required, the command to run in the container", errored=True)
    shown = " ".join(command)
    runtime_timeout = max(1, math.ceil(limit)) if limit > 0 else 0
    try:
        # The runtime enforces the timeout; the outer bound only guards against one that does not.
        response = await asyncio.wait_for(runtime.exec_sync(container_id, command, runtime_timeout),
                                          runtime_timeout + 5 if runtime_timeout else None)
    except (Retryable, TimeoutError):
        return ActionResult(False, f'command "{shown}" timed out')
    except MicrokubeError as exc:
        return ActionResult(False, f'command "{shown}" could not run: {exc}', errored=True)
    output = (response.stdout + response.stderr)[:MAX_OUTPUT].decode("utf-8", errors="replace")
    if response.exit_code == 0:
        return ActionResult(True, "", output)
    if purpose == "hook":
        return ActionResult(False, f"command '{shown}' exited with {response.exit_code}: {output}", output)
    return ActionResult(False, output, output)


# --- httpGet --------------------------------------------------------------------------------------


async def _http_get(spec: dict[str, Any], pod_ip: str, container: dict[str, Any], limit: float,
                    purpose: Purpose) -> ActionResult:
    port = resolve_port(spec.get("port"), container)
    scheme = str(spec.get("scheme") or "HTTP").lower()
    if scheme not in ("http", "https"):
        return ActionResult(False, f"httpGet.scheme: {spec.get('scheme')!r} is not HTTP or HTTPS", errored=True)
    host = str(spec.get("host") or pod_ip)
    path = str(spec.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    url_text = f"{scheme}://{_join_host_port(host, port)}{path}"
    try:
        url = URL(url_text, encoded=True)
    except ValueError as exc:
        return ActionResult(False, f'parse "{url_text}": {exc}', errored=True)
    headers: CIMultiDict[str] = CIMultiDict()
    for header in spec.get("httpHeaders") or []:
        if isinstance(header, dict) and header.get("name"):
            headers.add(str(header["name"]), str(header.get("value") or ""))
    headers.setdefault("User-Agent", USER_AGENT)
    headers.setdefault("Accept", "*/*")

    connector = aiohttp.TCPConnector(ssl=False, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=limit if limit > 0 else None)
    current = url
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with session.get(current, headers=headers, allow_redirects=False) as response:
                    body = (await response.content.read(MAX_OUTPUT)).decode("utf-8", errors="replace")
                    status = response.status
                    location = response.headers.get("Location")
            except TimeoutError:
                return ActionResult(False, f'Get "{current}": context deadline exceeded '
                                           f"(Client.Timeout exceeded while awaiting headers)")
            except aiohttp.ClientConnectorError as exc:
                return ActionResult(False, f'Get "{current}": '
                                           f"{_dial_error(_join_host_port(current.host or '', port), exc.os_error)}")
            except (aiohttp.ClientError, OSError) as exc:
                return ActionResult(False, f'Get "{current}": {str(exc) or type(exc).__name__}')
            if purpose == "hook":
                return ActionResult(True, "", body)
            if status in _REDIRECT_CODES and location:
                target = current.join(URL(location))
                if target.host == url.host:
                    current = target
                    continue
                return ActionResult(True, f"Probe terminated redirects, Response body: {body}", body)
            if 200 <= status < 400:
                return ActionResult(True, "", body)
            return ActionResult(False, f"HTTP probe failed with statuscode: {status}", body)
    return ActionResult(False, f'Get "{current}": stopped after {MAX_REDIRECTS} redirects')


# --- tcpSocket ------------------------------------------------------------------------------------


async def _tcp_socket(spec: dict[str, Any], pod_ip: str, container: dict[str, Any], limit: float) -> ActionResult:
    port = resolve_port(spec.get("port"), container)
    host = str(spec.get("host") or pod_ip)
    hostport = _join_host_port(host, port)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit if limit > 0 else None)
    except (OSError, TimeoutError) as exc:
        return ActionResult(False, _dial_error(hostport, exc))
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ActionResult(True)


# --- grpc -----------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_health_request(service: str) -> bytes:
    """grpc.health.v1.HealthCheckRequest{service = 1 (string)}; the empty string is the absent field."""
    data = service.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_health_response(data: bytes) -> int:
    """The ``status`` (field 1, varint) of a grpc.health.v1.HealthCheckResponse; unknown fields skipped."""
    status = 0
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < len(data):
        key = read_varint()
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = read_varint()
            if field_number == 1:
                status = value
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length = read_varint()  # read first: ``pos += read_varint()`` would add to the old position
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated message")
    return status


def _go_code(name: str) -> str:
    """grpc-go's spelling of a status code (``NOT_FOUND`` → ``NotFound``)."""
    special = {"OK": "OK", "CANCELLED": "Canceled"}
    return special.get(name) or "".join(part.capitalize() for part in name.split("_"))


def _identity(data: bytes) -> bytes:
    return data


async def _grpc(spec: dict[str, Any], pod_ip: str, container: dict[str, Any], limit: float) -> ActionResult:
    import grpc  # type: ignore[import-untyped]  # imported when a grpc probe first runs (~100 ms)
    import grpc.aio  # type: ignore[import-untyped]

    port = resolve_port(spec.get("port"), container)
    service = str(spec.get("service") or "")
    target = _join_host_port(pod_ip, port)
    limit = limit if limit > 0 else 1.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    channel = grpc.aio.insecure_channel(target, options=[("grpc.primary_user_agent", USER_AGENT),
                                                         ("grpc.enable_http_proxy", 0)])
    try:
        try:
            await asyncio.wait_for(channel.channel_ready(), limit)
        except TimeoutError:
            return ActionResult(False, f'timeout: failed to connect service "{target}" within '
                                       f"{_go_duration(limit)}: context deadline exceeded")
        check = channel.unary_unary(GRPC_HEALTH_METHOD, request_serializer=_identity,
                                    response_deserializer=_identity)
        try:
            reply = await check(encode_health_request(service), timeout=max(0.001, deadline - loop.time()))
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return ActionResult(False, "this server does not implement the grpc health protocol "
                                           f"(grpc.health.v1.Health): {exc.details()}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return ActionResult(False, f"timeout: health rpc did not complete within {_go_duration(limit)}")
            return ActionResult(False, "error: health rpc probe failed: "
                                       f"rpc error: code = {_go_code(code.name)} desc = {exc.details()}")
        try:
            status = decode_health_response(bytes(reply))
        except ValueError as exc:
            return ActionResult(False, f"error: health rpc probe failed: bad response: {exc}")
        name = GRPC_STATUS_NAMES.get(status, str(status))
        if status != 1:
            return ActionResult(False, f'service unhealthy (responded with "{name}")')
        return ActionResult(True, "service is serving")
    finally:
        await channel.close()


# --- sleep ----------------------------------------------------------------------------------------


async def _sleep(spec: dict[str, Any], limit: float) -> ActionResult:
    seconds = spec.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        return ActionResult(False, f"sleep.seconds: {seconds!r} must be a whole number of seconds, 0 or more",
                            errored=True)
    if 0 < limit < seconds:
        await asyncio.sleep(limit)
        return ActionResult(False, "container terminated before sleep hook finished")
    await asyncio.sleep(seconds)
    return ActionResult(True)
