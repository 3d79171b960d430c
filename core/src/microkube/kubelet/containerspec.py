"""From a pod spec to what the container runtime is asked for: CRI sandbox and container configs,
cgroup resources, security settings, and the labels by which the kubelet finds its own objects again
after a restart (the CRI labels kubelet itself uses, ``io.kubernetes.*``)."""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from typing import Any

from microkube.apiserver.quantity import parse_quantity
from microkube_interfaces import cri

Object = dict[str, Any]

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
#: Annotations on a container: which spec it runs, and its place in the restart sequence.
CONTAINER_HASH = "io.kubernetes.container.hash"
RESTART_COUNT = "io.kubernetes.container.restartCount"
TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
CONTAINER_KIND = "microkube.io/container-kind"  # "init", "sidecar" or "" (a regular container)

CPU_PERIOD = 100_000
MIN_SHARES = 2
SHARES_PER_CPU = 1024
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def containers(pod: Object) -> list[Object]:
    return list((pod.get("spec") or {}).get("containers") or [])


def init_containers(pod: Object) -> list[Object]:
    return list((pod.get("spec") or {}).get("initContainers") or [])


def is_sidecar(container: Object) -> bool:
    """An init container with restartPolicy Always keeps running beside the regular containers."""
    return container.get("restartPolicy") == "Always"


def container_hash(container: Object) -> str:
    """What identifies the spec a container instance was made from (a changed image means a new instance)."""
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def _quantity(resources: Object, section: str, name: str) -> Decimal | None:
    value = (resources.get(section) or {}).get(name)
    return None if value is None else parse_quantity(value)


def container_resources(container: Object) -> cri.LinuxContainerResources:
    """cgroup v1 settings as the kubelet derives them: cpu.shares from the CPU request (limit when no
    request), a CFS quota from the CPU limit, the memory limit. oom_score_adj is never negative on these
    machines (lowering it needs CAP_SYS_RESOURCE, which the bounding set lacks)."""
    resources = container.get("resources") or {}
    cpu_request = _quantity(resources, "requests", "cpu")
    cpu_limit = _quantity(resources, "limits", "cpu")
    memory_limit = _quantity(resources, "limits", "memory")
    if cpu_request is None:
        cpu_request = cpu_limit
    shares = MIN_SHARES if cpu_request is None else max(MIN_SHARES, int(cpu_request * SHARES_PER_CPU))
    quota = 0 if cpu_limit is None else max(1000, math.ceil(cpu_limit * CPU_PERIOD))
    return cri.LinuxContainerResources(
        cpu_period=CPU_PERIOD if quota else 0, cpu_quota=quota, cpu_shares=shares,
        memory_limit_in_bytes=0 if memory_limit is None else int(memory_limit),
        oom_score_adj=oom_score_adj(container))


