"""scheduler/v1: the scheduling framework, with kube-scheduler's extension points.

A scheduler plugin is registered through ``microkube_scheduler_plugins`` as a
SchedulerPluginRegistration whose ``build(handle)`` returns an object implementing any subset of the
extension points below (the framework looks each method up once). For every pod, one scheduling
cycle runs, in this order:

- ``pre_filter(state, pod, nodes)`` — precompute; may return ``Status.skip()`` (this plugin's filter
  is not needed for this pod), ``Status.unresolvable(...)`` to reject the pod outright, or a
  ``PreFilterResult`` narrowing the candidate nodes.
- ``filter(state, pod, node)`` — may the pod run on this node? ``None`` means yes; a Status with
  code UNSCHEDULABLE (preemption could help) or UNSCHEDULABLE_AND_UNRESOLVABLE (it could not) means no,
  its reasons are what ``kubectl describe pod`` shows ("Insufficient cpu").
- ``post_filter(state, pod, statuses)`` (async) — only when no node fits: preemption lives here.
- ``pre_score``, ``score(state, pod, node) -> int`` and ``normalize_score(state, pod, scores)`` —
  rank the feasible nodes; after normalising, scores are 0..100 and multiplied by ``weight``.
- ``reserve``/``unreserve`` — the pod is assumed on its node in the scheduler's cache.
- ``permit``, ``pre_bind``, ``bind``, ``post_bind`` (async) — the binding cycle, off the scheduling
  path; a ``bind`` returning ``Status.skip()`` leaves the pod to the next binder.

Filter and score run for many nodes per pod and must be synchronous and in-memory; everything that
talks to the API is async and happens in pre_bind/bind/post_filter.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

INTERFACE = "scheduler"
VERSION = "v1"

MAX_NODE_SCORE = 100


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5


@dataclass(frozen=True)
class Status:
    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @classmethod
    def unschedulable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE, reasons)

    @classmethod
    def unresolvable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons)

    @classmethod
    def error(cls, message: str) -> Status:
        return cls(Code.ERROR, (message,))

    @classmethod
    def skip(cls) -> Status:
        return cls(Code.SKIP)

    @property
    def ok(self) -> bool:
        return self.code == Code.SUCCESS

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)


@dataclass(frozen=True)
class PreFilterResult:
    """Only these nodes can possibly fit (e.g. spec.nodeName); None means every node."""

    node_names: frozenset[str] | None = None


@dataclass(frozen=True)
class PostFilterResult:
    """What preemption (or another PostFilter) achieved: a node the pod is nominated to once its
    victims are gone, and a message that joins the FailedScheduling event ("preemption: …")."""

    nominated_node_name: str = ""
    message: str = ""


@dataclass
class Resources:
    """Amounts in integer base units: CPU in millicores, memory and storage in bytes."""

    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    pods: int = 0
    scalar: dict[str, int] = field(default_factory=dict)


@dataclass
class PodInfo:
    """A pod and what the framework derived from it once per cycle."""

    pod: dict[str, Any]
    key: str
    requests: Resources
    #: requests with Kubernetes' non-zero defaults (100m CPU, 200Mi) for containers without any: for scoring
    non_zero_requests: Resources
    priority: int
    host_ports: tuple[tuple[str, str, int], ...] = ()  # (hostIP, protocol, hostPort)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.pod.get("spec") or {}
        return spec

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = (self.pod.get("metadata") or {}).get("labels") or {}
        return labels

    @property
    def namespace(self) -> str:
        return str((self.pod.get("metadata") or {}).get("namespace", ""))


@dataclass
class NodeInfo:
    """A node and the pods the scheduler knows on it (bound, or assumed and not yet bound)."""

    node: dict[str, Any]
    name: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    unschedulable: bool
    allocatable: Resources
    requested: Resources = field(default_factory=Resources)
    non_zero_requested: Resources = field(default_factory=Resources)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    used_ports: set[tuple[str, str, int]] = field(default_factory=set)
    #: bumped on every change, so plugins can cache per-node derived data
    generation: int = 0


class CycleState(dict[str, Any]):
    """Per-pod scratch space shared by the extension points of one scheduling cycle; plugins keep
    their precomputed data under their own name."""


class SchedulerHandle(Protocol):
    """What plugins can use: the API client, the node snapshot and shared caches of other resources."""

    #: the async API client (microkube.client.Client)
    client: Any

    def nodes(self) -> list[NodeInfo]:
        """Every node of the current snapshot."""

    def node(self, name: str) -> NodeInfo | None: ...

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        """The nodes running at least one pod with pod affinity or anti-affinity."""

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """Every enabled filter of this pod's profile against ``node`` (preemption tries nodes
        with victims removed)."""

    def cache(self, resource: Any) -> Any:
        """The shared informer cache of a resource (a controllers.ResourceRef → controllers.Cache)."""

    async def record_event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None: ...


class SchedulerPlugin(Protocol):
    name: str


@dataclass(frozen=True)
class SchedulerPluginRegistration:
    name: str
    build: Callable[[SchedulerHandle], SchedulerPlugin]
    #: score weight (kube-scheduler's defaults: TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, …)
    weight: int = 1
    enabled_by_default: bool = True
