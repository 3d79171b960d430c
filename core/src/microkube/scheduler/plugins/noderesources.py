"""NodeResourcesFit (requests against allocatable; LeastAllocated or MostAllocated scoring) and
NodeResourcesBalancedAllocation."""

from __future__ import annotations

from microkube_interfaces.scheduling import (
    MAX_NODE_SCORE,
    CycleState,
    NodeInfo,
    PodInfo,
    SchedulerHandle,
    Status,
)

LEAST_ALLOCATED = "LeastAllocated"
MOST_ALLOCATED = "MostAllocated"


class NodeResourcesFit:
    name = "NodeResourcesFit"

    def __init__(self, handle: SchedulerHandle, strategy: str = LEAST_ALLOCATED) -> None:
        if strategy not in (LEAST_ALLOCATED, MOST_ALLOCATED):
            raise ValueError(f"scoring strategy {strategy!r} is not one of {LEAST_ALLOCATED}, {MOST_ALLOCATED}")
        self.most_allocated = strategy == MOST_ALLOCATED

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        allocatable, requested, wanted = node.allocatable, node.requested, pod.requests
        reasons = []
        if requested.pods + 1 > allocatable.pods:
            reasons.append("Too many pods")
        if wanted.milli_cpu and requested.milli_cpu + wanted.milli_cpu > allocatable.milli_cpu:
            reasons.append("Insufficient cpu")
        if wanted.memory and requested.memory + wanted.memory > allocatable.memory:
            reasons.append("Insufficient memory")
        if wanted.ephemeral_storage and (requested.ephemeral_storage + wanted.ephemeral_storage
                                         > allocatable.ephemeral_storage):
            reasons.append("Insufficient ephemeral-storage")
        for resource, amount in wanted.scalar.items():
            if amount and requested.scalar.get(resource, 0) + amount > allocatable.scalar.get(resource, 0):
                reasons.append(f"Insufficient {resource}")
        return Status.unschedulable(*reasons) if reasons else None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        allocatable, used, wanted = node.allocatable, node.non_zero_requested, pod.non_zero_requests
        total = 0
        for capacity, requested in ((allocatable.milli_cpu, used.milli_cpu + wanted.milli_cpu),
                                    (allocatable.memory, used.memory + wanted.memory)):
            if capacity <= 0 or requested > capacity:
                continue  # scores 0
            if self.most_allocated:
                total += requested * MAX_NODE_SCORE // capacity
            else:
                total += (capacity - requested) * MAX_NODE_SCORE // capacity
        return total // 2


class NodeResourcesBalancedAllocation:
    """Prefers nodes whose CPU and memory would be used in equal fractions."""

    name = "NodeResourcesBalancedAllocation"

    def __init__(self, handle: SchedulerHandle) -> None:
        pass

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        allocatable, used, wanted = node.allocatable, node.non_zero_requested, pod.non_zero_requests
        if allocatable.milli_cpu <= 0 or allocatable.memory <= 0:
            return 0
        cpu = min(1.0, (used.milli_cpu + wanted.milli_cpu) / allocatable.milli_cpu)
        memory = min(1.0, (used.memory + wanted.memory) / allocatable.memory)
        # the standard deviation of two fractions is half their difference
        return int((1 - abs(cpu - memory) / 2) * MAX_NODE_SCORE)