def qos_class(pod: Object) -> str:
    """Guaranteed, Burstable or BestEffort (the pod QoS rules of kube's qos.GetPodQOS)."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in containers(pod) + init_containers(pod):
        resources = container.get("resources") or {}
        container_limits = {k: parse_quantity(v) for k, v in (resources.get("limits") or {}).items()
                            if k in ("cpu", "memory")}
        container_requests = {k: parse_quantity(v) for k, v in (resources.get("requests") or {}).items()
                              if k in ("cpu", "memory")}
        for name, value in container_requests.items():
            requests[name] = requests.get(name, Decimal(0)) + value
        for name, value in container_limits.items():
            limits[name] = limits.get(name, Decimal(0)) + value
        if set(container_limits) != {"cpu", "memory"}:
            guaranteed = False
        for name, value in container_requests.items():
            if container_limits.get(name) != value:
                guaranteed = False
    if not any(requests.values()) and not any(limits.values()):
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def oom_score_adj(container: Object) -> int:
    resources = container.get("resources") or {}
    if not resources.get("requests") and not resources.get("limits"):
        return 1000
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    if limits.get("memory") and limits.get("cpu") and all(
            requests.get(k) in (None, limits.get(k)) for k in ("cpu", "memory")):
        return 0  # Guaranteed: kube asks -997, which these machines refuse; 0 is the lowest allowed
    return 500


def _security(pod: Object, container: Object) -> cri.LinuxContainerSecurityContext:
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    security = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return security.get(key, pod_security.get(key))

    capabilities = security.get("capabilities") or {}
    return cri.LinuxContainerSecurityContext(
        capabilities=cri.Capability(
            add_capabilities=tuple(c.removeprefix("CAP_") for c in capabilities.get("add") or []),
            drop_capabilities=tuple(c.removeprefix("CAP_") for c in capabilities.get("drop") or [])),
        privileged=bool(security.get("privileged")),
        namespace_options=namespace_options(pod),
        run_as_user=pick("runAsUser"),
        run_as_group=pick("runAsGroup"),
        readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
        supplemental_groups=tuple(pod_security.get("supplementalGroups") or ()),
        no_new_privs=security.get("allowPrivilegeEscalation") is False,
    )


def namespace_options(pod: Object) -> cri.NamespaceOption:
    spec = pod.get("spec") or {}
    return cri.NamespaceOption(
        network=cri.NamespaceMode.NODE if spec.get("hostNetwork") else cri.NamespaceMode.POD,
        pid=cri.NamespaceMode.NODE if spec.get("hostPID") else (
            cri.NamespaceMode.POD if spec.get("shareProcessNamespace") else cri.NamespaceMode.CONTAINER),
        ipc=cri.NamespaceMode.NODE if spec.get("hostIPC") else cri.NamespaceMode.POD,
    )


def pod_labels(pod: Object) -> dict[str, str]:
    meta = pod["metadata"]
    return {**(meta.get("labels") or {}), POD_NAME: meta["name"], POD_NAMESPACE: meta.get("namespace", "default"),
            POD_UID: meta["uid"]}


def pod_memory_limit(pod: Object) -> int:
    """The pod cgroup's memory limit: the sum of its containers' limits, when every container has one."""
    total = 0
    for container in containers(pod):
        limit = _quantity(container.get("resources") or {}, "limits", "memory")
        if limit is None:
            return 0
        total += int(limit)
    return total


def sandbox_config(pod: Object, *, log_directory: str, attempt: int) -> cri.PodSandboxConfig:
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    dns = spec.get("dnsConfig") or {}
    dns_config = None
    if spec.get("dnsPolicy") == "None" or dns:
        dns_config = cri.DNSConfig(servers=tuple(dns.get("nameservers") or ()),
                                   searches=tuple(dns.get("searches") or ()),
                                   options=tuple(o["name"] + (f":{o['value']}" if o.get("value") else "")
                                                 for o in dns.get("options") or [] if o.get("name")))
    ports = tuple(
        cri.PortMapping(container_port=int(port["containerPort"]), host_port=int(port["hostPort"]),
                        protocol=cri.PortProtocol[str(port.get("protocol") or "TCP")], host_ip=port.get("hostIP", ""))
        for container in containers(pod) for port in container.get("ports") or [] if port.get("hostPort"))
    pod_security = spec.get("securityContext") or {}
    memory = pod_memory_limit(pod)
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=meta["name"], uid=meta["uid"],
                                        namespace=meta.get("namespace", "default"), attempt=attempt),
        hostname=(spec.get("hostname") or meta["name"])[:63],
        log_directory=log_directory,
        dns_config=dns_config,
        port_mappings=ports,
        labels=pod_labels(pod),
        annotations=dict(meta.get("annotations") or {}),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=namespace_options(pod), run_as_user=pod_security.get("runAsUser"),
                run_as_group=pod_security.get("runAsGroup"),
                supplemental_groups=tuple(pod_security.get("supplementalGroups") or ())),
            sysctls={s["name"]: str(s.get("value", "")) for s in pod_security.get("sysctls") or [] if s.get("name")},
            resources=cri.LinuxContainerResources(memory_limit_in_bytes=memory) if memory else None,
        ),
    )


def container_config(pod: Object, container: Object, *, kind: str, restart_count: int,
                     image: str, envs: list[cri.KeyValue], mounts: list[cri.Mount]) -> cri.ContainerConfig:
    meta = pod["metadata"]
    name = container["name"]
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=restart_count),
        image=cri.ImageSpec(image, user_specified_image=str(container.get("image") or "")),
        command=tuple(container.get("command") or ()),
        args=tuple(container.get("args") or ()),
        working_dir=str(container.get("workingDir") or ""),
        envs=tuple(envs),
        mounts=tuple(mounts),
        labels={CONTAINER_NAME: name, POD_NAME: meta["name"], POD_NAMESPACE: meta.get("namespace", "default"),
                POD_UID: meta["uid"]},
        annotations={CONTAINER_HASH: container_hash(container), RESTART_COUNT: str(restart_count),
                     CONTAINER_KIND: kind,
                     TERMINATION_MESSAGE_PATH: str(container.get("terminationMessagePath")
                                                   or DEFAULT_TERMINATION_MESSAGE_PATH)},
        log_path=f"{name}/{restart_count}.log",
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=cri.LinuxContainerConfig(resources=container_resources(container),
                                       security_context=_security(pod, container)),
    )


def pull_policy(container: Object) -> str:
    """The pod's imagePullPolicy, or the default: Always for ``:latest`` or untagged images, else IfNotPresent."""
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(container.get("image") or "")
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


#: Images under this registry name are built or imported on the node (``microkube image import``, the
#: busybox image); no registry serves them, so they are never pulled.
LOCAL_REGISTRY = "microkube.local"


def is_local_image(image: str) -> bool:
    return image.split("/", 1)[0] == LOCAL_REGISTRY
