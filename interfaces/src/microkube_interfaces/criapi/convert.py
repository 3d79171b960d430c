"""Conversions between the cri/v1 dataclasses (``microkube_interfaces.cri``) and CRI v1 protobuf messages.

Both sides of a CRI gRPC connection use them: a client pack (``to_pb`` requests, ``from_pb`` answers) and
a server exposing a runtime pack (the reverse). Needs ``microkube-interfaces[grpc]``.

What the two shapes cannot both carry:

- ``LinuxContainerResources.pids_limit`` has no field in CRI v1 (cri-api v0.32): it is dropped on the wire.
- ``seccomp_profile`` strings map to ``SecurityProfile``: ``""`` leaves the message unset (the runtime's
  default, unconfined on containerd 1.6), ``unconfined``, ``runtime/default`` and ``localhost/<path>``.
- Windows fields, SELinux options, user namespaces, CDI devices and id mappings are not modelled.
- Errors travel as gRPC status codes: ``CODES`` (ours → gRPC name) and ``error_for_code`` (the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from microkube_interfaces import cri, errors
from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb

# --- errors ---------------------------------------------------------------------------------------

#: microkube error → gRPC status code name (``grpc.StatusCode[name]``); anything else is INTERNAL.
CODES: tuple[tuple[type[errors.MicrokubeError], str], ...] = (
    (errors.NotFound, "NOT_FOUND"),
    (errors.AlreadyExists, "ALREADY_EXISTS"),
    (errors.Conflict, "ABORTED"),
    (errors.Invalid, "INVALID_ARGUMENT"),
    (errors.Unauthenticated, "UNAUTHENTICATED"),
    (errors.Forbidden, "PERMISSION_DENIED"),
    (errors.Expired, "DEADLINE_EXCEEDED"),
    (errors.Retryable, "UNAVAILABLE"),
    (errors.Unsupported, "UNIMPLEMENTED"),
    (errors.Permanent, "FAILED_PRECONDITION"),
)


def code_for_error(exc: BaseException) -> str:
    for kind, code in CODES:
        if isinstance(exc, kind):
            return code
    return "INTERNAL"


def error_for_code(code: str, message: str) -> errors.MicrokubeError:
    """The microkube error for a gRPC status code name (``NOT_FOUND``…) and its details."""
    if code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"):
        return errors.Retryable(message)
    if code == "DEADLINE_EXCEEDED":
        return errors.Retryable(message)
    for kind, name in CODES:
        if name == code and kind is not errors.Retryable and kind is not errors.Expired:
            return kind(message)
    if code == "OUT_OF_RANGE":
        return errors.Invalid(message)
    return errors.Permanent(f"{code}: {message}" if message else code)


# --- small pieces ---------------------------------------------------------------------------------


def _map(values: Mapping[str, str]) -> dict[str, str]:
    return dict(values)


def _opt_int64(value: int | None) -> pb.Int64Value | None:
    return None if value is None else pb.Int64Value(value=value)


def _from_int64(message: Any, name: str) -> int | None:
    return int(getattr(message, name).value) if message.HasField(name) else None


def _u64(message: Any, name: str) -> int:
    return int(getattr(message, name).value) if message.HasField(name) else 0


def image_spec_to_pb(spec: cri.ImageSpec) -> pb.ImageSpec:
    return pb.ImageSpec(image=spec.image, annotations=_map(spec.annotations),
                        user_specified_image=spec.user_specified_image, runtime_handler=spec.runtime_handler)


def image_spec_from_pb(m: pb.ImageSpec) -> cri.ImageSpec:
    return cri.ImageSpec(image=m.image, annotations=dict(m.annotations),
                         user_specified_image=m.user_specified_image, runtime_handler=m.runtime_handler)


def mount_to_pb(m: cri.Mount) -> pb.Mount:
    return pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                    selinux_relabel=m.selinux_relabel, propagation=int(m.propagation))  # type: ignore[arg-type]


def mount_from_pb(m: pb.Mount) -> cri.Mount:
    return cri.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                     selinux_relabel=m.selinux_relabel, propagation=cri.MountPropagation(m.propagation))


def namespace_option_to_pb(o: cri.NamespaceOption) -> pb.NamespaceOption:
    return pb.NamespaceOption(network=int(o.network), pid=int(o.pid), ipc=int(o.ipc),  # type: ignore[arg-type]
                              target_id=o.target_id)


def namespace_option_from_pb(m: pb.NamespaceOption) -> cri.NamespaceOption:
    return cri.NamespaceOption(network=cri.NamespaceMode(m.network), pid=cri.NamespaceMode(m.pid),
                               ipc=cri.NamespaceMode(m.ipc), target_id=m.target_id)


def resources_to_pb(r: cri.LinuxContainerResources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes, oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        hugepage_limits=[pb.HugepageLimit(page_size=k, limit=v) for k, v in r.hugepage_limits.items()],
        unified=_map(r.unified), memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes)


def resources_from_pb(m: pb.LinuxContainerResources) -> cri.LinuxContainerResources:
    return cri.LinuxContainerResources(
        cpu_period=m.cpu_period, cpu_quota=m.cpu_quota, cpu_shares=m.cpu_shares,
        memory_limit_in_bytes=m.memory_limit_in_bytes, oom_score_adj=m.oom_score_adj,
        cpuset_cpus=m.cpuset_cpus, cpuset_mems=m.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in m.hugepage_limits}, unified=dict(m.unified),
        memory_swap_limit_in_bytes=m.memory_swap_limit_in_bytes)


def seccomp_to_pb(profile: str) -> pb.SecurityProfile | None:
    if not profile:
        return None
    if profile == "unconfined":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    if profile == "runtime/default":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    if profile.startswith("localhost/"):
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost,
                                  localhost_ref=profile[len("localhost/"):])
    raise errors.Invalid(f"seccomp_profile {profile!r}: use '', 'unconfined', 'runtime/default' or "
                         "'localhost/<path>'")


def seccomp_from_pb(context: Any) -> str:
    if context.HasField("seccomp"):
        s = context.seccomp
        if s.profile_type == pb.SecurityProfile.Unconfined:
            return "unconfined"
        if s.profile_type == pb.SecurityProfile.Localhost:
            return f"localhost/{s.localhost_ref}"
        return "runtime/default"
    return str(context.seccomp_profile_path)


# --- sandboxes ------------------------------------------------------------------------------------


def sandbox_metadata_to_pb(m: cri.PodSandboxMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def sandbox_metadata_from_pb(m: pb.PodSandboxMetadata) -> cri.PodSandboxMetadata:
    return cri.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def sandbox_config_to_pb(c: cri.PodSandboxConfig) -> pb.PodSandboxConfig:
    sc = c.linux.security_context
    security = pb.LinuxSandboxSecurityContext(
        namespace_options=namespace_option_to_pb(sc.namespace_options),
        run_as_user=_opt_int64(sc.run_as_user), run_as_group=_opt_int64(sc.run_as_group),
        readonly_rootfs=sc.readonly_rootfs, supplemental_groups=list(sc.supplemental_groups),
        privileged=sc.privileged, seccomp=seccomp_to_pb(sc.seccomp_profile))
    linux = pb.LinuxPodSandboxConfig(
        cgroup_parent=c.linux.cgroup_parent, security_context=security, sysctls=_map(c.linux.sysctls),
        resources=resources_to_pb(c.linux.resources) if c.linux.resources is not None else None)
    dns = c.dns_config
    return pb.PodSandboxConfig(
        metadata=sandbox_metadata_to_pb(c.metadata), hostname=c.hostname, log_directory=c.log_directory,
        dns_config=pb.DNSConfig(servers=list(dns.servers), searches=list(dns.searches), options=list(dns.options))
        if dns is not None else None,
        port_mappings=[pb.PortMapping(protocol=int(p.protocol), container_port=p.container_port,  # type: ignore[arg-type]
                                      host_port=p.host_port, host_ip=p.host_ip) for p in c.port_mappings],
        labels=_map(c.labels), annotations=_map(c.annotations), linux=linux)


def sandbox_config_from_pb(m: pb.PodSandboxConfig) -> cri.PodSandboxConfig:
    sc = m.linux.security_context
    security = cri.LinuxSandboxSecurityContext(
        namespace_options=namespace_option_from_pb(sc.namespace_options),
        run_as_user=_from_int64(sc, "run_as_user"), run_as_group=_from_int64(sc, "run_as_group"),
        readonly_rootfs=sc.readonly_rootfs, supplemental_groups=tuple(sc.supplemental_groups),
        privileged=sc.privileged, seccomp_profile=seccomp_from_pb(sc))
    linux = cri.LinuxPodSandboxConfig(
        cgroup_parent=m.linux.cgroup_parent, security_context=security, sysctls=dict(m.linux.sysctls),
        resources=resources_from_pb(m.linux.resources) if m.linux.HasField("resources") else None)
    dns = cri.DNSConfig(servers=tuple(m.dns_config.servers), searches=tuple(m.dns_config.searches),
                        options=tuple(m.dns_config.options)) if m.HasField("dns_config") else None
    return cri.PodSandboxConfig(
        metadata=sandbox_metadata_from_pb(m.metadata), hostname=m.hostname, log_directory=m.log_directory,
        dns_config=dns,
        port_mappings=tuple(cri.PortMapping(container_port=p.container_port, host_port=p.host_port,
                                            protocol=cri.PortProtocol(p.protocol), host_ip=p.host_ip)
                            for p in m.port_mappings),
        labels=dict(m.labels), annotations=dict(m.annotations), linux=linux)


def sandbox_status_to_pb(s: cri.PodSandboxStatus) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=s.id, metadata=sandbox_metadata_to_pb(s.metadata), state=int(s.state),  # type: ignore[arg-type]
        created_at=s.created_at,
        network=pb.PodSandboxNetworkStatus(ip=s.network.ip,
                                           additional_ips=[pb.PodIP(ip=ip) for ip in s.network.additional_ips]),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=namespace_option_to_pb(s.namespace_options))),
        labels=_map(s.labels), annotations=_map(s.annotations), runtime_handler=s.runtime_handler)


def sandbox_status_from_pb(m: pb.PodSandboxStatus, info: Mapping[str, str] | None = None) -> cri.PodSandboxStatus:
    return cri.PodSandboxStatus(
        id=m.id, metadata=sandbox_metadata_from_pb(m.metadata), state=cri.PodSandboxState(m.state),
        created_at=m.created_at,
        network=cri.PodSandboxNetworkStatus(ip=m.network.ip,
                                            additional_ips=tuple(ip.ip for ip in m.network.additional_ips)),
        namespace_options=namespace_option_from_pb(m.linux.namespaces.options),
        labels=dict(m.labels), annotations=dict(m.annotations), runtime_handler=m.runtime_handler,
        info=dict(info or {}))


def sandbox_to_pb(s: cri.PodSandbox) -> pb.PodSandbox:
    return pb.PodSandbox(id=s.id, metadata=sandbox_metadata_to_pb(s.metadata), state=int(s.state),  # type: ignore[arg-type]
                         created_at=s.created_at, labels=_map(s.labels), annotations=_map(s.annotations),
                         runtime_handler=s.runtime_handler)


def sandbox_from_pb(m: pb.PodSandbox) -> cri.PodSandbox:
    return cri.PodSandbox(id=m.id, metadata=sandbox_metadata_from_pb(m.metadata), state=cri.PodSandboxState(m.state),
                          created_at=m.created_at, labels=dict(m.labels), annotations=dict(m.annotations),
                          runtime_handler=m.runtime_handler)


def sandbox_filter_to_pb(f: cri.PodSandboxFilter | None) -> pb.PodSandboxFilter | None:
    if f is None:
        return None
    state = pb.PodSandboxStateValue(state=int(f.state)) if f.state is not None else None  # type: ignore[arg-type]
    return pb.PodSandboxFilter(id=f.id, state=state, label_selector=_map(f.label_selector))


def sandbox_filter_from_pb(m: pb.PodSandboxFilter, present: bool) -> cri.PodSandboxFilter | None:
    if not present:
        return None
    return cri.PodSandboxFilter(id=m.id, state=cri.PodSandboxState(m.state.state) if m.HasField("state") else None,
                                label_selector=dict(m.label_selector))


# --- containers -----------------------------------------------------------------------------------


def container_config_to_pb(c: cri.ContainerConfig) -> pb.ContainerConfig:
    sc = c.linux.security_context
    security = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=list(sc.capabilities.add_capabilities),
                                   drop_capabilities=list(sc.capabilities.drop_capabilities),
                                   add_ambient_capabilities=list(sc.capabilities.add_ambient_capabilities)),
        privileged=sc.privileged, namespace_options=namespace_option_to_pb(sc.namespace_options),
        run_as_user=_opt_int64(sc.run_as_user), run_as_group=_opt_int64(sc.run_as_group),
        run_as_username=sc.run_as_username, readonly_rootfs=sc.readonly_rootfs,
        supplemental_groups=list(sc.supplemental_groups), no_new_privs=sc.no_new_privs,
        masked_paths=list(sc.masked_paths), readonly_paths=list(sc.readonly_paths),
        seccomp=seccomp_to_pb(sc.seccomp_profile))
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=c.metadata.name, attempt=c.metadata.attempt),
        image=image_spec_to_pb(c.image), command=list(c.command), args=list(c.args), working_dir=c.working_dir,
        envs=[pb.KeyValue(key=e.key, value=e.value) for e in c.envs], mounts=[mount_to_pb(m) for m in c.mounts],
        devices=[pb.Device(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
                 for d in c.devices],
        labels=_map(c.labels), annotations=_map(c.annotations), log_path=c.log_path, stdin=c.stdin,
        stdin_once=c.stdin_once, tty=c.tty,
        linux=pb.LinuxContainerConfig(resources=resources_to_pb(c.linux.resources), security_context=security))


def container_config_from_pb(m: pb.ContainerConfig) -> cri.ContainerConfig:
    sc = m.linux.security_context
    security = cri.LinuxContainerSecurityContext(
        capabilities=cri.Capability(add_capabilities=tuple(sc.capabilities.add_capabilities),
                                    drop_capabilities=tuple(sc.capabilities.drop_capabilities),
                                    add_ambient_capabilities=tuple(sc.capabilities.add_ambient_capabilities)),
        privileged=sc.privileged, namespace_options=namespace_option_from_pb(sc.namespace_options),
        run_as_user=_from_int64(sc, "run_as_user"), run_as_group=_from_int64(sc, "run_as_group"),
        run_as_username=sc.run_as_username, readonly_rootfs=sc.readonly_rootfs,
        supplemental_groups=tuple(sc.supplemental_groups), no_new_privs=sc.no_new_privs,
        masked_paths=tuple(sc.masked_paths), readonly_paths=tuple(sc.readonly_paths),
        seccomp_profile=seccomp_from_pb(sc))
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=m.metadata.name, attempt=m.metadata.attempt),
        image=image_spec_from_pb(m.image), command=tuple(m.command), args=tuple(m.args), working_dir=m.working_dir,
        envs=tuple(cri.KeyValue(key=e.key, value=e.value) for e in m.envs),
        mounts=tuple(mount_from_pb(x) for x in m.mounts),
        devices=tuple(cri.Device(container_path=d.container_path, host_path=d.host_path,
                                 permissions=d.permissions or "rwm") for d in m.devices),
        labels=dict(m.labels), annotations=dict(m.annotations), log_path=m.log_path, stdin=m.stdin,
        stdin_once=m.stdin_once, tty=m.tty,
        linux=cri.LinuxContainerConfig(resources=resources_from_pb(m.linux.resources), security_context=security))


def container_status_to_pb(s: cri.ContainerStatus) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        id=s.id, metadata=pb.ContainerMetadata(name=s.metadata.name, attempt=s.metadata.attempt),
        state=int(s.state), created_at=s.created_at, started_at=s.started_at,  # type: ignore[arg-type]
        finished_at=s.finished_at, exit_code=s.exit_code, image=image_spec_to_pb(s.image), image_ref=s.image_ref,
        reason=s.reason, message=s.message, labels=_map(s.labels), annotations=_map(s.annotations),
        mounts=[mount_to_pb(m) for m in s.mounts], log_path=s.log_path,
        resources=pb.ContainerResources(linux=resources_to_pb(s.resources)) if s.resources is not None else None)


def container_status_from_pb(m: pb.ContainerStatus) -> cri.ContainerStatus:
    resources = (resources_from_pb(m.resources.linux)
                 if m.HasField("resources") and m.resources.HasField("linux") else None)
    return cri.ContainerStatus(
        id=m.id, metadata=cri.ContainerMetadata(name=m.metadata.name, attempt=m.metadata.attempt),
        state=cri.ContainerState(m.state), created_at=m.created_at, started_at=m.started_at,
        finished_at=m.finished_at, exit_code=m.exit_code, image=image_spec_from_pb(m.image), image_ref=m.image_ref,
        reason=m.reason, message=m.message, labels=dict(m.labels), annotations=dict(m.annotations),
        mounts=tuple(mount_from_pb(x) for x in m.mounts), log_path=m.log_path, resources=resources)


def container_to_pb(c: cri.Container) -> pb.Container:
    return pb.Container(id=c.id, pod_sandbox_id=c.pod_sandbox_id,
                        metadata=pb.ContainerMetadata(name=c.metadata.name, attempt=c.metadata.attempt),
                        image=image_spec_to_pb(c.image), image_ref=c.image_ref, state=int(c.state),  # type: ignore[arg-type]
                        created_at=c.created_at, labels=_map(c.labels), annotations=_map(c.annotations))


def container_from_pb(m: pb.Container) -> cri.Container:
    return cri.Container(id=m.id, pod_sandbox_id=m.pod_sandbox_id,
                         metadata=cri.ContainerMetadata(name=m.metadata.name, attempt=m.metadata.attempt),
                         image=image_spec_from_pb(m.image), image_ref=m.image_ref, state=cri.ContainerState(m.state),
                         created_at=m.created_at, labels=dict(m.labels), annotations=dict(m.annotations))


def container_filter_to_pb(f: cri.ContainerFilter | None) -> pb.ContainerFilter | None:
    if f is None:
        return None
    state = pb.ContainerStateValue(state=int(f.state)) if f.state is not None else None  # type: ignore[arg-type]
    return pb.ContainerFilter(id=f.id, state=state, pod_sandbox_id=f.pod_sandbox_id,
                              label_selector=_map(f.label_selector))


def container_filter_from_pb(m: pb.ContainerFilter, present: bool) -> cri.ContainerFilter | None:
    if not present:
        return None
    return cri.ContainerFilter(id=m.id, state=cri.ContainerState(m.state.state) if m.HasField("state") else None,
                               pod_sandbox_id=m.pod_sandbox_id, label_selector=dict(m.label_selector))


def stats_filter_to_pb(f: cri.ContainerFilter | None) -> pb.ContainerStatsFilter | None:
    if f is None:
        return None
    return pb.ContainerStatsFilter(id=f.id, pod_sandbox_id=f.pod_sandbox_id, label_selector=_map(f.label_selector))


def stats_filter_from_pb(m: pb.ContainerStatsFilter, present: bool) -> cri.ContainerFilter | None:
    if not present:
        return None
    return cri.ContainerFilter(id=m.id, pod_sandbox_id=m.pod_sandbox_id, label_selector=dict(m.label_selector))


def _fs_to_pb(f: cri.FilesystemUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(timestamp=f.timestamp, fs_id=pb.FilesystemIdentifier(mountpoint=f.mountpoint),
                              used_bytes=pb.UInt64Value(value=f.used_bytes),
                              inodes_used=pb.UInt64Value(value=f.inodes_used))


def _fs_from_pb(m: pb.FilesystemUsage) -> cri.FilesystemUsage:
    return cri.FilesystemUsage(timestamp=m.timestamp, mountpoint=m.fs_id.mountpoint,
                               used_bytes=_u64(m, "used_bytes"), inodes_used=_u64(m, "inodes_used"))


def container_stats_to_pb(s: cri.ContainerStats) -> pb.ContainerStats:
    cpu = mem = None
    if s.cpu is not None:
        cpu = pb.CpuUsage(timestamp=s.cpu.timestamp,
                          usage_core_nano_seconds=pb.UInt64Value(value=s.cpu.usage_core_nano_seconds),
                          usage_nano_cores=pb.UInt64Value(value=s.cpu.usage_nano_cores))
    if s.memory is not None:
        m = s.memory
        mem = pb.MemoryUsage(timestamp=m.timestamp, working_set_bytes=pb.UInt64Value(value=m.working_set_bytes),
                             available_bytes=pb.UInt64Value(value=m.available_bytes),
                             usage_bytes=pb.UInt64Value(value=m.usage_bytes),
                             rss_bytes=pb.UInt64Value(value=m.rss_bytes),
                             page_faults=pb.UInt64Value(value=m.page_faults),
                             major_page_faults=pb.UInt64Value(value=m.major_page_faults))
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=s.id, metadata=pb.ContainerMetadata(name=s.metadata.name,
                                                                                attempt=s.metadata.attempt),
                                          labels=_map(s.labels), annotations=_map(s.annotations)),
        cpu=cpu, memory=mem, writable_layer=_fs_to_pb(s.writable_layer) if s.writable_layer is not None else None)


def container_stats_from_pb(m: pb.ContainerStats) -> cri.ContainerStats:
    a = m.attributes
    cpu = mem = None
    if m.HasField("cpu"):
        cpu = cri.CpuUsage(timestamp=m.cpu.timestamp, usage_core_nano_seconds=_u64(m.cpu, "usage_core_nano_seconds"),
                           usage_nano_cores=_u64(m.cpu, "usage_nano_cores"))
    if m.HasField("memory"):
        x = m.memory
        mem = cri.MemoryUsage(timestamp=x.timestamp, working_set_bytes=_u64(x, "working_set_bytes"),
                              available_bytes=_u64(x, "available_bytes"), usage_bytes=_u64(x, "usage_bytes"),
                              rss_bytes=_u64(x, "rss_bytes"), page_faults=_u64(x, "page_faults"),
                              major_page_faults=_u64(x, "major_page_faults"))
    return cri.ContainerStats(
        id=a.id, metadata=cri.ContainerMetadata(name=a.metadata.name, attempt=a.metadata.attempt),
        labels=dict(a.labels), annotations=dict(a.annotations), cpu=cpu, memory=mem,
        writable_layer=_fs_from_pb(m.writable_layer) if m.HasField("writable_layer") else None)


# --- runtime-wide and images ----------------------------------------------------------------------


def runtime_status_to_pb(s: cri.RuntimeStatus) -> pb.RuntimeStatus:
    return pb.RuntimeStatus(conditions=[pb.RuntimeCondition(type=c.type, status=c.status, reason=c.reason,
                                                            message=c.message) for c in s.conditions])


def runtime_status_from_pb(m: pb.RuntimeStatus) -> cri.RuntimeStatus:
    return cri.RuntimeStatus(conditions=tuple(cri.RuntimeCondition(type=c.type, status=c.status, reason=c.reason,
                                                                   message=c.message) for c in m.conditions))


def auth_to_pb(a: cri.AuthConfig | None) -> pb.AuthConfig | None:
    if a is None:
        return None
    return pb.AuthConfig(username=a.username, password=a.password, auth=a.auth, server_address=a.server_address,
                         identity_token=a.identity_token, registry_token=a.registry_token)


def auth_from_pb(m: pb.AuthConfig, present: bool) -> cri.AuthConfig | None:
    if not present:
        return None
    return cri.AuthConfig(username=m.username, password=m.password, auth=m.auth, server_address=m.server_address,
                          identity_token=m.identity_token, registry_token=m.registry_token)


def image_to_pb(i: cri.Image) -> pb.Image:
    return pb.Image(id=i.id, repo_tags=list(i.repo_tags), repo_digests=list(i.repo_digests), size=i.size,
                    uid=_opt_int64(i.uid), username=i.username,
                    spec=image_spec_to_pb(i.spec) if i.spec is not None else None, pinned=i.pinned)


def image_from_pb(m: pb.Image) -> cri.Image:
    return cri.Image(id=m.id, repo_tags=tuple(m.repo_tags), repo_digests=tuple(m.repo_digests), size=m.size,
                     uid=_from_int64(m, "uid"), username=m.username,
                     spec=image_spec_from_pb(m.spec) if m.HasField("spec") else None, pinned=m.pinned)


def image_fs_info_to_pb(i: cri.ImageFsInfo) -> pb.ImageFsInfoResponse:
    return pb.ImageFsInfoResponse(image_filesystems=[_fs_to_pb(f) for f in i.image_filesystems],
                                  container_filesystems=[_fs_to_pb(f) for f in i.container_filesystems])


def image_fs_info_from_pb(m: pb.ImageFsInfoResponse) -> cri.ImageFsInfo:
    return cri.ImageFsInfo(image_filesystems=tuple(_fs_from_pb(f) for f in m.image_filesystems),
                           container_filesystems=tuple(_fs_from_pb(f) for f in m.container_filesystems))


