"""The kubelet API: an aiohttp HTTPS server on the node, the real kubelet's paths.

- ``GET /healthz``
- ``GET /containerLogs/{namespace}/{pod}/{container}`` (follow, previous, sinceSeconds, sinceTime,
  timestamps, tailLines, limitBytes)
- ``GET /exec/{namespace}/{pod}/{container}?command=…`` and ``GET /attach/…``: WebSocket remote command
  (remotecommand.py)
- ``GET /portForward/{namespace}/{pod}``: WebSocket, SPDY/3.1 tunnelled or v4 channels (portforward.py)

Callers authenticate with a client certificate signed by ``client_ca_file`` (the API server's
kube-apiserver-kubelet-client) or, when ``authenticate_token`` is given, with a bearer token; anyone else
gets 401. Errors are metav1.Status JSON with the matching code, which the API server passes through.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from microkube.kubelet import portforward, remotecommand
from microkube.kubelet.logs import LogOptions, stream_log
from microkube_interfaces import cri, errors

log = logging.getLogger(__name__)

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
_USER_KEY = web.RequestKey("microkube.kubelet.user", str)


@dataclass(frozen=True)
class ContainerLocation:
    container_id: str  # CRI container id of the instance
    log_path: str  # absolute path of its CRI log file
    running: bool
    tty: bool = False
    stdin: bool = False


class PodDirectory(Protocol):
    """What the kubelet API asks the kubelet (implemented by the node agent)."""

    def sandbox_id(self, namespace: str, name: str) -> str:
        """The pod's CRI sandbox id; errors.NotFound when no such pod runs here."""

    def container(self, namespace: str, name: str, container: str, *, previous: bool = False) -> ContainerLocation:
        """The container's current (or previous) instance; errors.NotFound when unknown."""

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod object the kubelet runs; errors.NotFound when unknown."""


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def status_response(code: int, reason: str, message: str) -> web.Response:
    return web.Response(status=code, body=orjson.dumps(status_body(code, reason, message)),
                        content_type="application/json")


def _error_response(exc: errors.MicrokubeError) -> web.Response:
    if isinstance(exc, errors.NotFound):
        return status_response(404, "NotFound", str(exc))
    if isinstance(exc, errors.Invalid | errors.Unsupported):
        return status_response(400, "BadRequest", str(exc))
    if isinstance(exc, errors.Unauthenticated):
        return status_response(401, "Unauthorized", str(exc))
    if isinstance(exc, errors.Forbidden):
        return status_response(403, "Forbidden", str(exc))
    if isinstance(exc, errors.Retryable):
        return status_response(503, "ServiceUnavailable", str(exc))
    return status_response(500, "InternalError", str(exc))


class KubeletServer:
    def __init__(self, directory: PodDirectory, runtime: cri.RuntimeService, capabilities: cri.RuntimeCapabilities,
                 *, cert_file: Path, key_file: Path, client_ca_file: Path,
                 authenticate_token: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        self.directory = directory
        self.runtime = runtime
        self.capabilities = capabilities
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca_file = Path(client_ca_file)
        self.authenticate_token = authenticate_token
        self._runner: web.AppRunner | None = None
        self.port = 0

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        context.load_verify_locations(self.client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL  # verified when presented; tokens are the other way in
        return context

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/containerLogs/{namespace}/{pod}", self._logs)
        for verb in ("exec", "attach"):
            handler = self._exec if verb == "exec" else self._attach
            for method in ("GET", "POST"):
                app.router.add_route(method, f"/{verb}/{{namespace}}/{{pod}}/{{container}}", handler)
                app.router.add_route(method, f"/{verb}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", handler)
        for method in ("GET", "POST"):
            app.router.add_route(method, "/portForward/{namespace}/{pod}", self._port_forward)
            app.router.add_route(method, "/portForward/{namespace}/{pod}/{uid}", self._port_forward)
        return app

    async def start(self, host: str, port: int) -> int:
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self.ssl_context(), reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- plumbing --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path != "/healthz":
            user = await self._authenticate(request)
            if user is None:
                return status_response(401, "Unauthorized", "Unauthorized: the kubelet API needs a client "
                                       "certificate signed by the cluster CA or a valid bearer token")
            request[_USER_KEY] = user
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return status_response(404, "NotFound", f"the kubelet serves no {request.path}")
        except web.HTTPMethodNotAllowed:
            return status_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")
        except errors.MicrokubeError as exc:
            return _error_response(exc)

    async def _authenticate(self, request: web.Request) -> str | None:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if peer:  # present only when verified against client_ca_file
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
            return "unknown"
        header = request.headers.get("Authorization", "")
        if self.authenticate_token is not None and header[:7].lower() == "bearer ":
            with contextlib.suppress(errors.MicrokubeError):
                return await self.authenticate_token(header[7:].strip())
        return None

    def _resolve_container(self, namespace: str, pod: str, container: str) -> str:
        if container:
            return container
        obj = self.directory.pod(namespace, pod)
        spec = obj.get("spec") or {}
        names = [c.get("name", "") for c in spec.get("containers") or []]
        default = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
        if default:
            return str(default)
        if len(names) == 1:
            return str(names[0])
        raise errors.Invalid(f"a container name must be specified for pod {pod}, choose one of: [{' '.join(names)}]")

    # -- handlers --------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        namespace, pod = info["namespace"], info["pod"]
        options = LogOptions.from_query(request.query)
        container = self._resolve_container(namespace, pod, info.get("container", ""))
        location = self.directory.container(namespace, pod, container, previous=options.previous)

        async def running() -> bool:
            transport = request.transport
            if transport is None or transport.is_closing():
                return False  # the client went away: stop following
            if not location.running:
                return False
            try:
                status = await self.runtime.container_status(location.container_id)
            except errors.NotFound:
                return False
            return status.state == cri.ContainerState.CONTAINER_RUNNING

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await stream_log(location.log_path, options, response.write, running)
            await response.write_eof()
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        namespace, pod = info["namespace"], info["pod"]
        command = request.query.getall("command", [])
        if not command:
            raise errors.Invalid.field("command", "required: the command to run (command=sh&command=-c&…)")
        location = self._location(namespace, pod, info["container"])
        remotecommand.websocket_for(request, "exec")  # refuse plain requests before running anything

        async def open_stream(tty: bool, stdin: bool) -> cri.ContainerStream:
            if tty and not self.capabilities.supports_tty:
                raise errors.Unsupported("this node's container runtime cannot allocate a terminal; run the "
                                         "command without a tty (kubectl exec -i, without -t)")
            return await self.runtime.exec(location.container_id, command, tty=tty, stdin=stdin)

        return await remotecommand.serve(request, open_stream, what="exec", command=command)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        namespace, pod = info["namespace"], info["pod"]
        location = self._location(namespace, pod, info["container"])
        if not self.capabilities.supports_attach:
            raise errors.Invalid(f"cannot attach to container {info['container']} of pod {namespace}/{pod}: this "
                                 "node's container runtime does not support attach (the container's output is "
                                 "in its log: kubectl logs -f)")
        remotecommand.websocket_for(request, "attach")

        async def open_stream(tty: bool, stdin: bool) -> cri.ContainerStream:
            return await self.runtime.attach(location.container_id, stdin=stdin)

        return await remotecommand.serve(request, open_stream, what="attach", command=[])

    def _location(self, namespace: str, pod: str, container: str) -> ContainerLocation:
        location = self.directory.container(namespace, pod, container)
        if not location.running:
            raise errors.Invalid(f"container {container} is not running in pod {namespace}/{pod}")
        return location

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        namespace, pod = info["namespace"], info["pod"]
        sandbox = self.directory.sandbox_id(namespace, pod)
        if not self.capabilities.supports_port_forward:
            raise errors.Invalid(f"cannot port-forward to pod {namespace}/{pod}: this node's container runtime "
                                 "does not support port forwarding")

        async def connect(port: int) -> cri.PortStream:
            return await self.runtime.port_forward(sandbox, port)

        return await portforward.serve(request, connect, f"{namespace}/{pod}")
