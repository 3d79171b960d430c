"""cri/v1: the container runtime interface, shaped after Kubernetes' CRI v1.

The model is ``k8s.io/cri-api`` ``pkg/apis/runtime/v1/api.proto`` (services ``RuntimeService`` and
``ImageService``) and its consumer-side Go interfaces in ``pkg/apis/services.go``, which cut the
services by role: ``RuntimeVersioner``, ``PodSandboxManager``, ``ContainerManager``,
``ContainerStatsManager`` → ``RuntimeService``, and a separate ``ImageManagerService``. The same cut
is kept here, in snake case, as Protocols of ``async`` methods; the messages are dataclasses whose
field names follow the proto's (``PodSandboxConfig.log_directory``, ``ContainerStatus.exit_code``…).

A runtime pack registers a factory in ``Registrar.runtimes`` during ``microkube_register``:
``registrar.runtimes.add("runc", factory, plugin="runc", versions=("v1",))``, where
``factory(options: dict) -> Runtime`` returns an object with a ``runtime`` (RuntimeService), an
``images`` (ImageService) and ``capabilities`` (RuntimeCapabilities).

Differences from the gRPC API, on purpose:

- ``exec``/``attach``/``port_forward`` return stream handles (ContainerStream, PortStream) instead of
  the URL of a streaming server; the node agent serves the kubelet API on top of them.
- ``image_status`` returns ``None`` for an absent image, as CRI answers an empty ``image``.
- Errors are ``microkube_interfaces.errors``: NotFound (an unknown sandbox or container id in a
  status, start, update, exec or stats call), Invalid (a bad config: missing metadata, bad image
  reference), Unsupported (an optional part the capabilities do not declare), Retryable (transient).

Idempotency (as CRI requires): ``stop_pod_sandbox``, ``remove_pod_sandbox``, ``stop_container``,
``remove_container`` and ``remove_image`` must succeed when the object is already stopped or gone.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

INTERFACE = "cri"
VERSION = "v1"

#: Runtime condition types every runtime reports in ``RuntimeService.status``.
RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"


class NamespaceMode(enum.IntEnum):
    """Where a namespace of a container comes from (CRI ``NamespaceMode``)."""

    POD = 0  # shared by every container of the pod sandbox
    CONTAINER = 1  # the container's own
    NODE = 2  # the host's
    TARGET = 3  # another container's (``NamespaceOption.target_id``)


class PodSandboxState(enum.IntEnum):
    SANDBOX_READY = 0
    SANDBOX_NOTREADY = 1


class ContainerState(enum.IntEnum):
    CONTAINER_CREATED = 0
    CONTAINER_RUNNING = 1
    CONTAINER_EXITED = 2
    CONTAINER_UNKNOWN = 3


class PortProtocol(enum.IntEnum):
    """CRI ``Protocol``."""

    TCP = 0
    UDP = 1
    SCTP = 2


class MountPropagation(enum.IntEnum):
    PROPAGATION_PRIVATE = 0
    PROPAGATION_HOST_TO_CONTAINER = 1
    PROPAGATION_BIDIRECTIONAL = 2


#: ``ContainerStatus.reason`` values with a meaning to the node agent (containerd's spelling).
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_OOM_KILLED = "OOMKilled"


# --- shared pieces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """An image by reference (``busybox``, ``registry:5000/app:v1``, ``name@sha256:…``) or by id."""

    image: str
    annotations: dict[str, str] = field(default_factory=dict)
    #: The reference exactly as the user wrote it in the pod spec (for messages).
    user_specified_image: str = ""
    runtime_handler: str = ""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: MountPropagation = MountPropagation.PROPAGATION_PRIVATE


@dataclass(frozen=True)
class Device:
    container_path: str
    host_path: str
    #: cgroup permissions: any of ``r``, ``w``, ``m``.
    permissions: str = "rwm"


@dataclass(frozen=True)
class NamespaceOption:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    #: The container whose namespace is joined when a mode is TARGET.
    target_id: str = ""


@dataclass(frozen=True)
class LinuxContainerResources:
    """cgroup limits. Zero means unset, except ``oom_score_adj`` (see notes: never negative here)."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    #: Page size (``2MB``) → limit in bytes.
    hugepage_limits: dict[str, int] = field(default_factory=dict)
    #: cgroup v2 key → value.
    unified: dict[str, str] = field(default_factory=dict)
    memory_swap_limit_in_bytes: int = 0
    pids_limit: int = 0


