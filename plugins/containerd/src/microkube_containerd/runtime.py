"""The containerd pack's cri.Runtime: CRI v1 over gRPC to containerd (or any CRI v1 endpoint).

Every Protocol method is one CRI call (``convert`` turns dataclasses into messages and back; gRPC codes
become microkube errors). What the pack adds on top of the wire (notes §8):

- Idempotency: stop/remove of an unknown sandbox, container or image is success.
- ``oom_score_adj`` is never sent negative (these machines lack CAP_SYS_RESOURCE; containerd's
  ``restrict_oom_score_adj`` clamps it too).
- Pod cgroups: runc removes only container leaves, so after RemovePodSandbox the ``cgroup_parent`` tree the
  sandbox was given is removed (``rmdir`` bottom-up in every hierarchy) when empty.
- ``pod_sandbox_status(verbose=True)``: ``info["netns"]`` and ``info["pid"]`` from containerd's verbose JSON
  (``info["info"]`` keeps that JSON).
- exec, attach and port-forward go through the URL of the runtime's streaming server, spoken as WebSocket
  (``streams``). A tty exec always asks for stdin: containerd 1.6 drops a tty exec's output without it.
  Over containerd 1.6's v4 protocol ``close_stdin`` raises Unsupported and closing an exec stream does not
  kill the process (containerd runs execs detached from the streaming connection).
- Image references are checked before they are sent (``reference``): containerd treats a malformed one as
  absent (ImageStatus) or fails with UNKNOWN (PullImage); cri/v1 wants Invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microkube_containerd.client import IMAGES, RUNTIME, CriClient
from microkube_containerd.reference import check_reference
from microkube_containerd.streams import WebSocketPortStream, WebSocketStream, open_exec_stream, open_port_stream
from microkube_interfaces import cri
from microkube_interfaces.criapi import convert
from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb
from microkube_interfaces.errors import Invalid, NotFound, Retryable, Unsupported

DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
CGROUP_ROOT = "/sys/fs/cgroup"

CAPABILITIES = cri.RuntimeCapabilities(
    networks_pods_itself=True,
    supports_exec_streaming=True,
    supports_attach=True,
    supports_tty=True,
    supports_port_forward=True,
    supports_stats=True,
    supports_update_resources=True,
    cgroup_driver="cgroupfs",
)


def _no_negative_oom(resources: cri.LinuxContainerResources) -> cri.LinuxContainerResources:
    if resources.oom_score_adj < 0:
        return dataclasses.replace(resources, oom_score_adj=0)
    return resources


def remove_cgroup_tree(cgroup_parent: str, root: str = CGROUP_ROOT) -> None:
    """``rmdir`` ``cgroup_parent`` and the empty directories below it in every hierarchy under ``root``."""
    relative = cgroup_parent.strip("/")
    if not relative or ".." in relative.split("/"):
        return
    hierarchies = [Path(root)]
    with contextlib.suppress(OSError):
        hierarchies += [p for p in Path(root).iterdir() if p.is_dir() and not p.is_symlink()]
    for hierarchy in hierarchies:
        top = hierarchy / relative
        if not top.is_dir() or top == hierarchy:
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # fails (EBUSY) while a process still lives there: left for the next removal


class ContainerdRuntimeService:
    """cri.RuntimeService over CRI v1 gRPC."""

    def __init__(self, client: CriClient, capabilities: cri.RuntimeCapabilities = CAPABILITIES) -> None:
        self.client = client
        self.capabilities = capabilities
        self._cgroup_parents: dict[str, str] = {}

    def _streaming(self, what: str, supported: bool) -> None:
        if not supported:
            raise Unsupported(f"{what}: not supported as this pack is configured (streaming=false: the endpoint runs "
                              "no streaming server; attach=false or tty=false: the runtime behind it lacks them)")

    async def _rt(self, method: str, request: Any, response: Any,
                  timeout: float | None = None) -> Any:  # noqa: ASYNC109 (a gRPC deadline)
        return await self.client.call(RUNTIME, method, request, response, timeout)

    # --- runtime-wide ---------------------------------------------------------------------------

    async def version(self, api_version: str = cri.VERSION) -> cri.VersionInfo:
        r = await self._rt("Version", pb.VersionRequest(version=api_version), pb.VersionResponse)
        # containerd answers version "0.1.0" (the old kubelet API version); the CRI version it speaks is v1.
        return cri.VersionInfo(version=r.runtime_api_version or r.version, runtime_name=r.runtime_name,
                               runtime_version=r.runtime_version,
                               runtime_api_version=r.runtime_api_version)

    async def status(self, verbose: bool = False) -> cri.RuntimeStatus:
        r = await self._rt("Status", pb.StatusRequest(verbose=verbose), pb.StatusResponse)
        return convert.runtime_status_from_pb(r.status)

    # --- sandboxes ------------------------------------------------------------------------------

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig, runtime_handler: str = "") -> str:
        meta = config.metadata
        missing = [n for n in ("name", "uid", "namespace") if not getattr(meta, n)]
        if missing:
            raise Invalid(f"metadata.{missing[0]}: required in a pod sandbox config")
        if config.linux.resources is not None:
            config = dataclasses.replace(
                config, linux=dataclasses.replace(config.linux, resources=_no_negative_oom(config.linux.resources)))
        r = await self._rt("RunPodSandbox", pb.RunPodSandboxRequest(config=convert.sandbox_config_to_pb(config),
                                                                    runtime_handler=runtime_handler),
                           pb.RunPodSandboxResponse, timeout=240)
        if config.linux.cgroup_parent:
            self._cgroup_parents[r.pod_sandbox_id] = config.linux.cgroup_parent
        return str(r.pod_sandbox_id)

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._rt("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
                           pb.StopPodSandboxResponse, timeout=240)

    async def _cgroup_parent(self, pod_sandbox_id: str) -> str:
        if pod_sandbox_id in self._cgroup_parents:
            return self._cgroup_parents[pod_sandbox_id]
        try:
            r = await self._rt("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id,
                                                                              verbose=True),
                               pb.PodSandboxStatusResponse)
        except NotFound:
            return ""
        details = _verbose_info(r.info)
        config = details.get("config") or {}
        linux = config.get("linux") or {}
        return str(linux.get("cgroup_parent") or linux.get("cgroupParent") or "")

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        cgroup_parent = await self._cgroup_parent(pod_sandbox_id)
        with contextlib.suppress(NotFound):
            await self._rt("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
                           pb.RemovePodSandboxResponse, timeout=240)
        self._cgroup_parents.pop(pod_sandbox_id, None)
        if cgroup_parent:
            await asyncio.to_thread(remove_cgroup_tree, cgroup_parent)

    async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> cri.PodSandboxStatus:
        r = await self._rt("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id,
                                                                          verbose=verbose),
                           pb.PodSandboxStatusResponse)
        info = dict(r.info)
        if verbose:
            details = _verbose_info(r.info)
            netns = details.get("netNamespacePath") or _spec_netns(details.get("runtimeSpec"))
            if netns:
                info["netns"] = str(netns)
            if details.get("pid"):
                info["pid"] = str(details["pid"])
        return convert.sandbox_status_from_pb(r.status, info)

    async def list_pod_sandbox(self, filter: cri.PodSandboxFilter | None = None) -> list[cri.PodSandbox]:
        r = await self._rt("ListPodSandbox", pb.ListPodSandboxRequest(filter=convert.sandbox_filter_to_pb(filter)),
                           pb.ListPodSandboxResponse)
        return [convert.sandbox_from_pb(s) for s in r.items]

    async def port_forward(self, pod_sandbox_id: str, port: int) -> cri.PortStream:
        self._streaming("port_forward", self.capabilities.supports_port_forward)
        if not 0 < port < 65536:
            raise Invalid(f"port {port}: must be 1-65535")
        r = await self._rt("PortForward", pb.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=[port]),
                           pb.PortForwardResponse)
        stream: WebSocketPortStream = await open_port_stream(r.url, port)
        return stream

    # --- containers -----------------------------------------------------------------------------

    async def create_container(self, pod_sandbox_id: str, config: cri.ContainerConfig,
                               sandbox_config: cri.PodSandboxConfig) -> str:
        if not config.metadata.name:
            raise Invalid("metadata.name: required in a container config")
        if not config.image.image:
            raise Invalid("image.image: required in a container config")
        if config.tty:
            self._streaming("tty", self.capabilities.supports_tty)
        config = dataclasses.replace(config, linux=dataclasses.replace(
            config.linux, resources=_no_negative_oom(config.linux.resources)))
        request = pb.CreateContainerRequest(pod_sandbox_id=pod_sandbox_id,
                                            config=convert.container_config_to_pb(config),
                                            sandbox_config=convert.sandbox_config_to_pb(sandbox_config))
        r = await self._rt("CreateContainer", request, pb.CreateContainerResponse, timeout=240)
        return str(r.container_id)

    async def start_container(self, container_id: str) -> None:
        await self._rt("StartContainer", pb.StartContainerRequest(container_id=container_id),
                       pb.StartContainerResponse, timeout=240)

    async def stop_container(self, container_id: str, timeout: int) -> None:  # noqa: ASYNC109 (CRI's grace period)
        with contextlib.suppress(NotFound):
            await self._rt("StopContainer", pb.StopContainerRequest(container_id=container_id, timeout=timeout),
                           pb.StopContainerResponse, timeout=max(timeout, 0) + 120)

    async def remove_container(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._rt("RemoveContainer", pb.RemoveContainerRequest(container_id=container_id),
                           pb.RemoveContainerResponse, timeout=240)

    async def list_containers(self, filter: cri.ContainerFilter | None = None) -> list[cri.Container]:
        r = await self._rt("ListContainers", pb.ListContainersRequest(filter=convert.container_filter_to_pb(filter)),
                           pb.ListContainersResponse)
        return [convert.container_from_pb(c) for c in r.containers]

    async def container_status(self, container_id: str, verbose: bool = False) -> cri.ContainerStatus:
        r = await self._rt("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id, verbose=verbose),
                           pb.ContainerStatusResponse)
        status = convert.container_status_from_pb(r.status)
        if 0 < status.finished_at < status.started_at:
            # containerd stamps started_at once the start call returned, the exit with the shim's time: a process
            # that exits at once seems to end before it began. It began no later than it ended.
            status = dataclasses.replace(status, started_at=status.finished_at)
        return status

    async def update_container_resources(self, container_id: str, resources: cri.LinuxContainerResources) -> None:
        await self._rt("UpdateContainerResources",
                       pb.UpdateContainerResourcesRequest(container_id=container_id,
                                                          linux=convert.resources_to_pb(_no_negative_oom(resources))),
                       pb.UpdateContainerResourcesResponse)

    async def reopen_container_log(self, container_id: str) -> None:
        await self._rt("ReopenContainerLog", pb.ReopenContainerLogRequest(container_id=container_id),
                       pb.ReopenContainerLogResponse)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> cri.ExecSyncResponse:  # noqa: ASYNC109
        if not cmd:
            raise Invalid("cmd: empty; give the command to run")
        try:
            r = await self._rt("ExecSync", pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                               pb.ExecSyncResponse, timeout=(timeout + 30) if timeout > 0 else 24 * 3600)
        except Retryable:
            raise
        return cri.ExecSyncResponse(stdout=bytes(r.stdout), stderr=bytes(r.stderr), exit_code=int(r.exit_code))

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool = False,
                   stdin: bool = False) -> cri.ContainerStream:
        self._streaming("exec", self.capabilities.supports_exec_streaming)
        if tty:
            self._streaming("exec with tty", self.capabilities.supports_tty)
        if not cmd:
            raise Invalid("cmd: empty; give the command to run")
        # stdin for every tty exec: containerd 1.6 loses a tty exec's output when it has no stdin to attach.
        r = await self._rt("Exec", pb.ExecRequest(container_id=container_id, cmd=cmd, tty=tty, stdin=stdin or tty,
                                                  stdout=True, stderr=not tty), pb.ExecResponse)
        stream: WebSocketStream = await open_exec_stream(r.url, tty=tty, stdin=stdin)
        return stream

    async def attach(self, container_id: str, *, stdin: bool = False) -> cri.ContainerStream:
        self._streaming("attach", self.capabilities.supports_attach)
        status = await self.container_status(container_id)
        if status.state != cri.ContainerState.CONTAINER_RUNNING:
            raise Invalid(f"container {container_id}: not running ({status.state.name}); attach needs a running one")
        r = await self._rt("Attach", pb.AttachRequest(container_id=container_id, stdin=stdin, tty=False,
                                                      stdout=True, stderr=True), pb.AttachResponse)

        async def exit_code() -> int:
            # The stream ends when the main process closes its output; the runtime records the exit just after.
            delay = 0.01
            while True:
                final = await self.container_status(container_id)
                if final.state == cri.ContainerState.CONTAINER_EXITED:
                    return final.exit_code
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

        stream: WebSocketStream = await open_exec_stream(r.url, tty=False, stdin=stdin, exit_code=exit_code)
        return stream

    # --- stats ----------------------------------------------------------------------------------

    async def container_stats(self, container_id: str) -> cri.ContainerStats:
        r = await self._rt("ContainerStats", pb.ContainerStatsRequest(container_id=container_id),
                           pb.ContainerStatsResponse)
        return convert.container_stats_from_pb(r.stats)

    async def list_container_stats(self, filter: cri.ContainerFilter | None = None) -> list[cri.ContainerStats]:
        r = await self._rt("ListContainerStats",
                           pb.ListContainerStatsRequest(filter=convert.stats_filter_to_pb(filter)),
                           pb.ListContainerStatsResponse)
        return [convert.container_stats_from_pb(s) for s in r.stats]


def _spec_netns(spec: Any) -> str:
    """The network namespace path of an OCI runtime spec (containerd 1.6 reports no netNamespacePath)."""
    namespaces = ((spec or {}).get("linux") or {}).get("namespaces") or []
    return next((str(n.get("path") or "") for n in namespaces if n.get("type") == "network"), "")


def _verbose_info(info: Any) -> dict[str, Any]:
    raw = info.get("info") if hasattr(info, "get") else None
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class ContainerdImageService:
    """cri.ImageService over CRI v1 gRPC (plus ``import_archive`` through ``ctr``, when configured)."""

    def __init__(self, client: CriClient, *, ctr: str = "", address: str = "", namespace: str = "k8s.io") -> None:
        self.client = client
        self.ctr = ctr
        self.address = address
        self.namespace = namespace

    async def _im(self, method: str, request: Any, response: Any,
                  timeout: float | None = None) -> Any:  # noqa: ASYNC109 (a gRPC deadline)
        return await self.client.call(IMAGES, method, request, response, timeout)

    async def list_images(self, filter: cri.ImageFilter | None = None) -> list[cri.Image]:
        request = pb.ListImagesRequest(filter=pb.ImageFilter(image=convert.image_spec_to_pb(filter.image))
                                       if filter is not None and filter.image is not None else None)
        r = await self._im("ListImages", request, pb.ListImagesResponse)
        images = [convert.image_from_pb(i) for i in r.images]
        if filter is not None and filter.image is not None and filter.image.image:
            # containerd 1.6 ignores the filter: keep the image the reference resolves to.
            wanted = await self.image_status(filter.image)
            images = [i for i in images if wanted is not None and i.id == wanted.id]
        return images

    async def image_status(self, image: cri.ImageSpec, verbose: bool = False) -> cri.Image | None:
        check_reference(image.image)
        r = await self._im("ImageStatus", pb.ImageStatusRequest(image=convert.image_spec_to_pb(image),
                                                                verbose=verbose), pb.ImageStatusResponse)
        return convert.image_from_pb(r.image) if r.HasField("image") and r.image.id else None

    async def pull_image(self, image: cri.ImageSpec, auth: cri.AuthConfig | None = None,
                         sandbox_config: cri.PodSandboxConfig | None = None) -> str:
        check_reference(image.image)
        request = pb.PullImageRequest(image=convert.image_spec_to_pb(image), auth=convert.auth_to_pb(auth),
                                      sandbox_config=convert.sandbox_config_to_pb(sandbox_config)
                                      if sandbox_config is not None else None)
        r = await self._im("PullImage", request, pb.PullImageResponse, timeout=900)
        return str(r.image_ref)

    async def remove_image(self, image: cri.ImageSpec) -> None:
        check_reference(image.image)
        with contextlib.suppress(NotFound):
            await self._im("RemoveImage", pb.RemoveImageRequest(image=convert.image_spec_to_pb(image)),
                           pb.RemoveImageResponse, timeout=240)

    async def image_fs_info(self) -> cri.ImageFsInfo:
        r = await self._im("ImageFsInfo", pb.ImageFsInfoRequest(), pb.ImageFsInfoResponse)
        return convert.image_fs_info_from_pb(r)

    async def import_archive(self, path: str, reference: str | None = None) -> Sequence[Any]:
        """``ctr images import`` into the CRI namespace (CRI has no import call); needs the ``ctr`` option."""
        if not self.ctr or not self.address:
            raise Invalid("import_archive needs the pack options ctr and address (containerd's socket path)")
        if not await asyncio.to_thread(Path(path).is_file):
            raise Invalid(f"{path}: no such archive")
        args = [self.ctr, "--address", self.address, "-n", self.namespace, "images", "import"]
        if reference:
            args += ["--base-name", reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference]
        proc = await asyncio.create_subprocess_exec(*args, path, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode:
            raise Invalid(f"{path}: ctr images import failed: {err.decode(errors='replace').strip()}")
        imported = []
        for line in out.decode().splitlines():
            # "unpacking <name> (sha256:<manifest digest>)...done"
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "unpacking":
                name = parts[1]
                found = await self.image_status(cri.ImageSpec(name))
                imported.append(ImportedImage(reference=name, id=found.id if found else ""))
        return imported


@dataclass(frozen=True)
class ImportedImage:
    reference: str
    id: str


@dataclass
class ContainerdRuntime:
    """What the ``containerd`` factory returns (cri.Runtime)."""

    runtime: ContainerdRuntimeService
    images: ContainerdImageService
    capabilities: cri.RuntimeCapabilities
    client: CriClient

    async def close(self) -> None:
        await self.client.close()


def create_runtime(options: dict[str, Any] | None = None) -> ContainerdRuntime:
    """The ``Registrar.runtimes`` factory.

    Options: ``endpoint`` (CRI socket, default ``unix:///run/containerd/containerd.sock``), ``timeout`` (seconds
    per call, default 120), ``ctr`` (path of containerd's ``ctr``, enables ``images.import_archive``),
    ``namespace`` (containerd namespace for imports, default ``k8s.io``); for endpoints other than containerd
    (e.g. ``microkube cri-serve``): ``streaming`` (default true; false: the endpoint runs no streaming server, so
    exec streams, attach, tty containers and port-forward are not supported), ``attach`` and ``tty`` (default:
    as ``streaming``; false when the runtime behind the endpoint lacks them, e.g. ``cri-serve --runtime runc``
    before runc had terminals) and ``networks_pods`` (default true; false: the node agent networks the pods).
    """
    options = dict(options or {})
    # "root" is what every node agent passes to every runtime pack; containerd keeps its own state.
    known = {"endpoint", "timeout", "ctr", "namespace", "streaming", "attach", "tty", "networks_pods", "root"}
    unknown = set(options) - known
    if unknown:
        raise Invalid(f"containerd runtime options {sorted(unknown)}: unknown; use "
                      f"{', '.join(sorted(known - {'root'}))}")
    streaming, networks_pods = _flag(options, "streaming"), _flag(options, "networks_pods")
    attach, tty = _flag(options, "attach", streaming), _flag(options, "tty", streaming)
    for name, value in (("attach", attach), ("tty", tty)):
        if value and not streaming:
            raise Invalid(f"containerd runtime option {name}=true: needs streaming=true (a streaming server serves "
                          "it); drop the option or set streaming=true")
    capabilities = dataclasses.replace(CAPABILITIES, networks_pods_itself=networks_pods,
                                       supports_exec_streaming=streaming, supports_attach=attach,
                                       supports_tty=tty, supports_port_forward=streaming)
    endpoint = str(options.get("endpoint") or DEFAULT_ENDPOINT)
    try:
        timeout = float(options.get("timeout") or 120)
    except (TypeError, ValueError):
        raise Invalid(f"timeout {options.get('timeout')!r}: give seconds as a number") from None
    client = CriClient(endpoint, timeout=timeout)
    address = client.target[len("unix://"):] if client.target.startswith("unix://") else ""
    images = ContainerdImageService(client, ctr=str(options.get("ctr") or ""), address=address,
                                    namespace=str(options.get("namespace") or "k8s.io"))
    return ContainerdRuntime(ContainerdRuntimeService(client, capabilities), images, capabilities, client)


def _flag(options: dict[str, Any], name: str, default: bool = True) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise Invalid(f"containerd runtime option {name}={value!r}: give true or false")
