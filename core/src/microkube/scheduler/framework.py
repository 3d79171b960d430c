"""The scheduling framework: runs the plugins' extension points for one pod.

The scheduling cycle (pre-filter → filter → post-filter → pre-score → score → normalize → reserve) is
synchronous: it reads the scheduler's cache, which cannot change under it on the event loop, so no
snapshot copy is needed. The binding cycle (permit → pre-bind → bind → post-bind) is async and runs
beside the next pods' scheduling.
"""

from __future__ import annotations

import operator
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microkube.scheduler.table import Column, Mask, NodeTable
from microkube_interfaces.scheduling import (
    Code,
    CycleState,
    NodeInfo,
    PodInfo,
    PostFilterResult,
    PreFilterResult,
    SchedulerPlugin,
    Status,
)

#: kube-scheduler looks at every node below this many, and at least this many feasible nodes
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_PERCENTAGE = 5

Filter = Callable[[CycleState, PodInfo, NodeInfo], Status | None]


def feasible_nodes_to_find(total: int, percentage: int | None) -> int:
    """kube-scheduler's percentageOfNodesToScore: adaptive (50% less 1% per 125 nodes, at least 5%) when
    unset, and never fewer than 100 nodes."""
    if total < MIN_FEASIBLE_NODES_TO_FIND or percentage == 100:
        return total
    if percentage is None or percentage <= 0:
        percentage = max(MIN_FEASIBLE_PERCENTAGE, 50 - total // 125)
    return min(total, max(MIN_FEASIBLE_NODES_TO_FIND, total * percentage // 100))


@dataclass
class Diagnosis:
    """Why a pod fits nowhere: per-node filter statuses, or a pre-filter's verdict for all nodes."""

    total_nodes: int
    statuses: dict[str, Status] = field(default_factory=dict)
    pre_filter: Status | None = None

    def message(self) -> str:
        if self.pre_filter is not None:
            return f"0/{self.total_nodes} nodes are available: {self.pre_filter.message}."
        counts: Counter[str] = Counter()
        for status in self.statuses.values():
            for reason in status.reasons:
                counts[reason] += 1
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
        return f"0/{self.total_nodes} nodes are available: {parts}." if parts else \
            f"0/{self.total_nodes} nodes are available."


@dataclass
class ScheduleResult:
    node: str | None
    diagnosis: Diagnosis | None = None
    evaluated: int = 0
    feasible: int = 0


def _method(plugin: SchedulerPlugin, name: str) -> Any:
    return getattr(plugin, name, None)


class Framework:
    """The enabled plugins of one profile, split by extension point."""

    def __init__(self, plugins: list[tuple[SchedulerPlugin, int]], percentage_of_nodes_to_score: int | None = None
                 ) -> None:
        self.plugins = [p for p, _ in plugins]
        self.percentage = percentage_of_nodes_to_score
        self.pre_filters = [p for p in self.plugins if _method(p, "pre_filter")]
        self.filters = [p for p in self.plugins if _method(p, "filter")]
        self.post_filters = [p for p in self.plugins if _method(p, "post_filter")]
        self.pre_scores = [p for p in self.plugins if _method(p, "pre_score")]
        self.scorers = [(p, weight, _method(p, "normalize_score")) for p, weight in plugins if _method(p, "score")]
        self.reserves = [p for p in self.plugins if _method(p, "reserve")]
        self.permits = [p for p in self.plugins if _method(p, "permit")]
        self.pre_binds = [p for p in self.plugins if _method(p, "pre_bind")]
        self.binders = [p for p in self.plugins if _method(p, "bind")]
        self.post_binds = [p for p in self.plugins if _method(p, "post_bind")]
        if not self.binders:
            raise ValueError("no scheduler plugin binds pods: enable DefaultBinder or a plugin with bind()")
        self._next_start = 0

    # -- scheduling cycle ------------------------------------------------------------------------

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        skipped = state.get("__skip_filter__", frozenset())
        for plugin in self.filters:
            if plugin.name in skipped:
                continue
            status: Status | None = plugin.filter(state, pod, node)  # type: ignore[attr-defined]
            if status is not None:
                return Status(status.code, status.reasons, plugin.name)
        return None

    def schedule(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo],
                 adjust: Callable[[PodInfo, NodeInfo], NodeInfo] | None = None,
                 table: NodeTable | None = None) -> ScheduleResult:
        """Pick a node for ``pod`` among ``nodes``; ``adjust`` lets the caller add pods nominated to a
        node (by preemption) before filtering it; ``table`` (the same nodes as columns) enables the
        vector fast path."""
        diagnosis = Diagnosis(total_nodes=len(nodes))
        narrowed: frozenset[str] | None = None
        skipped: set[str] = set()
        narrowed_by: list[str] = []
        for plugin in self.pre_filters:
            outcome = plugin.pre_filter(state, pod, nodes)  # type: ignore[attr-defined]
            if outcome is None:
                continue
            if isinstance(outcome, PreFilterResult):
                if outcome.node_names is not None:
                    narrowed_by.append(plugin.name)
                    narrowed = outcome.node_names if narrowed is None else narrowed & outcome.node_names
            elif outcome.code == Code.SKIP:
                skipped.add(plugin.name)
            elif not outcome.ok:
                diagnosis.pre_filter = Status(outcome.code, outcome.reasons, plugin.name)
                return ScheduleResult(None, diagnosis)
        state["__skip_filter__"] = frozenset(skipped)
        active = [p for p in self.filters if p.name not in skipped]
        if table is not None and adjust is None and narrowed is None and len(table) == len(nodes):
            fast = self._vector_filter(state, pod, active, table)
            if fast is not None:
                return fast
        filters: list[tuple[str, Filter]] = [(p.name, p.filter) for p in active]  # type: ignore[attr-defined]
        candidates = nodes if narrowed is None else [n for n in nodes if n.name in narrowed]
        total = len(candidates)
        wanted = feasible_nodes_to_find(total, self.percentage)
        feasible: list[NodeInfo] = []
        statuses = diagnosis.statuses
        start = self._next_start % total if total else 0
        evaluated = 0
        for offset in range(total):
            node = candidates[(start + offset) % total]
            evaluated += 1
            checked = adjust(pod, node) if adjust is not None else node
            for name, run in filters:
                status = run(state, pod, checked)
                if status is not None:
                    statuses[node.name] = Status(status.code, status.reasons, name)
                    break
            else:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
        self._next_start = start + evaluated
        if narrowed is not None:
            for name in {n.name for n in nodes} - narrowed:
                statuses[name] = Status.unresolvable(f"node(s) didn't satisfy plugin(s) [{', '.join(narrowed_by)}]")
        if not feasible:
            return ScheduleResult(None, diagnosis, evaluated)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, None, evaluated, 1)
        return ScheduleResult(self._select(state, pod, feasible), None, evaluated, len(feasible))

    def _vector_filter(self, state: CycleState, pod: PodInfo, active: list[SchedulerPlugin],
                       table: NodeTable) -> ScheduleResult | None:
        """The same search as the per-node loop, over the table's columns; None when a plugin has no
        vector form or nothing fits (the per-node loop then explains why)."""
        mask: Mask | None = None
        for plugin in active:
            vector_filter = _method(plugin, "vector_filter")
            part = vector_filter(state, pod, table) if vector_filter is not None else None
            if part is None:
                return None
            mask = part if mask is None else mask & part
        total = len(table)
        if total == 0:
            return None
        if mask is None:
            mask = np.ones(total, np.bool_)
        start = self._next_start % total
        rotated = np.concatenate((mask[start:], mask[:start]))
        wanted = feasible_nodes_to_find(total, self.percentage)
        hits = np.flatnonzero(rotated)[:wanted]
        if len(hits) == 0:
            return None
        evaluated = int(hits[-1]) + 1 if len(hits) == wanted else total
        self._next_start = start + evaluated
        rows: Column = (hits + start) % total
        if len(rows) == 1:
            return ScheduleResult(table.nodes[int(rows[0])].name, None, evaluated, 1)
        feasible = list(operator.itemgetter(*rows.tolist())(table.nodes))
        return ScheduleResult(self._select(state, pod, feasible, table, rows), None, evaluated, len(rows))

    def _select(self, state: CycleState, pod: PodInfo, feasible: list[NodeInfo], table: NodeTable | None = None,
                rows: Column | None = None) -> str:
        skipped = set()
        for plugin in self.pre_scores:
            outcome = plugin.pre_score(state, pod, feasible)  # type: ignore[attr-defined]
            if outcome is not None and outcome.code == Code.SKIP:
                skipped.add(plugin.name)
        totals = np.zeros(len(feasible), np.int64)
        for plugin, weight, normalize in self.scorers:
            if plugin.name in skipped:
                continue
            vector_score = _method(plugin, "vector_score") if table is not None else None
            if vector_score is not None:
                totals += vector_score(state, pod, table, rows) * weight
                continue
            score = plugin.score  # type: ignore[attr-defined]
            scores = {node.name: score(state, pod, node) for node in feasible}
            if normalize is not None:
                normalize(state, pod, scores)
            totals += np.fromiter((scores[node.name] for node in feasible), np.int64, len(feasible)) * weight
        winners = np.flatnonzero(totals == totals.max())
        return feasible[int(random.choice(winners))].name

    async def post_filter(self, state: CycleState, pod: PodInfo, diagnosis: Diagnosis) -> PostFilterResult:
        messages = []
        for plugin in self.post_filters:
            result: PostFilterResult = await plugin.post_filter(state, pod, diagnosis.statuses)  # type: ignore[attr-defined]
            if result.nominated_node_name:
                return result
            if result.message:
                messages.append(result.message)
        return PostFilterResult(message=" ".join(messages))

    def reserve(self, state: CycleState, pod: PodInfo, node: str) -> Status | None:
        for index, plugin in enumerate(self.reserves):
            status: Status | None = plugin.reserve(state, pod, node)  # type: ignore[attr-defined]
            if status is not None and not status.ok:
                self.unreserve(state, pod, node, upto=index + 1)
                return status
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node: str, upto: int | None = None) -> None:
        for plugin in reversed(self.reserves[:upto]):
            unreserve = _method(plugin, "unreserve")
            if unreserve is not None:
                unreserve(state, pod, node)

    # -- binding cycle ---------------------------------------------------------------------------

    async def bind(self, state: CycleState, pod: PodInfo, node: str) -> Status | None:
        """Permit, pre-bind, bind (first binder that does not skip), post-bind; a failure names its plugin."""
        for stage in (self.permits, self.pre_binds):
            for plugin in stage:
                method = plugin.permit if stage is self.permits else plugin.pre_bind  # type: ignore[attr-defined]
                status = await method(state, pod, node)
                if status is not None and not status.ok:
                    return Status(status.code, status.reasons, plugin.name)
        for plugin in self.binders:
            status = await plugin.bind(state, pod, node)  # type: ignore[attr-defined]
            if status is not None and status.code == Code.SKIP:
                continue
            if status is not None and not status.ok:
                return Status(status.code, status.reasons, plugin.name)
            break
        else:
            return Status.error("every bind plugin skipped the pod")
        for plugin in self.post_binds:
            await plugin.post_bind(state, pod, node)  # type: ignore[attr-defined]
        return None