@dataclass(frozen=True)
class Capability:
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    add_ambient_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinuxContainerSecurityContext:
    capabilities: Capability = field(default_factory=Capability)
    privileged: bool = False
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    #: ``None`` means the image's user.
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    #: ``""``/``unconfined`` or ``runtime/default`` or ``localhost/<profile>``.
    seccomp_profile: str = ""


@dataclass(frozen=True)
class LinuxSandboxSecurityContext:
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    run_as_user: int | None = None
    run_as_group: int | None = None
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    privileged: bool = False
    seccomp_profile: str = ""


# --- pod sandboxes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodSandboxMetadata:
    """Identifies the pod: ``name``, ``uid``, ``namespace`` and the ``attempt`` (0 first, +1 per recreate)."""

    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True)
class DNSConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int = 0
    protocol: PortProtocol = PortProtocol.TCP
    host_ip: str = ""


@dataclass(frozen=True)
class LinuxPodSandboxConfig:
    #: Absolute cgroupfs path of the pod's cgroup (``/microkube/pod<uid>``); the node agent creates it.
    cgroup_parent: str = ""
    security_context: LinuxSandboxSecurityContext = field(default_factory=LinuxSandboxSecurityContext)
    sysctls: dict[str, str] = field(default_factory=dict)
    #: Pod-level limits (the sum of its containers'), when the runtime applies them.
    resources: LinuxContainerResources | None = None


