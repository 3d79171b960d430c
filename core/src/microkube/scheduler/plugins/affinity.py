"""Pod-to-pod placement: InterPodAffinity (required and preferred affinity and anti-affinity, and
existing pods' anti-affinity) and PodTopologySpread (maxSkew per topology domain)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from microkube.apiserver.selectors import LabelSelector, label_selector_from_dict
from microkube.nodematch import matches_node_selector
from microkube.scheduler.resources import has_pod_affinity
from microkube_interfaces.controllers import ResourceRef
from microkube_interfaces.scheduling import (
    MAX_NODE_SCORE,
    CycleState,
    NodeInfo,
    PodInfo,
    PreFilterResult,
    SchedulerHandle,
    Status,
)

NAMESPACES = ResourceRef("", "v1", "namespaces", "Namespace", namespaced=False)


@dataclass(frozen=True)
class Term:
    """A pod affinity term, compiled: which pods (selector, namespaces) in which topology."""

    selector: LabelSelector  # a term without a labelSelector matches no pod
    namespaces: frozenset[str] | None  # None: every namespace
    topology_key: str
    weight: int = 0

    def matches(self, pod: PodInfo) -> bool:
        return (self.namespaces is None or pod.namespace in self.namespaces) and self.selector.matches(pod.labels)


def _compile(handle: SchedulerHandle, owner: PodInfo, term: dict[str, Any], weight: int = 0) -> Term:
    selector = dict(term.get("labelSelector") or {})
    match_labels = dict(selector.get("matchLabels") or {})
    for key in term.get("matchLabelKeys") or []:
        if key in owner.labels:
            match_labels[key] = owner.labels[key]
    selector["matchLabels"] = match_labels
    namespaces: frozenset[str] | None = frozenset(term.get("namespaces") or [])
    namespace_selector = term.get("namespaceSelector")
    if namespace_selector is not None:
        compiled = label_selector_from_dict(namespace_selector)
        if compiled.is_empty:
            namespaces = None
        else:
            chosen = {ns["metadata"]["name"] for ns in handle.cache(NAMESPACES).items()
                      if compiled.matches((ns.get("metadata") or {}).get("labels") or {})}
            namespaces = frozenset(chosen | set(namespaces or ()))
    elif not namespaces:
        namespaces = frozenset([owner.namespace])
    compiled_selector = LabelSelector(nothing=True) if term.get("labelSelector") is None and not match_labels \
        else label_selector_from_dict(selector)
    return Term(compiled_selector, namespaces, str(term.get("topologyKey") or ""), weight)


def _terms(handle: SchedulerHandle, pod: PodInfo, kind: str, mode: str) -> list[Term]:
    section = (pod.spec.get("affinity") or {}).get(kind) or {}
    if mode == "required":
        return [_compile(handle, pod, t) for t in section.get("requiredDuringSchedulingIgnoredDuringExecution") or []]
    return [_compile(handle, pod, t.get("podAffinityTerm") or {}, int(t.get("weight") or 0))
            for t in section.get("preferredDuringSchedulingIgnoredDuringExecution") or []]


@dataclass
class _AffinityState:
    affinity: list[Term]
    anti_affinity: list[Term]
    #: (topology key, value) → how many existing pods match each required affinity term
    affinity_counts: list[Counter[str]]
    anti_affinity_counts: list[Counter[str]]
    #: (key, value) pairs where an existing pod's required anti-affinity forbids this pod
    forbidden: set[tuple[str, str]]
    matches_itself: bool


class InterPodAffinity:
    name = "InterPodAffinity"
    watches = (NAMESPACES,)

    def __init__(self, handle: SchedulerHandle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        affinity = _terms(self.handle, pod, "podAffinity", "required")
        anti = _terms(self.handle, pod, "podAntiAffinity", "required")
        forbidden: set[tuple[str, str]] = set()
        for node in self.handle.nodes_with_affinity_pods():
            for existing in node.pods.values():
                if not has_pod_affinity(existing.pod):
                    continue
                for term in _terms(self.handle, existing, "podAntiAffinity", "required"):
                    value = node.labels.get(term.topology_key)
                    if value is not None and term.matches(pod):
                        forbidden.add((term.topology_key, value))
        if not affinity and not anti and not forbidden:
            return Status.skip()
        affinity_counts: list[Counter[str]] = [Counter() for _ in affinity]
        anti_counts: list[Counter[str]] = [Counter() for _ in anti]
        if affinity or anti:
            for node in nodes:
                for existing in node.pods.values():
                    for term, counts in zip(affinity, affinity_counts, strict=True):
                        if term.topology_key in node.labels and term.matches(existing):
                            counts[node.labels[term.topology_key]] += 1
                    for term, counts in zip(anti, anti_counts, strict=True):
                        if term.topology_key in node.labels and term.matches(existing):
                            counts[node.labels[term.topology_key]] += 1
        state[self.name] = _AffinityState(affinity, anti, affinity_counts, anti_counts, forbidden,
                                          all(term.matches(pod) for term in affinity))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        data: _AffinityState = state[self.name]
        for key, forbidden_value in data.forbidden:
            if node.labels.get(key) == forbidden_value:
                return Status.unschedulable("node(s) didn't satisfy existing pods anti-affinity rules")
        for term, counts in zip(data.anti_affinity, data.anti_affinity_counts, strict=True):
            domain = node.labels.get(term.topology_key)
            if domain is not None and counts[domain]:
                return Status.unschedulable("node(s) didn't match pod anti-affinity rules")
        if data.affinity:
            nobody_matches = all(not counts for counts in data.affinity_counts)
            for term, counts in zip(data.affinity, data.affinity_counts, strict=True):
                domain = node.labels.get(term.topology_key)
                if domain is None:
                    return Status.unresolvable("node(s) didn't match pod affinity rules")
                # the first pod of a group that selects itself may go anywhere
                if not counts[domain] and not (nobody_matches and data.matches_itself):
                    return Status.unschedulable("node(s) didn't match pod affinity rules")
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        preferred = _terms(self.handle, pod, "podAffinity", "preferred")
        anti = _terms(self.handle, pod, "podAntiAffinity", "preferred")
        if not preferred and not anti:
            return Status.skip()
        topology: Counter[tuple[str, str]] = Counter()
        for node in nodes:
            for existing in node.pods.values():
                for term in preferred:
                    if term.topology_key in node.labels and term.matches(existing):
                        topology[(term.topology_key, node.labels[term.topology_key])] += term.weight
                for term in anti:
                    if term.topology_key in node.labels and term.matches(existing):
                        topology[(term.topology_key, node.labels[term.topology_key])] -= term.weight
        state[self.name + "/score"] = topology
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        topology: Counter[tuple[str, str]] = state[self.name + "/score"]
        return sum(weight for (key, value), weight in topology.items() if node.labels.get(key) == value)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        _min_max(scores)


def _min_max(scores: dict[str, int], reverse: bool = False) -> None:
    if not scores:
        return
    low, high = min(scores.values()), max(scores.values())
    for name, value in scores.items():
        scaled = (value - low) * MAX_NODE_SCORE // (high - low) if high > low else MAX_NODE_SCORE
        scores[name] = MAX_NODE_SCORE - scaled if reverse and high > low else scaled


@dataclass
class _Constraint:
    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int
    self_match: int


@dataclass
class _SpreadState:
    constraints: list[_Constraint]
    counts: list[Counter[str]]


class PodTopologySpread:
    name = "PodTopologySpread"

    def __init__(self, handle: SchedulerHandle) -> None:
        self.handle = handle

    def _constraints(self, pod: PodInfo, hard: bool) -> list[_Constraint]:
        result = []
        for raw in pod.spec.get("topologySpreadConstraints") or []:
            if (raw.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule") != hard:
                continue
            selector = dict(raw.get("labelSelector") or {})
            match_labels = dict(selector.get("matchLabels") or {})
            for key in raw.get("matchLabelKeys") or []:
                if key in pod.labels:
                    match_labels[key] = pod.labels[key]
            selector["matchLabels"] = match_labels
            compiled = label_selector_from_dict(selector)
            result.append(_Constraint(int(raw.get("maxSkew") or 1), str(raw.get("topologyKey") or ""), compiled,
                                      int(raw.get("minDomains") or 1), 1 if compiled.matches(pod.labels) else 0))
        return result

    def _count(self, pod: PodInfo, constraints: list[_Constraint], nodes: list[NodeInfo]) -> list[Counter[str]]:
        counts: list[Counter[str]] = [Counter() for _ in constraints]
        for node in nodes:
            # nodeAffinityPolicy and nodeTaintsPolicy defaults: honour the pod's node selection, ignore taints
            if not matches_node_selector(pod.spec, node.node):
                continue
            for constraint, counter in zip(constraints, counts, strict=True):
                value = node.labels.get(constraint.topology_key)
                if value is None:
                    continue
                counter[value] += sum(1 for other in node.pods.values()
                                      if other.namespace == pod.namespace and constraint.selector.matches(other.labels)
                                      and not (other.pod.get("metadata") or {}).get("deletionTimestamp"))
        return counts

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | PreFilterResult | None:
        constraints = self._constraints(pod, hard=True)
        if not constraints:
            return Status.skip()
        state[self.name] = _SpreadState(constraints, self._count(pod, constraints, nodes))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        data: _SpreadState = state[self.name]
        for constraint, counts in zip(data.constraints, data.counts, strict=True):
            value = node.labels.get(constraint.topology_key)
            if value is None:
                return Status.unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)")
            minimum = min(counts.values()) if counts and len(counts) >= constraint.min_domains else 0
            if counts[value] + constraint.self_match - minimum > constraint.max_skew:
                return Status.unschedulable("node(s) didn't match pod topology spread constraints")
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        constraints = self._constraints(pod, hard=False)
        if not constraints:
            return Status.skip()
        state[self.name + "/score"] = _SpreadState(constraints, self._count(pod, constraints, nodes))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        data: _SpreadState = state[self.name + "/score"]
        return sum(counts[node.labels.get(c.topology_key, "")] for c, counts in
                   zip(data.constraints, data.counts, strict=True))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        _min_max(scores, reverse=True)

