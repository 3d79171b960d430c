"""DefaultPreemption: when no node fits, evict lower-priority pods from the node where that costs least.

On each node that failed only for reasons preemption can change (UNSCHEDULABLE, not
UNSCHEDULABLE_AND_UNRESOLVABLE), every lower-priority pod is a potential victim; victims are then
reprieved from the highest priority down while the pod still fits. The chosen node has the lowest
highest-victim priority, then the fewest victims. The pod is nominated to it (status.nominatedNodeName)
and the victims are deleted; the pod is scheduled when they are gone.
"""

from __future__ import annotations

import logging
from collections import Counter

from microkube.scheduler.resources import PODS, node_info
from microkube_interfaces import errors
from microkube_interfaces.scheduling import (
    Code,
    CycleState,
    NodeInfo,
    PodInfo,
    PostFilterResult,
    SchedulerHandle,
    Status,
)

log = logging.getLogger(__name__)

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


def _summary(total: int, reasons: Counter[str]) -> str:
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return f"preemption: 0/{total} nodes are available: {parts}."


class DefaultPreemption:
    name = "DefaultPreemption"

    def __init__(self, handle: SchedulerHandle) -> None:
        self.handle = handle
        #: preemptor → (its node, the victims deleted for it): while any victim is still on that node,
        #: the preemptor waits for it instead of preempting again (the watch may not even show the
        #: victims' deletionTimestamp yet when the preemptor is retried)
        self.pending: dict[str, tuple[str, set[str]]] = {}

    def _victims(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> list[PodInfo] | None:
        lower = [p for p in node.pods.values() if p.priority < pod.priority]
        if not lower:
            return None
        keep = [p for p in node.pods.values() if p.priority >= pod.priority]
        trial = node_info(node.node, keep)
        if self.handle.run_filters(state, pod, trial) is not None:
            return None
        victims = []
        for candidate in sorted(lower, key=lambda p: -p.priority):
            attempt = node_info(node.node, [*trial.pods.values(), candidate])
            if self.handle.run_filters(state, pod, attempt) is None:
                trial = attempt  # reprieved: it can stay
            else:
                victims.append(candidate)
        return victims

    def _victims_terminating(self, pod: PodInfo, node_name: str) -> bool:
        node = self.handle.node(node_name)
        if node is None:
            return False
        pending = self.pending.get(pod.key)
        if pending is not None and pending[0] == node_name and pending[1] & set(node.pods):
            return True
        self.pending.pop(pod.key, None)
        return any(other.priority < pod.priority and (other.pod.get("metadata") or {}).get("deletionTimestamp")
                   for other in node.pods.values())

    async def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]) -> PostFilterResult:
        total = len(self.handle.nodes())
        if pod.spec.get("preemptionPolicy") == "Never":
            return PostFilterResult(message="preemption: not eligible due to preemptionPolicy=Never.")
        nominated = str((pod.pod.get("status") or {}).get("nominatedNodeName") or "") or \
            self.pending.get(pod.key, ("", set()))[0]
        if nominated and self._victims_terminating(pod, nominated):
            return PostFilterResult(nominated_node_name=nominated)  # wait for them, do not preempt again
        reasons: Counter[str] = Counter()
        best: tuple[tuple[int, int, int], str, list[PodInfo]] | None = None
        for name, status in statuses.items():
            node = self.handle.node(name)
            if status.code != Code.UNSCHEDULABLE or node is None:
                reasons[NOT_HELPFUL] += 1
                continue
            victims = self._victims(state, pod, node)
            if not victims:
                reasons[NO_VICTIMS] += 1
                continue
            rank = (max(v.priority for v in victims), len(victims), sum(v.priority for v in victims))
            if best is None or rank < best[0]:
                best = (rank, name, victims)
        reasons.update({NOT_HELPFUL: total - len(statuses)} if total > len(statuses) else {})
        if best is None:
            return PostFilterResult(message=_summary(total, reasons))
        _, node_name, victims = best
        self.pending[pod.key] = (node_name, {v.key for v in victims})
        meta = pod.pod["metadata"]
        log.info("preempting %s on %s for %s/%s (priority %d)", ", ".join(v.key for v in victims), node_name,
                 meta.get("namespace"), meta.get("name"), pod.priority)
        for victim in victims:
            victim_meta = victim.pod["metadata"]
            await self.handle.record_event(victim.pod, "Normal", "Preempted",
                                           f"Preempted by pod {meta.get('uid', '')} on node {node_name}")
            try:
                await self.handle.client.delete(PODS, victim_meta["name"], victim_meta["namespace"],
                                                preconditions={"uid": victim_meta.get("uid", "")})
            except (errors.NotFound, errors.Conflict):
                pass
        try:
            await self.handle.client.patch(PODS, meta["name"], {"status": {"nominatedNodeName": node_name}},
                                           meta["namespace"], subresource="status")
        except errors.MicrokubeError:
            pass
        return PostFilterResult(nominated_node_name=node_name)
