"""The StatefulSet controller: stable names and claims, ordered (or parallel) scaling, ordered updates.

Pods are ``<set>-<ordinal>``. Each pod template revision is a ControllerRevision (``<set>-<hash>``)
and pods carry its hash in ``controller-revision-hash``. With OrderedReady, a pod is created only when
every lower ordinal is Running and Ready, and scale-down removes the highest ordinal first, one at a
time; Parallel lifts both orderings. RollingUpdate replaces pods from the highest ordinal down to
``partition``, one at a time, waiting for readiness. volumeClaimTemplates give every pod its own
PersistentVolumeClaims ``<claim>-<set>-<ordinal>``, created before the pod and kept (Retain).
"""

from __future__ import annotations

import copy
from typing import Any

from microkube.client import Resource
from microkube.controllers.deployment import template_hash
from microkube.controllers.manager import CONTROLLER_UID
from microkube.controllers.replicaset import PODS, is_ready
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

STATEFULSETS = ResourceRef("apps", "v1", "statefulsets", "StatefulSet")
REVISIONS = ResourceRef("apps", "v1", "controllerrevisions", "ControllerRevision")
REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
INDEX_LABEL = "apps.kubernetes.io/pod-index"
MANAGER = "statefulset-controller"


def ordinal(pod: dict[str, Any], set_name: str) -> int:
    suffix = pod["metadata"]["name"][len(set_name) + 1:]
    return int(suffix) if suffix.isdigit() else -1


