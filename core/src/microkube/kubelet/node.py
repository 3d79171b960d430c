"""The kubelet's Node: registration with the machine's real capacity and identity, the Lease it renews
in ``kube-node-lease`` (every 10 s, 40 s duration, as the kubelet), and node status with conditions
(Ready from the runtime and the pod network; memory, disk and PID pressure from the machine), written when
it changes and at least once a minute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microkube.client import ApiStatusError, Client, Resource
from microkube.kubelet import machine
from microkube.timestamps import format_micro_time, format_time, utcnow
from microkube_interfaces import errors

log = logging.getLogger(__name__)

Object = dict[str, Any]
NODES = Resource("", "v1", "nodes", namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
KUBELET_VERSION = "v1.32.0-microkube"
FIELD_MANAGER = "microkube-kubelet"
STATUS_REPORT_EVERY = 60.0


def merge_conditions(wanted: list[Object], previous: list[Object] | None, now: str) -> list[Object]:
    """``wanted`` conditions stamped with a heartbeat; a condition keeps its lastTransitionTime while its
    status stays; conditions others own (NetworkUnavailable, …) are kept as they are."""
    before = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    out = []
    for condition in wanted:
        old = before.pop(condition["type"], None)
        transition = old.get("lastTransitionTime") if old and old.get("status") == condition["status"] else None
        out.append({**condition, "lastHeartbeatTime": now, "lastTransitionTime": transition or now})
    return out + list(before.values())


class NodeAgent:
    """Registers the node and keeps its Lease and status current."""

    def __init__(self, client: Client, name: str, *, root: Path, node_ip: str | None, port: Callable[[], int],
                 runtime_version: str, readiness: Callable[[], tuple[bool, str]],
                 labels: dict[str, str] | None = None, taints: list[Object] | None = None, max_pods: int = 110,
                 lease_interval: float = 10.0, status_interval: float = 10.0) -> None:
        self.client = client
        self.name = name
        self.root = root
        self.node_ip = node_ip
        self.port = port
        self.runtime_version = runtime_version
        self.readiness = readiness
        self.labels = dict(labels or {})
        self.taints = list(taints or [])
        self.max_pods = max_pods
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.uid = ""
        self.pod_cidr = ""
        self.capacity = machine.capacity(root, max_pods)
        self.allocatable = machine.allocatable(self.capacity)
        self.addresses = machine.addresses(name, node_ip)
        self._last_written: Object | None = None
        self._last_write = 0.0

    @property
    def internal_ip(self) -> str:
        return next((a["address"] for a in self.addresses if a["type"] == "InternalIP"), "127.0.0.1")

    def node_object(self) -> Object:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": machine.node_info("", "")["architecture"],
                  "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": machine.node_info("", "")["architecture"], **self.labels}
        obj: Object = {"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": self.name, "labels": labels,
                                    "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                       "spec": {}}
        if self.taints:
            obj["spec"]["taints"] = self.taints
        return obj

    def conditions(self) -> list[Object]:
        wanted = [{k: v for k, v in c.items() if k in ("type", "status", "reason", "message")}
                  for c in machine.pressure_conditions(self.root)]
        ready, message = self.readiness()
        wanted.append({"type": "Ready", "status": "True" if ready else "False",
                       "reason": "KubeletReady" if ready else "KubeletNotReady",
                       "message": "kubelet is posting ready status" if ready else message})
        return wanted

    def status(self, previous: list[Object] | None) -> Object:
        return {
            "capacity": self.capacity,
            "allocatable": self.allocatable,
            "conditions": merge_conditions(self.conditions(), previous, format_time(utcnow())),
            "addresses": self.addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port()}},
            "nodeInfo": machine.node_info(self.runtime_version, KUBELET_VERSION),
        }

    def _learn(self, obj: Object) -> None:
        self.uid = str(obj["metadata"].get("uid") or self.uid)
        cidr = str((obj.get("spec") or {}).get("podCIDR") or "")
        if cidr:
            self.pod_cidr = cidr

    async def register(self) -> None:
        with contextlib.suppress(errors.AlreadyExists):
            try:
                await self.client.get(NAMESPACES, LEASE_NAMESPACE)
            except errors.NotFound:
                await self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": LEASE_NAMESPACE}})
        wanted = self.node_object()
        try:
            obj = await self.client.create(NODES, wanted, field_manager=FIELD_MANAGER)
            log.info("registered node %s", self.name)
        except errors.AlreadyExists:
            obj = await self.client.patch(NODES, self.name, {"metadata": {"labels": wanted["metadata"]["labels"]}},
                                          field_manager=FIELD_MANAGER)
            log.info("node %s already registered; adopted it", self.name)
        self._learn(obj)
        await self.write_status(force=True)
        await self.renew_lease()

    async def refresh(self) -> None:
        """Learn what others set on the Node (spec.podCIDR from the node IPAM controller)."""
        self._learn(await self.client.get(NODES, self.name))

    async def write_status(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        current = await self.client.get(NODES, self.name)
        self._learn(current)
        previous = (current.get("status") or {}).get("conditions")
        status = self.status(previous)
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if not k.endswith("Time")}
                                               for c in status["conditions"]]}
        if not force and comparable == self._last_written and loop.time() - self._last_write < STATUS_REPORT_EVERY:
            return
        obj = await self.client.patch(NODES, self.name, {"status": status}, subresource="status",
                                      field_manager=FIELD_MANAGER)
        self._learn(obj)
        self._last_written, self._last_write = comparable, loop.time()

    async def renew_lease(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": format_micro_time(utcnow())}
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}] if self.uid else []
        try:
            await self.client.patch(LEASES, self.name, {"metadata": {"ownerReferences": owner}, "spec": spec},
                                    LEASE_NAMESPACE, field_manager=FIELD_MANAGER)
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await self.client.create(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                  "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE,
                                                               "ownerReferences": owner},
                                                  "spec": spec}, LEASE_NAMESPACE, field_manager=FIELD_MANAGER)

    async def run(self) -> None:
        """Renew the Lease and write status until cancelled; re-register a deleted Node."""
        async def every(interval: float, action: Callable[[], Any], what: str) -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await action()
                except errors.NotFound:
                    log.warning("node %s was deleted; registering it again", self.name)
                    with contextlib.suppress(errors.MicrokubeError, OSError):
                        await self.register()
                except (errors.MicrokubeError, ApiStatusError, OSError) as exc:
                    log.warning("%s of node %s failed: %s", what, self.name, exc)

        await asyncio.gather(every(self.lease_interval, self.renew_lease, "lease renewal"),
                             every(self.status_interval, self.write_status, "status update"))


def default_node_name() -> str:
    return socket.gethostname().lower().split(".")[0] or "localhost"
