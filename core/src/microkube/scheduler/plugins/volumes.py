"""VolumeBinding: the extension point the storage work plugs into.

Filter: every PersistentVolumeClaim of the pod must exist; claims of an Immediate binding mode must be
bound; a bound PersistentVolume's nodeAffinity must match the node. PreBind: for
WaitForFirstConsumer claims still unbound, record the chosen node on the claim
(``volume.kubernetes.io/selected-node``) for the provisioner, as kube-scheduler does.
"""

from __future__ import annotations

from typing import Any

from microkube.client import Resource
from microkube.nodematch import matches_node_selector
from microkube_interfaces import errors
from microkube_interfaces.controllers import ResourceRef
from microkube_interfaces.scheduling import (
    CycleState,
    NodeInfo,
    PodInfo,
    PreFilterResult,
    SchedulerHandle,
    Status,
)

CLAIMS = ResourceRef("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
VOLUMES = ResourceRef("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
CLASSES = ResourceRef("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False)
SELECTED_NODE = "volume.kubernetes.io/selected-node"


def claim_names(pod: PodInfo) -> list[str]:
    names = []
    for volume in pod.spec.get("volumes") or []:
        claim = volume.get("persistentVolumeClaim")
        if claim and claim.get("claimName"):
            names.append(str(claim["claimName"]))
        elif volume.get("ephemeral"):
            names.append(f"{(pod.pod.get('metadata') or {}).get('name', '')}-{volume.get('name', '')}")
    return names


class VolumeBinding:
    name = "VolumeBinding"
    watches = (CLAIMS, VOLUMES, CLASSES)

    def __init__(self, handle: SchedulerHandle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        names = claim_names(pod)
        if not names:
            return Status.skip()
        claims, volumes, classes = (self.handle.cache(CLAIMS), self.handle.cache(VOLUMES),
                                    self.handle.cache(CLASSES))
        bound_volumes: list[dict[str, Any]] = []
        delayed: list[dict[str, Any]] = []
        for name in names:
            claim = claims.get(f"{pod.namespace}/{name}")
            if claim is None:
                return Status.unresolvable(f'persistentvolumeclaim "{name}" not found')
            if (claim.get("metadata") or {}).get("deletionTimestamp"):
                return Status.unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            volume_name = (claim.get("spec") or {}).get("volumeName")
            if volume_name:
                volume = volumes.get(volume_name)
                if volume is not None:
                    bound_volumes.append(volume)
                continue
            class_name = (claim.get("spec") or {}).get("storageClassName") or ""
            storage_class = classes.get(class_name) if class_name else None
            if (storage_class or {}).get("volumeBindingMode") == "WaitForFirstConsumer":
                delayed.append(claim)
            else:
                return Status.unresolvable("pod has unbound immediate PersistentVolumeClaims")
        state[self.name] = (bound_volumes, delayed)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        bound_volumes, _ = state[self.name]
        for volume in bound_volumes:
            required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")
            if required and not matches_node_selector(
                    {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}},
                    node.node):
                return Status.unresolvable("node(s) had volume node affinity conflict")
        return None

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        _, delayed = state.get(self.name) or ([], [])
        for claim in delayed:
            meta = claim["metadata"]
            try:
                await self.handle.client.patch(Resource("", "v1", "persistentvolumeclaims"), meta["name"],
                                               {"metadata": {"annotations": {SELECTED_NODE: node_name}}},
                                               meta["namespace"])
            except errors.MicrokubeError as exc:
                return Status.error(f"recording the selected node on claim {meta['name']}: {exc}")
        return None
