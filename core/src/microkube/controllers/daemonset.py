"""The DaemonSet controller: one pod on every eligible node.

A node is eligible when the pod template's nodeSelector and required node affinity match it and the
pod tolerates its NoSchedule/NoExecute taints (the tolerations Kubernetes adds to daemon pods, such as
``node.kubernetes.io/unschedulable``, are added here too). Each pod is pinned to its node with node
affinity on ``metadata.name`` and placed by the scheduler, as in Kubernetes. Pods on nodes that are no
longer eligible are deleted. RollingUpdate replaces pods of an old template hash at most
``maxUnavailable`` at a time.
"""

from __future__ import annotations

import copy
from typing import Any

from microkube.client import Resource
from microkube.controllers.deployment import resolve, template_hash
from microkube.controllers.manager import CONTROLLER_UID
from microkube.controllers.replicaset import PODS, is_ready
from microkube.nodematch import matches_node_selector, untolerated_taints
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

DAEMONSETS = ResourceRef("apps", "v1", "daemonsets", "DaemonSet")
NODES = ResourceRef("", "v1", "nodes", "Node", namespaced=False)
HASH_LABEL = "controller-revision-hash"
MANAGER = "daemonset-controller"
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def pinned_node(pod: dict[str, Any]) -> str:
    """The node a daemon pod is bound or pinned to."""
    if (pod.get("spec") or {}).get("nodeName"):
        return str(pod["spec"]["nodeName"])
    terms = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


class DaemonSetController:
    name = "daemonset"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.sets = context.cache(DAEMONSETS)
        self.nodes = context.cache(NODES)
        self.pods = context.cache(PODS)
        self.resource = Resource("apps", "v1", "daemonsets")
        self.pods_resource = Resource("", "v1", "pods")
        self.context = context
        self.nodes.add_handler(self._node_changed)

    def _node_changed(self, event: str, node: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Any node change can change which nodes every DaemonSet runs on."""
        for daemonset in self.sets.items():
            meta = daemonset["metadata"]
            self.context.enqueue(f"{meta['namespace']}/{meta['name']}")

    def _template(self, daemonset: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy((daemonset.get("spec") or {}).get("template") or {})
        spec = template.setdefault("spec", {})
        tolerations = spec.setdefault("tolerations", [])
        for toleration in DAEMON_TOLERATIONS:
            if not any(t.get("key") == toleration["key"] and t.get("effect") == toleration["effect"]
                       for t in tolerations):
                tolerations.append(dict(toleration))
        return template

    async def reconcile(self, key: str) -> Outcome:
        daemonset = self.sets.get(key)
        if daemonset is None or daemonset["metadata"].get("deletionTimestamp"):
            return Outcome.done()
        meta = daemonset["metadata"]
        template = self._template(daemonset)
        revision = template_hash(template)
        eligible = {n["metadata"]["name"] for n in self.nodes.items()
                    if matches_node_selector(template["spec"], n) and not untolerated_taints(template["spec"], n)}
        pods = [p for p in self.pods.by_index(CONTROLLER_UID, meta["uid"])
                if not p["metadata"].get("deletionTimestamp")]
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_node.setdefault(pinned_node(pod), []).append(pod)
        for node_name, node_pods in by_node.items():
            keep = node_pods[:1] if node_name in eligible else []
            for pod in node_pods[len(keep):]:
                await self._delete(pod)  # misscheduled or a duplicate
        for node_name in sorted(eligible - set(by_node)):
            await self._create(daemonset, template, revision, node_name)
        await self._roll(daemonset, by_node, eligible, revision)
        await self._write_status(daemonset, by_node, eligible, revision)
        return Outcome.done()

    async def _create(self, daemonset: dict[str, Any], template: dict[str, Any], revision: str, node: str) -> None:
        meta = daemonset["metadata"]
        spec = copy.deepcopy(template.get("spec") or {})
        affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
        template_meta = template.get("metadata") or {}
        pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec, "metadata": {
            "generateName": f"{meta['name']}-", "namespace": meta["namespace"],
            "labels": {**(template_meta.get("labels") or {}), HASH_LABEL: revision},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}}
        if template_meta.get("annotations"):
            pod["metadata"]["annotations"] = template_meta["annotations"]
        await self.client.create(self.pods_resource, pod, meta["namespace"], field_manager=MANAGER)

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(self.pods_resource, pod["metadata"]["name"], pod["metadata"]["namespace"])
        except errors.NotFound:
            pass

    async def _roll(self, daemonset: dict[str, Any], by_node: dict[str, list[dict[str, Any]]], eligible: set[str],
                    revision: str) -> None:
        strategy = (daemonset.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        budget = max(1, resolve((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), len(eligible),
                                round_up=False))
        current = [pods[0] for node, pods in by_node.items() if node in eligible]
        unavailable = sum(1 for p in current if not is_ready(p)) + len(eligible - set(by_node))
        for pod in sorted(current, key=lambda p: pinned_node(p)):
            if unavailable >= budget:
                return
            if (pod["metadata"].get("labels") or {}).get(HASH_LABEL) != revision:
                await self._delete(pod)  # recreated from the new template on the next pass
                unavailable += 1

    async def _write_status(self, daemonset: dict[str, Any], by_node: dict[str, list[dict[str, Any]]],
                            eligible: set[str], revision: str) -> None:
        scheduled = [pods[0] for node, pods in by_node.items() if node in eligible]
        ready = sum(1 for p in scheduled if is_ready(p))
        status = {"observedGeneration": daemonset["metadata"].get("generation", 1),
                  "desiredNumberScheduled": len(eligible), "currentNumberScheduled": len(scheduled),
                  "numberMisscheduled": sum(1 for node in by_node if node not in eligible),
                  "numberReady": ready, "numberAvailable": ready,
                  "updatedNumberScheduled": sum(1 for p in scheduled
                                                if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == revision)}
        if len(eligible) - ready:
            status["numberUnavailable"] = len(eligible) - ready
        current = daemonset.get("status") or {}
        unchanged = all(current.get(k) == v for k, v in status.items())
        if unchanged and ("numberUnavailable" in current) == ("numberUnavailable" in status):
            return
        try:
            await self.client.patch(self.resource, daemonset["metadata"]["name"], {"status": status},
                                    daemonset["metadata"]["namespace"], subresource="status",
                                    field_manager=MANAGER)
        except errors.NotFound:
            return
