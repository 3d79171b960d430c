"""Pod garbage collection: pods bound to nodes that no longer exist, and terminated pods beyond a
threshold (oldest first; Kubernetes' default is 12,500), are deleted."""

from __future__ import annotations

from typing import Any

from microkube.client import Resource
from microkube.controllers.daemonset import NODES
from microkube.controllers.replicaset import PODS
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome

TERMINATED_THRESHOLD = 12_500
#: The one key this controller reconciles: the whole cluster's pods are looked at together.
CLUSTER_KEY = "cluster"
SWEEP_SECONDS = 20.0


class PodGCController:
    name = "podgc"

    def __init__(self, context: ControllerContext, threshold: int = TERMINATED_THRESHOLD) -> None:
        self.client = context.client
        self.nodes = context.cache(NODES)
        self.pods = context.cache(PODS)
        self.threshold = threshold
        self.resource = Resource("", "v1", "pods")
        self.context = context
        context.enqueue(CLUSTER_KEY)

    async def reconcile(self, key: str) -> Outcome:
        if key != CLUSTER_KEY:  # a node event: only a node that is gone leaves pods to collect
            if self.nodes.get(key) is None:
                self.context.enqueue(CLUSTER_KEY)
            return Outcome.done()
        nodes = {n["metadata"]["name"] for n in self.nodes.items()}
        pods = self.pods.items()
        orphaned = [p for p in pods if (p.get("spec") or {}).get("nodeName")
                    and p["spec"]["nodeName"] not in nodes]
        terminated = sorted((p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")),
                            key=lambda p: p["metadata"].get("creationTimestamp", ""))
        excess = terminated[:max(0, len(terminated) - self.threshold)]
        for pod in {p["metadata"]["uid"]: p for p in orphaned + excess}.values():
            await self._delete(pod)
        return Outcome.after(SWEEP_SECONDS)

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(self.resource, pod["metadata"]["name"], pod["metadata"]["namespace"],
                                     grace_period_seconds=0)
        except errors.NotFound:
            pass
