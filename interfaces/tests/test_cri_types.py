"""cri/v1 types: defaults, immutability, the role Protocols and their proto-derived names."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from microkube_interfaces import cri
from microkube_interfaces.versioning import INTERFACE_VERSIONS


def test_interface_version_is_registered() -> None:
    assert cri.INTERFACE == "cri"
    assert cri.VERSION in INTERFACE_VERSIONS["cri"]


def test_enums_match_cri_v1_numbers() -> None:
    assert [s.name for s in cri.ContainerState] == [
        "CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED", "CONTAINER_UNKNOWN"]
    assert [int(s) for s in cri.ContainerState] == [0, 1, 2, 3]
    assert int(cri.PodSandboxState.SANDBOX_NOTREADY) == 1
    assert [m.name for m in cri.NamespaceMode] == ["POD", "CONTAINER", "NODE", "TARGET"]
    assert cri.REASON_OOM_KILLED == "OOMKilled"


def test_sandbox_config_defaults_and_frozen() -> None:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="web-0", uid="u1", namespace="default"),
        hostname="web-0", log_directory="/var/log/pods/default_web-0_u1",
        dns_config=cri.DNSConfig(servers=("10.96.0.10",), searches=("default.svc.cluster.local",)),
        port_mappings=(cri.PortMapping(container_port=80, host_port=8080),),
        labels={"app": "web"},
        linux=cri.LinuxPodSandboxConfig(cgroup_parent="/microkube/podu1"),
    )
    assert config.metadata.attempt == 0
    assert config.port_mappings[0].protocol is cri.PortProtocol.TCP
    assert config.linux.security_context.namespace_options.network is cri.NamespaceMode.POD
    assert config.linux.security_context.namespace_options.pid is cri.NamespaceMode.CONTAINER
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "x"  # type: ignore[misc]
    # Mutable defaults are never shared between instances.
    other = cri.PodSandboxConfig(metadata=config.metadata)
    assert other.labels == {} and other.labels is not cri.PodSandboxConfig(metadata=config.metadata).labels


def test_container_config_and_status() -> None:
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app"),
        image=cri.ImageSpec("busybox"),
        command=("/bin/sh", "-c"), args=("echo hi",),
        envs=(cri.KeyValue("A", "1"),),
        mounts=(cri.Mount("/data", "/var/lib/x", readonly=True),),
        devices=(cri.Device("/dev/fuse", "/dev/fuse"),),
        log_path="app/0.log", tty=True,
        linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20)),
    )
    assert config.linux.resources.cpu_quota == 0
    assert config.linux.security_context.run_as_user is None
    assert config.devices[0].permissions == "rwm"
    status = cri.ContainerStatus(
        id="c1", metadata=config.metadata, state=cri.ContainerState.CONTAINER_EXITED, created_at=1,
        started_at=2, finished_at=3, exit_code=137, reason=cri.REASON_OOM_KILLED)
    assert status.image.image == ""
    assert status.reason == "OOMKilled" and status.exit_code == 137


def test_runtime_status_ready() -> None:
    status = cri.RuntimeStatus((cri.RuntimeCondition(cri.RUNTIME_READY, True),
                                cri.RuntimeCondition(cri.NETWORK_READY, False, "NoCNI", "no network")))
    assert not status.ready
    condition = status.condition(cri.NETWORK_READY)
    assert condition is not None and condition.reason == "NoCNI"
    assert status.condition("Other") is None
    ok = cri.RuntimeStatus((cri.RuntimeCondition(cri.RUNTIME_READY, True),
                            cri.RuntimeCondition(cri.NETWORK_READY, True)))
    assert ok.ready
    assert not cri.RuntimeStatus().ready


def test_capabilities_default_to_nothing_optional() -> None:
    caps = cri.RuntimeCapabilities()
    assert not caps.networks_pods_itself and not caps.supports_exec_streaming
    assert not caps.supports_port_forward and not caps.supports_stats
    assert caps.cgroup_driver == "cgroupfs"


def test_matches_labels() -> None:
    assert cri.matches_labels({"a": "1", "b": "2"}, {"a": "1"})
    assert not cri.matches_labels({"a": "1"}, {"a": "2"})
    assert cri.matches_labels({}, {})


def _methods(proto: type) -> set[str]:
    return {name for name, value in vars(proto).items() if inspect.iscoroutinefunction(value)}


def test_role_interfaces_carry_the_cri_calls() -> None:
    runtime = set()
    for role in inspect.getmro(cri.RuntimeService):
        runtime |= _methods(role)
    assert runtime >= {
        "version", "run_pod_sandbox", "stop_pod_sandbox", "remove_pod_sandbox", "pod_sandbox_status",
        "list_pod_sandbox", "create_container", "start_container", "stop_container", "remove_container",
        "container_status", "list_containers", "exec_sync", "exec", "attach", "port_forward",
        "container_stats", "list_container_stats", "update_container_resources", "reopen_container_log",
        "status"}
    assert _methods(cri.ImageService) == {"list_images", "image_status", "pull_image", "remove_image", "image_fs_info"}
    assert "timeout" in inspect.signature(cri.ContainerManager.stop_container).parameters
    assert "auth" in inspect.signature(cri.ImageService.pull_image).parameters


def test_idempotency_and_errors_are_documented() -> None:
    for method in (cri.PodSandboxManager.stop_pod_sandbox, cri.PodSandboxManager.remove_pod_sandbox,
                   cri.ContainerManager.stop_container, cri.ContainerManager.remove_container,
                   cri.ImageService.remove_image):
        assert "Idempotent" in (method.__doc__ or ""), method.__qualname__
    for method in (cri.PodSandboxManager.pod_sandbox_status, cri.ContainerManager.container_status):
        assert "NotFound" in (method.__doc__ or "")


class _FakeImages:
    async def list_images(self, filter: cri.ImageFilter | None = None) -> list[cri.Image]:
        return []

    async def image_status(self, image: cri.ImageSpec, verbose: bool = False) -> cri.Image | None:
        return None

    async def pull_image(self, image: cri.ImageSpec, auth: cri.AuthConfig | None = None,
                         sandbox_config: cri.PodSandboxConfig | None = None) -> str:
        return "sha256:" + "0" * 64

    async def remove_image(self, image: cri.ImageSpec) -> None:
        return None

    async def image_fs_info(self) -> cri.ImageFsInfo:
        return cri.ImageFsInfo()


def test_protocols_are_runtime_checkable() -> None:
    images: cri.ImageService = _FakeImages()
    assert isinstance(images, cri.ImageService)
    assert not isinstance(images, cri.RuntimeService)
