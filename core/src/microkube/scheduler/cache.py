"""The scheduler's view of the cluster: a NodeInfo per node with the pods bound to it, plus the pods
it has assumed (chosen a node for, binding not yet observed) and those nominated by preemption."""

from __future__ import annotations

from typing import Any

from microkube.scheduler.resources import add_pod, has_pod_affinity, node_info, remove_pod
from microkube.scheduler.table import NodeTable
from microkube_interfaces.scheduling import NodeInfo, PodInfo


def _relevant(node: dict[str, Any]) -> tuple[Any, ...]:
    """What of a node matters for scheduling (heartbeats do not)."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    return (meta.get("labels"), spec.get("taints"), spec.get("unschedulable"), status.get("allocatable"),
            status.get("capacity"))


class SchedulerCache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.table = NodeTable()
        self.pod_nodes: dict[str, str] = {}
        self.assumed: set[str] = set()
        #: pods bound to nodes not (yet) known, by node name
        self._waiting: dict[str, dict[str, PodInfo]] = {}
        #: node name → keys of its pods with pod (anti-)affinity
        self._affinity: dict[str, set[str]] = {}
        #: node name → pods nominated to it by preemption
        self.nominated: dict[str, dict[str, PodInfo]] = {}

    @property
    def node_list(self) -> list[NodeInfo]:
        """Every node, in the table's row order."""
        return self.table.nodes

    # -- nodes -----------------------------------------------------------------------------------

    def update_node(self, node: dict[str, Any]) -> bool:
        """Add or refresh a node; True when something that matters for scheduling changed."""
        name = node["metadata"]["name"]
        current = self.nodes.get(name)
        if current is not None:
            changed = _relevant(current.node) != _relevant(node)
            if changed:
                refreshed = node_info(node)
                current.labels, current.taints = refreshed.labels, refreshed.taints
                current.unschedulable, current.allocatable = refreshed.unschedulable, refreshed.allocatable
                current.generation += 1
                self.table.sync(current)
            current.node = node
            return changed
        info = node_info(node, self._waiting.pop(name, {}).values())
        self.nodes[name] = info
        self.table.add(info)
        return True

    def remove_node(self, name: str) -> None:
        info = self.nodes.pop(name, None)
        if info is None:
            return
        self.table.rebuild([n for n in self.table.nodes if n.name != name])
        self._waiting[name] = dict(info.pods)
        self._affinity.pop(name, None)

    # -- pods ------------------------------------------------------------------------------------

    def add_pod(self, pod: PodInfo, node_name: str) -> None:
        """A pod bound to ``node_name`` (observed, or assumed by us)."""
        previous = self.pod_nodes.get(pod.key)
        if previous is not None and previous != node_name:
            self.remove_pod(pod.key)
        self.pod_nodes[pod.key] = node_name
        self.unnominate(pod.key)
        node = self.nodes.get(node_name)
        if node is None:
            self._waiting.setdefault(node_name, {})[pod.key] = pod
            return
        add_pod(node, pod)
        self.table.sync(node)
        if has_pod_affinity(pod.pod):
            self._affinity.setdefault(node_name, set()).add(pod.key)
        else:
            self._discard_affinity(node_name, pod.key)

    def refresh_pod(self, pod: dict[str, Any], key: str) -> bool:
        """A bound pod changed; True if only its object needed swapping (requests and labels unchanged)."""
        node = self.nodes.get(self.pod_nodes.get(key, ""))
        info = node.pods.get(key) if node is not None else None
        if info is None:
            return False
        old_meta, old_spec = info.pod.get("metadata") or {}, info.pod.get("spec") or {}
        spec = pod.get("spec") or {}
        if (old_meta.get("labels") != (pod.get("metadata") or {}).get("labels")
                or old_spec.get("containers") != spec.get("containers")
                or old_spec.get("affinity") != spec.get("affinity")):
            return False
        info.pod = pod
        self.assumed.discard(key)
        return True

    def remove_pod(self, key: str) -> bool:
        self.assumed.discard(key)
        self.unnominate(key)
        node_name = self.pod_nodes.pop(key, None)
        if node_name is None:
            return False
        node = self.nodes.get(node_name)
        if node is not None:
            remove_pod(node, key)
            self.table.sync(node)
            self._discard_affinity(node_name, key)
        else:
            self._waiting.get(node_name, {}).pop(key, None)
        return True

    def assume(self, pod: PodInfo, node_name: str) -> None:
        self.add_pod(pod, node_name)
        self.assumed.add(pod.key)

    def forget(self, key: str) -> None:
        """Binding failed: the assumed pod leaves its node."""
        if key in self.assumed:
            self.remove_pod(key)

    def _discard_affinity(self, node_name: str, key: str) -> None:
        keys = self._affinity.get(node_name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._affinity[node_name]

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        return [self.nodes[name] for name in self._affinity if name in self.nodes]

    # -- nominations -----------------------------------------------------------------------------

    def nominate(self, pod: PodInfo, node_name: str) -> None:
        self.unnominate(pod.key)
        self.nominated.setdefault(node_name, {})[pod.key] = pod

    def unnominate(self, key: str) -> None:
        if not self.nominated:
            return
        for name in [n for n, pods in self.nominated.items() if key in pods]:
            del self.nominated[name][key]
            if not self.nominated[name]:
                del self.nominated[name]

    def with_nominated(self, pod: PodInfo, node: NodeInfo) -> NodeInfo:
        """``node`` as ``pod`` must see it: with the pods of equal or higher priority nominated to it."""
        others = [p for k, p in self.nominated.get(node.name, {}).items()
                  if k != pod.key and p.priority >= pod.priority]
        if not others:
            return node
        return node_info(node.node, [*node.pods.values(), *others])
