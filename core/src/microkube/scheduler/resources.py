"""Turning pods and nodes into the framework's PodInfo and NodeInfo (integer resource amounts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from microkube.apiserver.quantity import parse_quantity
from microkube.client import Resource
from microkube.controllers.runtime import object_key
from microkube_interfaces.scheduling import NodeInfo, PodInfo, Resources

PODS = Resource("", "v1", "pods")

#: kube-scheduler scores containers that request nothing as if they asked for this much
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024

_STANDARD = {"cpu", "memory", "ephemeral-storage", "pods"}


def _amount(name: str, value: Any) -> int:
    quantity = parse_quantity(value)
    if name == "cpu":
        return int((quantity * 1000).to_integral_value(rounding="ROUND_CEILING"))
    return int(quantity.to_integral_value(rounding="ROUND_CEILING"))


def resources_of(amounts: dict[str, Any] | None) -> Resources:
    result = Resources()
    for name, value in (amounts or {}).items():
        try:
            amount = _amount(name, value)
        except ValueError:
            continue  # validated by the API server; never let one bad value stop scheduling
        if name == "cpu":
            result.milli_cpu = amount
        elif name == "memory":
            result.memory = amount
        elif name == "ephemeral-storage":
            result.ephemeral_storage = amount
        elif name == "pods":
            result.pods = amount
        elif name not in _STANDARD and ("/" in name or name.startswith("hugepages-")):
            result.scalar[name] = amount
    return result


def _add(into: Resources, other: Resources) -> None:
    into.milli_cpu += other.milli_cpu
    into.memory += other.memory
    into.ephemeral_storage += other.ephemeral_storage
    for name, amount in other.scalar.items():
        into.scalar[name] = into.scalar.get(name, 0) + amount


def _max(into: Resources, other: Resources) -> None:
    into.milli_cpu = max(into.milli_cpu, other.milli_cpu)
    into.memory = max(into.memory, other.memory)
    into.ephemeral_storage = max(into.ephemeral_storage, other.ephemeral_storage)
    for name, amount in other.scalar.items():
        into.scalar[name] = max(into.scalar.get(name, 0), amount)


def _container_requests(container: dict[str, Any], non_zero: bool) -> Resources:
    resources = container.get("resources") or {}
    # a limit without a request defaults the request to the limit (the API server does this too)
    amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    result = resources_of(amounts)
    if non_zero:
        if "cpu" not in amounts:
            result.milli_cpu = DEFAULT_MILLI_CPU
        if "memory" not in amounts:
            result.memory = DEFAULT_MEMORY
    return result


def pod_requests(spec: dict[str, Any], non_zero: bool = False) -> Resources:
    """Kubernetes' effective pod request: the sum of the containers (and restartable init containers,
    i.e. sidecars), or the largest init container if that is more, plus the pod overhead."""
    total = Resources()
    for container in spec.get("containers") or []:
        _add(total, _container_requests(container, non_zero))
    sidecars = Resources()
    init_peak = Resources()
    for container in spec.get("initContainers") or []:
        requests = _container_requests(container, False)
        if container.get("restartPolicy") == "Always":
            _add(sidecars, requests)
            _add(total, requests)
        else:
            running = Resources(sidecars.milli_cpu, sidecars.memory, sidecars.ephemeral_storage,
                                scalar=dict(sidecars.scalar))
            _add(running, requests)
            _max(init_peak, running)
    _max(total, init_peak)
    _add(total, resources_of(spec.get("overhead")))
    return total


def host_ports(spec: dict[str, Any]) -> tuple[tuple[str, str, int], ...]:
    ports = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                ports.append((port.get("hostIP") or "0.0.0.0", port.get("protocol") or "TCP", int(port["hostPort"])))
    return tuple(ports)


def has_pod_affinity(pod: dict[str, Any]) -> bool:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    return bool(affinity.get("podAffinity") or affinity.get("podAntiAffinity"))


def pod_info(pod: dict[str, Any], priority: int | None = None) -> PodInfo:
    spec = pod.get("spec") or {}
    return PodInfo(pod=pod, key=object_key(pod), requests=pod_requests(spec),
                   non_zero_requests=pod_requests(spec, non_zero=True),
                   priority=int(spec.get("priority") or 0) if priority is None else priority,
                   host_ports=host_ports(spec))


def node_info(node: dict[str, Any], pods: Iterable[PodInfo] = ()) -> NodeInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    allocatable = resources_of(status.get("allocatable") or status.get("capacity") or {})
    info = NodeInfo(node=node, name=meta.get("name", ""), labels=meta.get("labels") or {},
                    taints=list(spec.get("taints") or []), unschedulable=bool(spec.get("unschedulable")),
                    allocatable=allocatable)
    for pod in pods:
        add_pod(info, pod)
    return info


def add_pod(node: NodeInfo, pod: PodInfo) -> None:
    if pod.key in node.pods:
        remove_pod(node, pod.key)
    node.pods[pod.key] = pod
    _add(node.requested, pod.requests)
    _add(node.non_zero_requested, pod.non_zero_requests)
    node.requested.pods += 1
    node.used_ports.update(pod.host_ports)
    node.generation += 1


def remove_pod(node: NodeInfo, key: str) -> None:
    pod = node.pods.pop(key, None)
    if pod is None:
        return
    for into, amounts in ((node.requested, pod.requests), (node.non_zero_requested, pod.non_zero_requests)):
        into.milli_cpu -= amounts.milli_cpu
        into.memory -= amounts.memory
        into.ephemeral_storage -= amounts.ephemeral_storage
        for name, amount in amounts.scalar.items():
            into.scalar[name] = into.scalar.get(name, 0) - amount
    node.requested.pods -= 1
    node.used_ports = {port for other in node.pods.values() for port in other.host_ports}
    node.generation += 1
