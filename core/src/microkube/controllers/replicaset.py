"""The ReplicaSet and ReplicationController controller: keep ``spec.replicas`` pods of the template.

Level-triggered: each reconcile counts the active pods the set controls (through the cache's
controller-uid index), creates or deletes the difference, and writes status. Expectations guard
against acting twice on one decision while the pod cache has not yet seen the pods it just created
or deleted (client-go's ControllerExpectations idea).
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any

from microkube.client import Resource
from microkube.controllers.manager import CONTROLLER_UID
from microkube.timestamps import parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

PODS = ResourceRef("", "v1", "pods", "Pod")
REPLICASETS = ResourceRef("apps", "v1", "replicasets", "ReplicaSet")
REPLICATIONCONTROLLERS = ResourceRef("", "v1", "replicationcontrollers", "ReplicationController")
#: Expectations not met within this time are dropped (a lost event must not block a set forever).
EXPECTATION_TTL = 300.0
#: At most this many pods are created or deleted in one reconcile (a slow start for big sets).
BURST = 500


def is_active(pod: dict[str, Any]) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and (pod.get("status") or {}).get(
        "phase") not in ("Succeeded", "Failed")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, str]:
    """Which pods go first when scaling down: unscheduled, then pending, then not ready, then newest."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (0 if not spec.get("nodeName") else 1, 0 if status.get("phase") == "Pending" else 1,
            1 if is_ready(pod) else 0, _negated(pod["metadata"].get("creationTimestamp") or ""))


def _negated(text: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


@dataclass
class Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)

    def satisfied(self) -> bool:
        return (self.adds <= 0 and not self.deletes) or time.monotonic() - self.since > EXPECTATION_TTL


class ReplicaSetController:
    def __init__(self, context: ControllerContext, kind: ResourceRef) -> None:
        self.name = f"{kind.plural}"
        self.kind = kind
        self.client = context.client
        self.context = context
        self.sets = context.cache(kind)
        self.pods = context.cache(PODS)
        self.expectations: dict[str, Expectation] = {}
        self.pods.add_handler(lambda event, pod, old: self.observe(pod, event == "DELETED"))
        self.resource = Resource(kind.group, kind.version, kind.plural)
        self.pods_resource = Resource("", "v1", "pods")

    def observe(self, pod: dict[str, Any], deleted: bool) -> None:
        """Pod events settle expectations (a handler on the pod cache)."""
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("controller") or ref.get("kind") != self.kind.kind:
                continue
            key = f"{pod['metadata'].get('namespace')}/{ref['name']}"
            expectation = self.expectations.get(key)
            if expectation is None:
                continue
            if deleted:
                expectation.deletes.discard(pod["metadata"]["name"])
            else:
                expectation.adds -= 1

    async def reconcile(self, key: str) -> Outcome:
        owner = self.sets.get(key)
        if owner is None or owner["metadata"].get("deletionTimestamp"):
            self.expectations.pop(key, None)
            return Outcome.done()
        namespace = owner["metadata"]["namespace"]
        pods = self.pods.by_index(CONTROLLER_UID, owner["metadata"]["uid"])
        active = [p for p in pods if is_active(p)]
        expectation = self.expectations.get(key)
        if expectation is None or expectation.satisfied():
            want = int((owner.get("spec") or {}).get("replicas", 1))
            diff = want - len(active)
            if diff > 0:
                await self._create(owner, key, min(diff, BURST))
            elif diff < 0:
                await self._delete(key, namespace, sorted(active, key=deletion_rank)[:min(-diff, BURST)])
        await self._write_status(owner, active)
        return Outcome.done()

    async def _create(self, owner: dict[str, Any], key: str, count: int) -> None:
        meta = owner["metadata"]
        template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
        pod_meta = template.get("metadata") or {}
        pod_metadata: dict[str, Any] = {
            "generateName": f"{meta['name']}-", "namespace": meta["namespace"], "labels": pod_meta.get("labels") or {},
            "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}
        if pod_meta.get("annotations"):
            pod_metadata["annotations"] = pod_meta["annotations"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_metadata, "spec": template.get("spec") or {}}
        self.expectations[key] = Expectation(adds=count)
        # slow start, as Kubernetes: batches of 1, 2, 4, … created concurrently; the first failing
        # batch stops the rest, so a quota or a bad template costs one error, not thousands
        batch, remaining = 1, count
        while remaining > 0:
            size = min(batch, remaining)
            creates = [self.client.create(self.pods_resource, copy.deepcopy(pod), meta["namespace"],
                                          field_manager="replicaset-controller") for _ in range(size)]
            results = await asyncio.gather(*creates, return_exceptions=True)
            remaining -= size
            failures = [r for r in results if isinstance(r, BaseException)]
            for created in results:
                if not isinstance(created, BaseException):
                    await self.context.record_event(owner, "Normal", "SuccessfulCreate",
                                                    f"Created pod: {created['metadata']['name']}")
            if failures:
                self.expectations[key].adds -= len(failures) + remaining
                await self.context.record_event(owner, "Warning", "FailedCreate", f"Error creating: {failures[0]}")
                raise failures[0]
            batch *= 2

    async def _delete(self, key: str, namespace: str, victims: list[dict[str, Any]]) -> None:
        self.expectations[key] = Expectation(deletes={p["metadata"]["name"] for p in victims})
        owner = self.sets.get(key)
        for pod in victims:
            try:
                await self.client.delete(self.pods_resource, pod["metadata"]["name"], namespace)
            except errors.NotFound:
                self.expectations[key].deletes.discard(pod["metadata"]["name"])
                continue
            if owner is not None:
                await self.context.record_event(owner, "Normal", "SuccessfulDelete",
                                                f"Deleted pod: {pod['metadata']['name']}")

    async def _write_status(self, owner: dict[str, Any], active: list[dict[str, Any]]) -> None:
        min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
        ready = [p for p in active if is_ready(p)]
        available = [p for p in ready if _ready_for(p) >= min_ready]
        labels = (((owner.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        fully = [p for p in active if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]
        status = {"replicas": len(active), "fullyLabeledReplicas": len(fully), "readyReplicas": len(ready),
                  "availableReplicas": len(available), "observedGeneration": owner["metadata"].get("generation", 1)}
        current = owner.get("status") or {}
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        try:
            await self.client.patch(self.resource, owner["metadata"]["name"], {"status": status},
                                    owner["metadata"]["namespace"], subresource="status",
                                    field_manager="replicaset-controller")
        except errors.NotFound:
            return


def _ready_for(pod: dict[str, Any]) -> float:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            since = parse_time(condition.get("lastTransitionTime"))
            return (utcnow() - since).total_seconds() if since is not None else 0.0
    return 0.0
