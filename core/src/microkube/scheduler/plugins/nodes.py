"""Filters on the node alone: NodeName, NodeUnschedulable, NodePorts, NodeAffinity (with nodeSelector)
and TaintToleration."""

from __future__ import annotations

from typing import Any

import numpy as np

from microkube.nodematch import matches_node_selector, tolerates
from microkube.scheduler.table import Column, Mask, NodeTable
from microkube_interfaces.scheduling import (
    MAX_NODE_SCORE,
    CycleState,
    NodeInfo,
    PodInfo,
    PreFilterResult,
    SchedulerHandle,
    Status,
)

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


class NodeName:
    name = "NodeName"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        wanted = pod.spec.get("nodeName")
        return PreFilterResult(frozenset([wanted])) if wanted else Status.skip()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.name != pod.spec.get("nodeName"):
            return Status.unresolvable("node(s) didn't match the requested node name")
        return None


class NodeUnschedulable:
    name = "NodeUnschedulable"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.unschedulable and not any(tolerates(t, UNSCHEDULABLE_TAINT) for t in pod.spec.get("tolerations") or []):
            return Status.unresolvable("node(s) were unschedulable")
        return None

    def vector_filter(self, state: CycleState, pod: PodInfo, table: NodeTable) -> Mask | None:
        if any(tolerates(t, UNSCHEDULABLE_TAINT) for t in pod.spec.get("tolerations") or []):
            return np.ones(len(table), np.bool_)
        mask: Mask = ~table.flags("unschedulable")
        return mask


class NodePorts:
    name = "NodePorts"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        return None if pod.host_ports else Status.skip()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        for host_ip, protocol, port in pod.host_ports:
            for used_ip, used_protocol, used_port in node.used_ports:
                if used_port == port and used_protocol == protocol and (
                    host_ip == used_ip or "0.0.0.0" in (host_ip, used_ip)
                ):
                    return Status.unschedulable("node(s) didn't have free ports for the requested pod ports")
        return None


def _preferred_terms(pod: PodInfo) -> list[dict[str, Any]]:
    affinity = (pod.spec.get("affinity") or {}).get("nodeAffinity") or {}
    return list(affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or [])


class NodeAffinity:
    name = "NodeAffinity"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        spec = pod.spec
        required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution")
        return None if spec.get("nodeSelector") or required else Status.skip()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not matches_node_selector(pod.spec, node.node):
            return Status.unresolvable("node(s) didn't match Pod's node affinity/selector")
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        return None if _preferred_terms(pod) else Status.skip()

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = 0
        for term in _preferred_terms(pod):
            selector = {"nodeSelectorTerms": [term.get("preference") or {}]}
            if matches_node_selector({"affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": selector}}}, node.node):
                total += int(term.get("weight") or 0)
        return total

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        _scale_to_max(scores)


def _scale_to_max(scores: dict[str, int], reverse: bool = False) -> None:
    highest = max(scores.values(), default=0)
    for name, value in scores.items():
        scaled = value * MAX_NODE_SCORE // highest if highest else 0
        scores[name] = MAX_NODE_SCORE - scaled if reverse else scaled


def _taint_text(taint: dict[str, Any]) -> str:
    return f"{{{taint.get('key', '')}: {taint.get('value', '')}}}"


class TaintToleration:
    name = "TaintToleration"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.taints:
            return None
        tolerations = pod.spec.get("tolerations") or []
        for taint in node.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(tolerates(t, taint)
                                                                              for t in tolerations):
                return Status.unresolvable(f"node(s) had untolerated taint {_taint_text(taint)}")
        return None

    def vector_filter(self, state: CycleState, pod: PodInfo, table: NodeTable) -> Mask | None:
        tainted = table.flags("tainted")
        mask: Mask = ~tainted
        for row in np.flatnonzero(tainted):
            mask[row] = self.filter(state, pod, table.nodes[row]) is None
        return mask

    def vector_score(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: Column) -> Column:
        raw = np.zeros(len(rows), np.int64)
        tainted = table.flags("tainted")[rows]
        for index in np.flatnonzero(tainted):
            raw[index] = self.score(state, pod, table.nodes[rows[index]])
        highest = int(raw.max()) if len(raw) else 0
        scores: Column = MAX_NODE_SCORE - (raw * MAX_NODE_SCORE // highest if highest else raw)
        return scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if not node.taints:
            return 0
        tolerations = [t for t in pod.spec.get("tolerations") or []
                       if t.get("effect") in (None, "", "PreferNoSchedule")]
        return sum(1 for taint in node.taints if taint.get("effect") == "PreferNoSchedule"
                   and not any(tolerates(t, taint) for t in tolerations))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        _scale_to_max(scores, reverse=True)
