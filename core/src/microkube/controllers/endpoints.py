"""Endpoints and EndpointSlices from Services' selectors and their pods' IPs and readiness.

For each Service with a selector the controller writes an Endpoints object (subsets grouped by the
resolved port set, ready and not-ready addresses) and one EndpointSlice (labelled
``kubernetes.io/service-name``). Named target ports are resolved against each pod's container ports.
Services without a selector are left to their users, as in Kubernetes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from microkube.client import Resource
from microkube.controllers.replicaset import PODS
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

SERVICES = ResourceRef("", "v1", "services", "Service")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGER = "endpoint-controller"


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _resolve_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == service_port.get("protocol", "TCP"):
                return int(port["containerPort"])
    return None


class EndpointsController:
    name = "endpoints"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.services = context.cache(SERVICES)
        self.pods = context.cache(PODS)
        self.endpoints = Resource("", "v1", "endpoints")
        self.slices = Resource("discovery.k8s.io", "v1", "endpointslices")
        self.context = context
        self.pods.add_handler(self._pod_changed)

    def _pod_changed(self, event: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        """A pod's change concerns the Services that select it now or selected it before."""
        keys = set(self.services_selecting(pod))
        if old is not None:
            keys.update(self.services_selecting(old))
        for key in keys:
            self.context.enqueue(key)

    def services_selecting(self, pod: dict[str, Any]) -> list[str]:
        """Keys of the Services in the pod's namespace whose selector matches it."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        return [f"{meta.get('namespace')}/{svc['metadata']['name']}"
                for svc in self.services.items(meta.get("namespace", ""))
                if (svc.get("spec") or {}).get("selector") and _matches(svc["spec"]["selector"], labels)]

    async def reconcile(self, key: str) -> Outcome:
        namespace, name = key.split("/", 1)
        service = self.services.get(key)
        if service is None or service["metadata"].get("deletionTimestamp"):
            await self._delete(namespace, name)
            return Outcome.done()
        spec = service.get("spec") or {}
        selector = spec.get("selector")
        if not selector:
            return Outcome.done()
        pods = [p for p in self.pods.items(namespace)
                if _matches(selector, (p["metadata"].get("labels") or {}))
                and (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        pods.sort(key=lambda p: p["metadata"]["name"])
        await self._write_endpoints(service, pods)
        await self._write_slice(service, pods)
        return Outcome.done()

    async def _write_endpoints(self, service: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        meta = service["metadata"]
        groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[dict[str, Any]]]] = {}
        for pod in pods:
            ports = []
            for service_port in (service.get("spec") or {}).get("ports") or []:
                number = _resolve_port(service_port, pod)
                if number is not None:
                    ports.append((service_port.get("name", ""), number, service_port.get("protocol", "TCP")))
            address = {"ip": pod["status"]["podIP"], "targetRef": {
                "kind": "Pod", "namespace": meta["namespace"], "name": pod["metadata"]["name"],
                "uid": pod["metadata"].get("uid", "")}}
            if (pod.get("spec") or {}).get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            group = groups.setdefault(tuple(ports), {"addresses": [], "notReadyAddresses": []})
            group["addresses" if _ready(pod) else "notReadyAddresses"].append(address)
        subsets = []
        for ports_key, addresses in groups.items():
            subset: dict[str, Any] = {k: v for k, v in addresses.items() if v}
            subset["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": proto}
                               for n, p, proto in ports_key]
            subsets.append(subset)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                             "labels": dict(meta.get("labels") or {})}}
        if subsets:
            body["subsets"] = subsets
        await self._upsert(self.endpoints, body, ("subsets", "metadata.labels"))

    async def _write_slice(self, service: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        meta = service["metadata"]
        ports = []
        for service_port in (service.get("spec") or {}).get("ports") or []:
            resolved = {_resolve_port(service_port, pod) for pod in pods} - {None}
            entry: dict[str, Any] = {"port": next(iter(resolved)) if len(resolved) == 1 else
                                     service_port.get("targetPort", service_port.get("port")),
                                     "protocol": service_port.get("protocol", "TCP")}
            if not isinstance(entry["port"], int):
                continue
            if service_port.get("name"):
                entry["name"] = service_port["name"]
            ports.append(entry)
        endpoints = []
        for pod in pods:
            ready = _ready(pod)
            endpoint: dict[str, Any] = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": pod["metadata"]["name"],
                              "uid": pod["metadata"].get("uid", "")}}
            if (pod.get("spec") or {}).get("nodeName"):
                endpoint["nodeName"] = pod["spec"]["nodeName"]
            endpoints.append(endpoint)
        suffix = hashlib.sha256(meta.get("uid", meta["name"]).encode()).hexdigest()[:5]
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": meta["namespace"],
                             "labels": {SERVICE_NAME_LABEL: meta["name"],
                                        MANAGED_BY: "endpointslice-controller.k8s.io"},
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                                  "uid": meta.get("uid", ""), "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "endpoints": endpoints, "ports": ports}
        await self._upsert(self.slices, body, ("endpoints", "ports", "metadata.labels"))

    async def _upsert(self, resource: Resource, body: dict[str, Any], compared: tuple[str, ...]) -> None:
        meta = body["metadata"]
        try:
            current = await self.client.get(resource, meta["name"], meta["namespace"])
        except errors.NotFound:
            await self.client.create(resource, body, meta["namespace"], field_manager=MANAGER)
            return

        def view(obj: dict[str, Any]) -> list[Any]:
            out = []
            for path in compared:
                node: Any = obj
                for part in path.split("."):
                    node = (node or {}).get(part) if isinstance(node, dict) else None
                out.append(node or None)
            return out

        if view(current) == view(body):
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.client.update(resource, body, field_manager=MANAGER)

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(self.endpoints, name, namespace)
        except errors.NotFound:
            pass
