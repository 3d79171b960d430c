"""``microkube cri-serve``: any registered runtime pack as a CRI v1 gRPC endpoint on a unix socket.

Each RPC of ``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService`` that has a cri/v1 Protocol method
is served by that method (``criapi.convert`` turns messages into dataclasses and back); microkube errors
become gRPC status codes (NotFound → NOT_FOUND, Invalid → INVALID_ARGUMENT, Unsupported → UNIMPLEMENTED,
Retryable → UNAVAILABLE, …). RPCs without a Protocol counterpart (PodSandboxStats, ListPodSandboxStats,
UpdateRuntimeConfig, CheckpointContainer, GetContainerEvents, metrics, RuntimeConfig) are UNIMPLEMENTED.

Exec, Attach and PortForward are checked (the container exists and runs, or the sandbox is ready; at least one
of stdin/stdout/stderr; not tty with stderr) and answered with a one-time URL on the streaming server that
runs beside the gRPC server (``criserve_streaming``: aiohttp on ``--streaming-address``, default 127.0.0.1 and
a free port; WebSocket remote-command v5/v4 and port-forward, as the kubelet API speaks them). It serves what
the pack declares in ``RuntimeCapabilities``: exec streaming, attach, tty or port-forward the pack lacks is
UNIMPLEMENTED at the call.

PodSandboxStatus with ``verbose`` returns the pack's ``info`` entries as they are, plus ``info["info"]``:
a JSON object in containerd's shape (``netNamespacePath``, ``pid``) so CRI clients written for containerd
find the sandbox's network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from microkube import criserve_streaming as streaming
from microkube_interfaces import cri, errors
from microkube_interfaces.criapi import convert
from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


class CriServer:
    """Serves one ``cri.Runtime`` (``.runtime``, ``.images``) as CRI v1."""

    def __init__(self, pack: Any, streaming_server: streaming.StreamingServer | None = None) -> None:
        self.pack = pack
        self.rt: cri.RuntimeService = pack.runtime
        self.im: cri.ImageService = pack.images
        self.streaming = streaming_server

    def _streaming(self, method: str) -> streaming.StreamingServer:
        if self.streaming is None:
            raise errors.Unsupported(f"{method}: this server runs no streaming server")
        return self.streaming

    # --- RuntimeService -------------------------------------------------------------------------

    async def Version(self, r: pb.VersionRequest) -> pb.VersionResponse:
        v = await self.rt.version(r.version or cri.VERSION)
        return pb.VersionResponse(version=v.version, runtime_name=v.runtime_name, runtime_version=v.runtime_version,
                                  runtime_api_version=v.runtime_api_version)

    async def Status(self, r: pb.StatusRequest) -> pb.StatusResponse:
        return pb.StatusResponse(status=convert.runtime_status_to_pb(await self.rt.status(r.verbose)))

    async def RunPodSandbox(self, r: pb.RunPodSandboxRequest) -> pb.RunPodSandboxResponse:
        sid = await self.rt.run_pod_sandbox(convert.sandbox_config_from_pb(r.config), r.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, r: pb.StopPodSandboxRequest) -> pb.StopPodSandboxResponse:
        await self.rt.stop_pod_sandbox(r.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, r: pb.RemovePodSandboxRequest) -> pb.RemovePodSandboxResponse:
        await self.rt.remove_pod_sandbox(r.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, r: pb.PodSandboxStatusRequest) -> pb.PodSandboxStatusResponse:
        status = await self.rt.pod_sandbox_status(r.pod_sandbox_id, r.verbose)
        info = {k: str(v) for k, v in status.info.items()}
        if r.verbose:
            details: dict[str, Any] = {"netNamespacePath": info.get("netns", "")}
            if info.get("pid", "").isdigit():
                details["pid"] = int(info["pid"])
            info["info"] = json.dumps(details)
        return pb.PodSandboxStatusResponse(status=convert.sandbox_status_to_pb(status), info=info)

    async def ListPodSandbox(self, r: pb.ListPodSandboxRequest) -> pb.ListPodSandboxResponse:
        found = await self.rt.list_pod_sandbox(convert.sandbox_filter_from_pb(r.filter, r.HasField("filter")))
        return pb.ListPodSandboxResponse(items=[convert.sandbox_to_pb(s) for s in found])

    async def CreateContainer(self, r: pb.CreateContainerRequest) -> pb.CreateContainerResponse:
        cid = await self.rt.create_container(r.pod_sandbox_id, convert.container_config_from_pb(r.config),
                                             convert.sandbox_config_from_pb(r.sandbox_config))
        return pb.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, r: pb.StartContainerRequest) -> pb.StartContainerResponse:
        await self.rt.start_container(r.container_id)
        return pb.StartContainerResponse()

    async def StopContainer(self, r: pb.StopContainerRequest) -> pb.StopContainerResponse:
        await self.rt.stop_container(r.container_id, int(r.timeout))
        return pb.StopContainerResponse()

    async def RemoveContainer(self, r: pb.RemoveContainerRequest) -> pb.RemoveContainerResponse:
        await self.rt.remove_container(r.container_id)
        return pb.RemoveContainerResponse()

    async def ListContainers(self, r: pb.ListContainersRequest) -> pb.ListContainersResponse:
        found = await self.rt.list_containers(convert.container_filter_from_pb(r.filter, r.HasField("filter")))
        return pb.ListContainersResponse(containers=[convert.container_to_pb(c) for c in found])

    async def ContainerStatus(self, r: pb.ContainerStatusRequest) -> pb.ContainerStatusResponse:
        status = await self.rt.container_status(r.container_id, r.verbose)
        return pb.ContainerStatusResponse(status=convert.container_status_to_pb(status))

    async def UpdateContainerResources(self, r: pb.UpdateContainerResourcesRequest
                                       ) -> pb.UpdateContainerResourcesResponse:
        await self.rt.update_container_resources(r.container_id, convert.resources_from_pb(r.linux))
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, r: pb.ReopenContainerLogRequest) -> pb.ReopenContainerLogResponse:
        await self.rt.reopen_container_log(r.container_id)
        return pb.ReopenContainerLogResponse()

    async def ExecSync(self, r: pb.ExecSyncRequest) -> pb.ExecSyncResponse:
        result = await self.rt.exec_sync(r.container_id, list(r.cmd), int(r.timeout))
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def ContainerStats(self, r: pb.ContainerStatsRequest) -> pb.ContainerStatsResponse:
        return pb.ContainerStatsResponse(stats=convert.container_stats_to_pb(await self.rt.container_stats(
            r.container_id)))

    async def ListContainerStats(self, r: pb.ListContainerStatsRequest) -> pb.ListContainerStatsResponse:
        found = await self.rt.list_container_stats(convert.stats_filter_from_pb(r.filter, r.HasField("filter")))
        return pb.ListContainerStatsResponse(stats=[convert.container_stats_to_pb(s) for s in found])

    async def Exec(self, r: pb.ExecRequest) -> pb.ExecResponse:
        url = await self._streaming("Exec").exec(streaming.ExecRequest(
            r.container_id, tuple(r.cmd), tty=r.tty, stdin=r.stdin, stdout=r.stdout, stderr=r.stderr))
        return pb.ExecResponse(url=url)

    async def Attach(self, r: pb.AttachRequest) -> pb.AttachResponse:
        url = await self._streaming("Attach").attach(streaming.AttachRequest(
            r.container_id, tty=r.tty, stdin=r.stdin, stdout=r.stdout, stderr=r.stderr))
        return pb.AttachResponse(url=url)

    async def PortForward(self, r: pb.PortForwardRequest) -> pb.PortForwardResponse:
        url = await self._streaming("PortForward").port_forward(streaming.PortForwardRequest(
            r.pod_sandbox_id, tuple(int(p) for p in r.port)))
        return pb.PortForwardResponse(url=url)

    # --- ImageService ---------------------------------------------------------------------------

    async def ListImages(self, r: pb.ListImagesRequest) -> pb.ListImagesResponse:
        image_filter = None
        if r.HasField("filter") and r.filter.HasField("image") and r.filter.image.image:
            image_filter = cri.ImageFilter(image=convert.image_spec_from_pb(r.filter.image))
        found = await self.im.list_images(image_filter)
        return pb.ListImagesResponse(images=[convert.image_to_pb(i) for i in found])

    async def ImageStatus(self, r: pb.ImageStatusRequest) -> pb.ImageStatusResponse:
        found = await self.im.image_status(convert.image_spec_from_pb(r.image), r.verbose)
        return pb.ImageStatusResponse(image=convert.image_to_pb(found) if found is not None else None)

    async def PullImage(self, r: pb.PullImageRequest) -> pb.PullImageResponse:
        ref = await self.im.pull_image(convert.image_spec_from_pb(r.image), convert.auth_from_pb(r.auth,
                                                                                                 r.HasField("auth")),
                                       convert.sandbox_config_from_pb(r.sandbox_config)
                                       if r.HasField("sandbox_config") else None)
        return pb.PullImageResponse(image_ref=ref)

    async def RemoveImage(self, r: pb.RemoveImageRequest) -> pb.RemoveImageResponse:
        await self.im.remove_image(convert.image_spec_from_pb(r.image))
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, r: pb.ImageFsInfoRequest) -> pb.ImageFsInfoResponse:
        return convert.image_fs_info_to_pb(await self.im.image_fs_info())


RUNTIME_METHODS = ("Version", "Status", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
                   "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
                   "ListContainers", "ContainerStatus", "UpdateContainerResources", "ReopenContainerLog", "ExecSync",
                   "Exec", "Attach", "PortForward", "ContainerStats", "ListContainerStats")
IMAGE_METHODS = ("ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo")


def generic_handlers(server: CriServer) -> list[Any]:
    """grpc generic handlers for both services, each RPC wrapped to turn microkube errors into status codes."""
    import grpc  # type: ignore[import-untyped]

    def wrap(method: str, fn: Handler) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handle(request: Any, context: Any) -> Any:
            try:
                return await fn(request)
            except errors.MicrokubeError as exc:
                await context.abort(grpc.StatusCode[convert.code_for_error(exc)], str(exc))
            except Exception as exc:
                log.exception("cri-serve %s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")

        return handle

    def service(name: str, methods: tuple[str, ...]) -> Any:
        handlers = {}
        for method in methods:
            fn = getattr(server, method)
            request = getattr(pb, f"{method}Request") if method != "Status" else pb.StatusRequest
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                wrap(method, fn), request_deserializer=request.FromString,
                response_serializer=lambda m: m.SerializeToString())
        return grpc.method_handlers_generic_handler(name, handlers)

    return [service("runtime.v1.RuntimeService", RUNTIME_METHODS), service("runtime.v1.ImageService", IMAGE_METHODS)]


def _prepare_socket(path: Path) -> Path:
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    elif path.exists():
        raise errors.Invalid(f"--socket {path}: exists and is not a socket; give a free path")
    return path


async def serve(pack: Any, socket_path: Path, *, streaming_address: tuple[str, int] = streaming.DEFAULT_ADDRESS,
                ready: Callable[[], None] | None = None, stop: asyncio.Event | None = None,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Serve ``pack`` on ``socket_path`` (a stale socket file is replaced), its streaming server on
    ``streaming_address``, until ``stop`` is set or SIGTERM/SIGINT; the pack is closed at the end.
    ``clock`` drives the expiry of streaming tokens."""
    import grpc.aio  # type: ignore[import-untyped]

    streaming_server = streaming.StreamingServer(pack.runtime, pack.capabilities, address=streaming_address,
                                                 clock=clock)
    server = None
    try:
        socket_path = _prepare_socket(socket_path)
        await streaming_server.start()
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(generic_handlers(CriServer(pack, streaming_server)))
        server.add_insecure_port(f"unix://{socket_path}")
        await server.start()
        os.chmod(socket_path, 0o600)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        log.info("serving CRI v1 on unix://%s", socket_path)
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        if server is not None:
            await server.stop(grace=2)
            with contextlib.suppress(OSError):
                socket_path.unlink()
        await streaming_server.stop()
        close = getattr(pack, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def command(args: Any) -> int:
    """Run ``microkube cri-serve`` with parsed ``args``; returns the exit code."""
    from microkube.plugins import Plugins

    async def run() -> int:
        try:
            registration = Plugins(autoload=False if args.no_autoload else None).registrar.runtimes.get(args.runtime)
            # --streaming-address HOST:PORT (a free port on 127.0.0.1 when not given)
            address = args.streaming_address
            streaming_address = streaming.parse_address(address) if address else streaming.DEFAULT_ADDRESS
            pack = registration.factory(dict(args.runtime_option))
            await serve(pack, args.socket, streaming_address=streaming_address)
        except errors.MicrokubeError as exc:
            log.error("microkube cri-serve: %s", exc)
            return 1
        return 0

    return asyncio.run(run())
