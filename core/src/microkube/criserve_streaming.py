"""cri-serve's streaming server: the URLs CRI Exec, Attach and PortForward answer with.

In CRI a streaming call is two steps: the gRPC call checks the request and returns a URL with a one-time token
(``/exec/<token>``, ``/attach/<token>``, ``/portforward/<token>``); the client (the kubelet, or the containerd
pack's ``streams``) then opens that URL as a WebSocket. Tokens are unguessable, single use and expire after
``ttl`` seconds (one minute, as the Kubernetes streaming server); at most ``max_in_flight`` wait at once.

The WebSocket side is the kubelet API's: ``kubelet.remotecommand.serve`` (``v5.channel.k8s.io`` and
``v4.channel.k8s.io``; v5 lets the client half-close stdin) and ``kubelet.portforward.serve`` (v4 channels
or the SPDY/3.1 tunnel). They read the session's flags (``stdin``, ``stdout``, ``stderr``, ``tty``) and
ports (``ports``) from the query string; here those come from the token's request, never from the client's
URL, so the request is handed on with its query replaced by the token's. A port-forward through the SPDY
tunnel names its ports per stream; those must be among the request's ports when it listed any (the kubelet
sends none for SPDY clients).

What is served follows the pack's ``RuntimeCapabilities``: exec streaming, attach, tty and port-forward the
runtime does not declare are refused as Unsupported at the gRPC call.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from microkube.kubelet import portforward, remotecommand
from microkube_interfaces import cri, errors

log = logging.getLogger(__name__)

#: How long a URL may wait for its connection (the Kubernetes streaming server's token TTL).
TOKEN_TTL = 60.0
#: Tokens waiting at once; beyond that a streaming call is refused as Retryable.
MAX_IN_FLIGHT = 1000
DEFAULT_ADDRESS = ("127.0.0.1", 0)


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    #: Empty: any port the client names (SPDY streams carry their port).
    ports: tuple[int, ...] = ()


Request = ExecRequest | AttachRequest | PortForwardRequest
R = TypeVar("R", ExecRequest, AttachRequest, PortForwardRequest)
_PATHS: dict[type[Any], str] = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``HOST`` (a free port), as given to ``--streaming-address``; errors.Invalid otherwise."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else None)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    what = f"--streaming-address {value!r}"
    if port_text is None or not host:
        raise errors.Invalid(f"{what}: give HOST:PORT (e.g. 127.0.0.1:10010, [::1]:10010) or HOST")
    try:
        port = int(port_text) if port_text else 0
    except ValueError:
        raise errors.Invalid(f"{what}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise errors.Invalid(f"{what}: port must be between 0 and 65535 (0: a free port)")
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise errors.Invalid(f"{what}: host must be an IP address (or localhost)") from None
        if address.is_unspecified:
            raise errors.Invalid(f"{what}: the URLs handed out name this address, so give one clients can reach "
                                 "(e.g. 127.0.0.1 or the node's IP), not the unspecified address")
    return host, port


class StreamingServer:
    """The HTTP side of CRI's streaming calls for one runtime; ``exec``/``attach``/``port_forward`` issue URLs."""

    def __init__(self, runtime: cri.RuntimeService, capabilities: cri.RuntimeCapabilities, *,
                 address: tuple[str, int] = DEFAULT_ADDRESS, ttl: float = TOKEN_TTL,
                 max_in_flight: int = MAX_IN_FLIGHT, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.capabilities = capabilities
        self.host, self.port = address
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._tokens: dict[str, tuple[float, Request]] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/exec/{token}", self._exec)
        app.router.add_get("/attach/{token}", self._attach)
        app.router.add_get("/portforward/{token}", self._port_forward)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise errors.Invalid(f"--streaming-address {self.host}:{self.port}: cannot listen: "
                                 f"{exc.strerror or exc}") from None
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("CRI streaming server on %s", self.base_url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._tokens.clear()

    # --- the gRPC side: check a request, hand out its URL --------------------------------------

    async def exec(self, request: ExecRequest) -> str:
        if not self.capabilities.supports_exec_streaming:
            raise errors.Unsupported("Exec: the runtime declares no exec streaming; use ExecSync")
        if request.tty and not self.capabilities.supports_tty:
            raise errors.Unsupported("Exec: tty: the runtime declares no terminals; run the command without tty")
        if not request.cmd:
            raise errors.Invalid.field("cmd", "required: the command to run")
        _check_flags(request)
        await self._require_running(request.container_id)
        return self._issue(request)

    async def attach(self, request: AttachRequest) -> str:
        if not self.capabilities.supports_attach:
            raise errors.Unsupported("Attach: the runtime declares no attach (a container's output is in its log)")
        if request.tty and not self.capabilities.supports_tty:
            raise errors.Unsupported("Attach: tty: the runtime declares no terminals")
        _check_flags(request)
        await self._require_running(request.container_id)
        return self._issue(request)

    async def port_forward(self, request: PortForwardRequest) -> str:
        if not self.capabilities.supports_port_forward:
            raise errors.Unsupported("PortForward: the runtime declares no port-forward")
        for port in request.ports:
            if not 0 < port < 65536:
                raise errors.Invalid.field("port", f"must be 1-65535, not {port}")
        status = await self.runtime.pod_sandbox_status(request.pod_sandbox_id)
        if status.state != cri.PodSandboxState.SANDBOX_READY:
            raise errors.Invalid(f"pod sandbox {request.pod_sandbox_id}: not ready ({status.state.name}); "
                                 "port-forward needs a ready one")
        return self._issue(request)

    async def _require_running(self, container_id: str) -> None:
        status = await self.runtime.container_status(container_id)
        if status.state != cri.ContainerState.CONTAINER_RUNNING:
            raise errors.Invalid(f"container {container_id}: not running ({status.state.name})")

    def _issue(self, request: Request) -> str:
        now = self.clock()
        for token, (expires, _) in list(self._tokens.items()):
            if expires <= now:
                del self._tokens[token]
        if len(self._tokens) >= self.max_in_flight:
            raise errors.Retryable(f"{len(self._tokens)} streaming requests are waiting for their connection; "
                                   "try again shortly")
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (now + self.ttl, request)
        return f"{self.base_url}/{_PATHS[type(request)]}/{token}"

    def consume(self, token: str, kind: type[R]) -> R:
        """The request of ``token``, which is used up; NotFound when unknown, used, expired or of another kind."""
        expires, request = self._tokens.pop(token, (0.0, None))
        if request is None or expires <= self.clock():
            raise errors.NotFound("unknown or expired streaming token: ask the runtime for a new URL")
        if not isinstance(request, kind):
            raise errors.NotFound(f"the token is for /{_PATHS[type(request)]}, not /{_PATHS[kind]}")
        return request

    # --- the HTTP side ---------------------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        exec_request = self.consume(request.match_info["token"], ExecRequest)
        runtime, cmd = self.runtime, list(exec_request.cmd)

        async def open_stream(tty: bool, stdin: bool) -> cri.ContainerStream:
            return await runtime.exec(exec_request.container_id, cmd, tty=tty, stdin=stdin)

        return await remotecommand.serve(_with_query(request, _flags(exec_request)), open_stream, what="exec",
                                         command=cmd)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        attach_request = self.consume(request.match_info["token"], AttachRequest)
        runtime = self.runtime

        async def open_stream(tty: bool, stdin: bool) -> cri.ContainerStream:
            return await runtime.attach(attach_request.container_id, stdin=stdin)

        return await remotecommand.serve(_with_query(request, _flags(attach_request)), open_stream, what="attach",
                                         command=[])

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        forward = self.consume(request.match_info["token"], PortForwardRequest)
        runtime, sandbox = self.runtime, forward.pod_sandbox_id

        async def connect(port: int) -> cri.PortStream:
            if forward.ports and port not in forward.ports:
                raise errors.Invalid.field("port", f"{port} is not among the ports of the PortForward request "
                                                   f"({', '.join(map(str, forward.ports))})")
            return await runtime.port_forward(sandbox, port)

        query = {"ports": ",".join(map(str, forward.ports))} if forward.ports else {}
        return await portforward.serve(_with_query(request, query), connect, f"sandbox {sandbox}")


def _check_flags(request: ExecRequest | AttachRequest) -> None:
    if not (request.stdin or request.stdout or request.stderr):
        raise errors.Invalid("stdin, stdout, stderr: at least one must be true",
                             [errors.FieldError(name, "at least one of stdin, stdout, stderr must be true")
                              for name in ("stdin", "stdout", "stderr")])
    if request.tty and request.stderr:
        raise errors.Invalid.field("stderr", "must be false with tty: a terminal carries stderr on stdout")


def _flags(request: ExecRequest | AttachRequest) -> dict[str, str]:
    return {name: "true" if getattr(request, name) else "false" for name in ("stdin", "stdout", "stderr", "tty")}


def _with_query(request: web.Request, query: dict[str, str]) -> web.Request:
    return request.clone(rel_url=request.rel_url.with_query(query))


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.NotFound as exc:
        return web.Response(status=404, text=f"{exc}\n")
    except (errors.Invalid, errors.Unsupported) as exc:
        return web.Response(status=400, text=f"{exc}\n")
    except errors.Retryable as exc:
        return web.Response(status=503, text=f"{exc}\n")
    except errors.MicrokubeError as exc:
        return web.Response(status=500, text=f"{exc}\n")