class StatefulSetController:
    name = "statefulset"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.sets = context.cache(STATEFULSETS)
        self.pods = context.cache(PODS)
        self.revisions = context.cache(REVISIONS)
        self.resource = Resource("apps", "v1", "statefulsets")
        self.pods_resource = Resource("", "v1", "pods")
        self.claims = Resource("", "v1", "persistentvolumeclaims")
        self.revisions_resource = Resource("apps", "v1", "controllerrevisions")

    async def reconcile(self, key: str) -> Outcome:
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return Outcome.done()
        meta, spec = sts["metadata"], sts.get("spec") or {}
        revision = await self._revision(sts)
        pods = {ordinal(p, meta["name"]): p for p in self.pods.by_index(CONTROLLER_UID, meta["uid"])
                if ordinal(p, meta["name"]) >= 0}
        replicas = int(spec.get("replicas", 1))
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        # Scale up: create missing ordinals (in order, each waiting for the previous one).
        for index in range(replicas):
            pod = pods.get(index)
            if pod is None:
                await self._create(sts, index, revision)
                if ordered:
                    break
                continue
            if pod["metadata"].get("deletionTimestamp"):
                if ordered:
                    break
                continue
            if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                await self._delete(pod)  # recreated under the same name on the next pass
                if ordered:
                    break
                continue
            if ordered and not (is_ready(pod) and (pod.get("status") or {}).get("phase") == "Running"):
                break
        else:
            # Scale down: highest ordinal first.
            extra = sorted((i for i in pods if i >= replicas), reverse=True)
            for index in extra:
                if not pods[index]["metadata"].get("deletionTimestamp"):
                    await self._delete(pods[index])
                if ordered:
                    break
            if not extra:
                await self._roll(sts, pods, replicas, revision, ordered)
        await self._write_status(sts, pods, revision)
        return Outcome.done()

    async def _revision(self, sts: dict[str, Any]) -> str:
        meta = sts["metadata"]
        template = (sts.get("spec") or {}).get("template") or {}
        digest = template_hash(template)
        name = f"{meta['name']}-{digest}"
        if self.revisions.get(f"{meta['namespace']}/{name}") is None:
            numbers = [int(r.get("revision", 0)) for r in self.revisions.by_index(CONTROLLER_UID, meta["uid"])]
            body = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": name, "namespace": meta["namespace"],
                                 "labels": {**(((template.get("metadata") or {}).get("labels")) or {}),
                                            REVISION_LABEL: digest},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                      "name": meta["name"], "uid": meta["uid"], "controller": True,
                                                      "blockOwnerDeletion": True}]},
                    "data": {"spec": {"template": template}}, "revision": max(numbers, default=0) + 1}
            try:
                await self.client.create(self.revisions_resource, body, meta["namespace"], field_manager=MANAGER)
            except errors.AlreadyExists:
                pass
        return digest

    async def _create(self, sts: dict[str, Any], index: int, revision: str) -> None:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name = f"{meta['name']}-{index}"
        pod_spec = copy.deepcopy(((spec.get("template") or {}).get("spec")) or {})
        pod_spec.setdefault("hostname", name)
        if spec.get("serviceName"):
            pod_spec.setdefault("subdomain", spec["serviceName"])
        volumes = pod_spec.setdefault("volumes", [])
        for claim in spec.get("volumeClaimTemplates") or []:
            claim_name = f"{claim['metadata']['name']}-{name}"
            await self._ensure_claim(sts, claim, claim_name)
            volumes[:] = [v for v in volumes if v.get("name") != claim["metadata"]["name"]]
            volumes.append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
        if not volumes:
            del pod_spec["volumes"]
        template_meta = ((spec.get("template") or {}).get("metadata")) or {}
        pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec, "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {**(template_meta.get("labels") or {}), REVISION_LABEL: revision, POD_NAME_LABEL: name,
                       INDEX_LABEL: str(index)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}}
        if template_meta.get("annotations"):
            pod["metadata"]["annotations"] = template_meta["annotations"]
        try:
            await self.client.create(self.pods_resource, pod, meta["namespace"], field_manager=MANAGER)
        except errors.AlreadyExists:
            pass  # the cache had not seen it yet

    async def _ensure_claim(self, sts: dict[str, Any], template: dict[str, Any], name: str) -> None:
        meta = sts["metadata"]
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": name, "namespace": meta["namespace"],
                              "labels": {**((template.get("metadata") or {}).get("labels") or {}),
                                         **(((sts.get("spec") or {}).get("selector") or {}).get("matchLabels")
                                            or {})}},
                 "spec": copy.deepcopy(template.get("spec") or {})}
        try:
            await self.client.create(self.claims, claim, meta["namespace"], field_manager=MANAGER)
        except errors.AlreadyExists:
            pass

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(self.pods_resource, pod["metadata"]["name"], pod["metadata"]["namespace"])
        except errors.NotFound:
            pass

    async def _roll(self, sts: dict[str, Any], pods: dict[int, dict[str, Any]], replicas: int, revision: str,
                    ordered: bool) -> None:
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return  # OnDelete: pods are replaced only when someone deletes them
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
        for index in range(replicas - 1, partition - 1, -1):
            pod = pods.get(index)
            if pod is None:
                return
            if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) != revision:
                if not pod["metadata"].get("deletionTimestamp"):
                    await self._delete(pod)
                return  # one at a time
            if not is_ready(pod):
                return  # wait for the updated pod before touching the next one

    async def _write_status(self, sts: dict[str, Any], pods: dict[int, dict[str, Any]], revision: str) -> None:
        live = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        updated = [p for p in live if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision]
        current = sts.get("status") or {}
        status = {"observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(live),
                  "readyReplicas": sum(1 for p in live if is_ready(p)),
                  "availableReplicas": sum(1 for p in live if is_ready(p)),
                  "currentReplicas": len(updated) if len(updated) == len(live) else len(live) - len(updated),
                  "updatedReplicas": len(updated), "updateRevision": f"{sts['metadata']['name']}-{revision}",
                  "currentRevision": f"{sts['metadata']['name']}-{revision}" if len(updated) == len(live)
                  else current.get("currentRevision", f"{sts['metadata']['name']}-{revision}"),
                  "collisionCount": current.get("collisionCount", 0)}
        if all(current.get(k) == v for k, v in status.items()):
            return
        try:
            await self.client.patch(self.resource, sts["metadata"]["name"], {"status": status},
                                    sts["metadata"]["namespace"], subresource="status", field_manager=MANAGER)
        except errors.NotFound:
            return