@dataclass(frozen=True)
class PodSandboxConfig:
    metadata: PodSandboxMetadata
    hostname: str = ""
    #: Directory on the host under which container logs are written (``ContainerConfig.log_path`` is relative).
    log_directory: str = ""
    dns_config: DNSConfig | None = None
    port_mappings: tuple[PortMapping, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    linux: LinuxPodSandboxConfig = field(default_factory=LinuxPodSandboxConfig)


@dataclass(frozen=True)
class PodSandboxNetworkStatus:
    ip: str = ""
    additional_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodSandboxStatus:
    id: str
    metadata: PodSandboxMetadata
    state: PodSandboxState
    #: Nanoseconds since the epoch.
    created_at: int
    network: PodSandboxNetworkStatus = field(default_factory=PodSandboxNetworkStatus)
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    #: Runtime-specific details (``verbose`` in CRI), e.g. the netns path or the pause process pid.
    info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodSandbox:
    """One entry of ``list_pod_sandbox``."""

    id: str
    metadata: PodSandboxMetadata
    state: PodSandboxState
    created_at: int
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""


@dataclass(frozen=True)
class PodSandboxFilter:
    """All set fields must match (AND); ``label_selector`` entries must all be present and equal."""

    id: str = ""
    state: PodSandboxState | None = None
    label_selector: dict[str, str] = field(default_factory=dict)


# --- containers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerMetadata:
    name: str
    attempt: int = 0


@dataclass(frozen=True)
class LinuxContainerConfig:
    resources: LinuxContainerResources = field(default_factory=LinuxContainerResources)
    security_context: LinuxContainerSecurityContext = field(default_factory=LinuxContainerSecurityContext)


@dataclass(frozen=True)
class ContainerConfig:
    """What to run. ``command`` replaces the image's Entrypoint and ``args`` its Cmd, as in a pod spec."""

    metadata: ContainerMetadata
    image: ImageSpec
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[KeyValue, ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: Relative to the sandbox's ``log_directory`` (``app/0.log``); CRI log format.
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    linux: LinuxContainerConfig = field(default_factory=LinuxContainerConfig)


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    metadata: ContainerMetadata
    state: ContainerState
    #: Nanoseconds since the epoch; 0 when not (yet) reached.
    created_at: int
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    image: ImageSpec = field(default_factory=lambda: ImageSpec(""))
    #: The image id or digest the container actually runs.
    image_ref: str = ""
    #: Brief CamelCase reason: REASON_COMPLETED, REASON_ERROR, REASON_OOM_KILLED, …
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    log_path: str = ""
    resources: LinuxContainerResources | None = None


@dataclass(frozen=True)
class Container:
    """One entry of ``list_containers``."""

    id: str
    pod_sandbox_id: str
    metadata: ContainerMetadata
    image: ImageSpec
    image_ref: str
    state: ContainerState
    created_at: int
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerFilter:
    id: str = ""
    state: ContainerState | None = None
    pod_sandbox_id: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecSyncResponse:
    stdout: bytes
    stderr: bytes
    exit_code: int


# --- streams --------------------------------------------------------------------------------------


@runtime_checkable
class ContainerStream(Protocol):
    """A running exec or an attachment to a container's main process.

    Reading returns ``b""`` at end of stream. With ``tty`` there is no separate stderr: everything
    arrives on stdout and ``read_stderr`` returns ``b""`` at once. ``wait`` returns the exit code
    (for attach: the container's, when it exits). ``close`` detaches and frees the handle; it does not
    kill an attached container, and it kills an exec that has not exited where the runtime can (containerd
    runs execs detached from the stream and cannot). All methods may be called
    concurrently from different tasks (one reader per stream).
    """

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process's stdin. Raises Unsupported when opened without ``stdin``."""

    async def close_stdin(self) -> None:
        """Close stdin (the process sees end of file). Idempotent. Raises Unsupported when the stream's
        transport cannot signal end of input (containerd 1.6's v4 WebSocket streams)."""

    async def read_stdout(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of stdout; ``b""`` at end of stream."""

    async def read_stderr(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of stderr; ``b""`` at end of stream (at once with ``tty``)."""

    async def resize(self, width: int, height: int) -> None:
        """Resize the terminal (columns, rows). A no-op without ``tty``."""

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code."""

    async def close(self) -> None:
        """Detach and release the handle. Idempotent."""


@runtime_checkable
class PortStream(Protocol):
    """One forwarded TCP connection into a pod's network namespace."""

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` when the pod side closed."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Close both directions. Idempotent."""


# --- stats ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuUsage:
    timestamp: int
    usage_core_nano_seconds: int = 0
    usage_nano_cores: int = 0


@dataclass(frozen=True)
class MemoryUsage:
    timestamp: int
    working_set_bytes: int = 0
    available_bytes: int = 0
    usage_bytes: int = 0
    rss_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0


@dataclass(frozen=True)
class FilesystemUsage:
    timestamp: int
    #: The mount point of the filesystem (CRI ``FilesystemIdentifier.mountpoint``).
    mountpoint: str
    used_bytes: int = 0
    inodes_used: int = 0


@dataclass(frozen=True)
class ContainerStats:
    id: str
    metadata: ContainerMetadata
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cpu: CpuUsage | None = None
    memory: MemoryUsage | None = None
    writable_layer: FilesystemUsage | None = None


# --- runtime-wide ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    #: The CRI version the caller asked about / the runtime speaks (``v1``).
    version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str = VERSION


@dataclass(frozen=True)
class RuntimeCondition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RuntimeStatus:
    conditions: tuple[RuntimeCondition, ...] = ()

    def condition(self, type_: str) -> RuntimeCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        """RuntimeReady and NetworkReady are both true."""
        conditions = {c.type: c.status for c in self.conditions}
        return conditions.get(RUNTIME_READY, False) and conditions.get(NETWORK_READY, False)


@dataclass(frozen=True)
class RuntimeCapabilities:
    """What a runtime does beyond the required calls; callers check these instead of guessing.

    A method for a capability declared False raises Unsupported.
    """

    #: The runtime sets up pod networking itself (containerd with its CNI config); otherwise the node
    #: agent calls the pod network (cni/1.1) with the sandbox's netns.
    networks_pods_itself: bool = False
    supports_exec_streaming: bool = False
    supports_attach: bool = False
    #: Containers (``ContainerConfig.tty``) and execs (``exec(tty=True)``) on a terminal.
    supports_tty: bool = False
    supports_port_forward: bool = False
    supports_stats: bool = False
    supports_update_resources: bool = False
    #: ``cgroupfs`` or ``systemd``: how ``cgroup_parent`` values are spelled.
    cgroup_driver: str = "cgroupfs"


# --- images ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthConfig:
    """Registry credentials: ``username``/``password``, or ``auth`` (base64 ``user:password``), or a
    ready ``registry_token`` (sent as a Bearer token), or an OAuth ``identity_token``."""

    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""


@dataclass(frozen=True)
class Image:
    """An image present on the node. ``id`` is the config digest (``sha256:…``), as containerd reports."""

    id: str
    #: Full references (``docker.io/library/busybox:latest``).
    repo_tags: tuple[str, ...] = ()
    #: ``name@sha256:<manifest digest>``.
    repo_digests: tuple[str, ...] = ()
    #: Bytes on disk of the image's blobs (compressed layers, config, manifest).
    size: int = 0
    #: The image config's numeric user, or ``None``; else ``username``.
    uid: int | None = None
    username: str = ""
    spec: ImageSpec | None = None
    #: Never garbage collected by the node agent (the sandbox image).
    pinned: bool = False


@dataclass(frozen=True)
class ImageFilter:
    image: ImageSpec | None = None


@dataclass(frozen=True)
class ImageFsInfo:
    image_filesystems: tuple[FilesystemUsage, ...] = ()
    container_filesystems: tuple[FilesystemUsage, ...] = ()


# --- the role interfaces --------------------------------------------------------------------------


@runtime_checkable
class RuntimeVersioner(Protocol):
    async def version(self, api_version: str = VERSION) -> VersionInfo:
        """The runtime's name and version, and the CRI version it speaks."""


@runtime_checkable
class PodSandboxManager(Protocol):
    async def run_pod_sandbox(self, config: PodSandboxConfig, runtime_handler: str = "") -> str:
        """Create and start a sandbox; on return it is SANDBOX_READY. Returns its id.

        Raises Invalid for a bad config (no metadata name/uid/namespace, bad port mapping).
        """

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        """Stop every process of the sandbox (containers forcibly) and free network resources.

        Idempotent: an already stopped or unknown sandbox is success.
        """

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        """Remove the sandbox and its containers (stopping them first). Idempotent: unknown is success."""

    async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> PodSandboxStatus:
        """Raises NotFound for an unknown id. ``verbose`` fills ``info``."""

    async def list_pod_sandbox(self, filter: PodSandboxFilter | None = None) -> list[PodSandbox]: ...

    async def port_forward(self, pod_sandbox_id: str, port: int) -> PortStream:
        """Open one TCP connection to ``port`` inside the sandbox's network namespace.

        Raises NotFound (unknown sandbox), Unsupported (no ``supports_port_forward``).
        """


@runtime_checkable
class ContainerManager(Protocol):
    async def create_container(
        self, pod_sandbox_id: str, config: ContainerConfig, sandbox_config: PodSandboxConfig
    ) -> str:
        """Create a container (CONTAINER_CREATED) in the sandbox; returns its id.

        Raises NotFound (unknown sandbox; image not present — the caller pulls first), Invalid (bad config).
        """

    async def start_container(self, container_id: str) -> None:
        """Start a CREATED container. Raises NotFound for an unknown id."""

    async def stop_container(self, container_id: str, timeout: int) -> None:  # noqa: ASYNC109 (CRI's grace period)
        """Send SIGTERM, then SIGKILL after ``timeout`` seconds (0: at once). Idempotent: a stopped or
        unknown container is success."""

    async def remove_container(self, container_id: str) -> None:
        """Remove the container, forcibly stopping it if running. Idempotent: unknown is success."""

    async def list_containers(self, filter: ContainerFilter | None = None) -> list[Container]: ...

    async def container_status(self, container_id: str, verbose: bool = False) -> ContainerStatus:
        """Raises NotFound for an unknown id."""

    async def update_container_resources(self, container_id: str, resources: LinuxContainerResources) -> None:
        """Change the live cgroup limits. Raises NotFound, Unsupported (no ``supports_update_resources``)."""

    async def reopen_container_log(self, container_id: str) -> None:
        """Reopen the log file (after the node agent rotated it). Raises NotFound, or Invalid when the
        container is not running."""

    async def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 0  # noqa: ASYNC109 (CRI's, runtime-enforced)
    ) -> ExecSyncResponse:
        """Run ``cmd`` in the container and collect its output; ``timeout`` seconds (0: none), after
        which the process is killed and Retryable is raised. Raises NotFound for an unknown container."""

    async def exec(
        self, container_id: str, cmd: list[str], *, tty: bool = False, stdin: bool = False
    ) -> ContainerStream:
        """Start ``cmd`` in the running container and return its stream handle.

        Raises NotFound, Invalid (container not running), Unsupported (no ``supports_exec_streaming``).
        """

    async def attach(self, container_id: str, *, stdin: bool = False) -> ContainerStream:
        """Attach to the main process (its tty if the container has one). Raises NotFound, Unsupported."""


@runtime_checkable
class ContainerStatsManager(Protocol):
    async def container_stats(self, container_id: str) -> ContainerStats:
        """Raises NotFound, Unsupported (no ``supports_stats``)."""

    async def list_container_stats(self, filter: ContainerFilter | None = None) -> list[ContainerStats]: ...


@runtime_checkable
class RuntimeService(RuntimeVersioner, PodSandboxManager, ContainerManager, ContainerStatsManager, Protocol):
    """Everything a node agent needs from a container runtime, besides images."""

    async def status(self, verbose: bool = False) -> RuntimeStatus:
        """Conditions RUNTIME_READY and NETWORK_READY (and any others)."""


@runtime_checkable
class ImageImporter(Protocol):
    """Optional beside ImageService: load images from a file, with no registry (``microkube image import``)."""

    async def import_archive(self, path: str, reference: str | None = None) -> Sequence[Any]:
        """Import an OCI image-layout or ``docker save`` tarball; ``reference`` names an image the archive
        leaves unnamed. Returns the images imported, each with ``.reference`` and ``.id``; raises
        errors.Invalid naming what is wrong with a malformed archive."""


@runtime_checkable
class ImageService(Protocol):
    """CRI's ImageService: the images present on the node."""

    async def list_images(self, filter: ImageFilter | None = None) -> list[Image]: ...

    async def image_status(self, image: ImageSpec, verbose: bool = False) -> Image | None:
        """The image (by reference, ``name@digest`` or id), or ``None`` when not present.

        Raises Invalid for a malformed reference.
        """

    async def pull_image(
        self, image: ImageSpec, auth: AuthConfig | None = None, sandbox_config: PodSandboxConfig | None = None
    ) -> str:
        """Fetch the image and make it present; returns its image ref (the id). Always contacts the
        registry (IfNotPresent is the caller's ``image_status`` first).

        Raises NotFound (the registry has no such image, naming the reference), Unauthenticated or
        Forbidden (credentials), Invalid (malformed reference), Permanent (content failed its digest),
        Retryable (registry unreachable).
        """

    async def remove_image(self, image: ImageSpec) -> None:
        """Remove the image. Idempotent: an absent image is success. Content no longer used by any
        image is freed."""

    async def image_fs_info(self) -> ImageFsInfo:
        """Usage of the filesystem(s) holding image content (and container layers, when separate)."""


@runtime_checkable
class Runtime(Protocol):
    """What a ``Registrar.runtimes`` factory returns."""

    @property
    def runtime(self) -> RuntimeService: ...

    @property
    def images(self) -> ImageService: ...

    @property
    def capabilities(self) -> RuntimeCapabilities: ...


def matches_labels(labels: dict[str, str], selector: dict[str, str]) -> bool:
    """CRI label filters: every selector entry is present in ``labels`` with the same value."""
    return all(labels.get(key) == value for key, value in selector.items())


__all__ = [
    "INTERFACE",
    "NETWORK_READY",
    "REASON_COMPLETED",
    "REASON_ERROR",
    "REASON_OOM_KILLED",
    "RUNTIME_READY",
    "VERSION",
    "AuthConfig",
    "Capability",
    "Container",
    "ContainerConfig",
    "ContainerFilter",
    "ContainerManager",
    "ContainerMetadata",
    "ContainerState",
    "ContainerStats",
    "ContainerStatsManager",
    "ContainerStatus",
    "ContainerStream",
    "CpuUsage",
    "DNSConfig",
    "Device",
    "ExecSyncResponse",
    "FilesystemUsage",
    "Image",
    "ImageFilter",
    "ImageFsInfo",
    "ImageService",
    "ImageSpec",
    "KeyValue",
    "LinuxContainerConfig",
    "LinuxContainerResources",
    "LinuxContainerSecurityContext",
    "LinuxPodSandboxConfig",
    "LinuxSandboxSecurityContext",
    "MemoryUsage",
    "Mount",
    "MountPropagation",
    "NamespaceMode",
    "NamespaceOption",
    "PodSandbox",
    "PodSandboxConfig",
    "PodSandboxFilter",
    "PodSandboxManager",
    "PodSandboxMetadata",
    "PodSandboxNetworkStatus",
    "PodSandboxState",
    "PodSandboxStatus",
    "PortMapping",
    "PortProtocol",
    "PortStream",
    "Runtime",
    "RuntimeCapabilities",
    "RuntimeCondition",
    "RuntimeService",
    "RuntimeStatus",
    "RuntimeVersioner",
    "VersionInfo",
    "matches_labels",
]
