"""DefaultBinder: binds through the pods/binding subresource, as kube-scheduler does."""

from __future__ import annotations

from microkube.scheduler.resources import PODS
from microkube_interfaces import errors
from microkube_interfaces.scheduling import CycleState, PodInfo, SchedulerHandle, Status


class DefaultBinder:
    name = "DefaultBinder"

    def __init__(self, handle: SchedulerHandle) -> None:
        self.client = handle.client

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        meta = pod.pod["metadata"]
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
        try:
            await self.client.request("POST", PODS.path(meta["namespace"], meta["name"], "binding"), body=binding)
        except errors.MicrokubeError as exc:
            return Status.error(str(exc))
        return None
