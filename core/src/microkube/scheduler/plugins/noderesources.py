"""NodeResourcesFit (requests against allocatable; LeastAllocated or MostAllocated scoring) and
NodeResourcesBalancedAllocation."""

from __future__ import annotations

import numpy as np

from microkube.scheduler.table import Column, Mask, NodeTable
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

    def vector_filter(self, state: CycleState, pod: PodInfo, table: NodeTable) -> Mask | None:
        wanted = pod.requests
        if wanted.scalar:
            return None  # extended resources: per node
        mask: Mask = table.view("req_pods") + 1 <= table.view("alloc_pods")
        for amount, requested, allocatable in ((wanted.milli_cpu, "req_cpu", "alloc_cpu"),
                                               (wanted.memory, "req_mem", "alloc_mem"),
                                               (wanted.ephemeral_storage, "req_eph", "alloc_eph")):
            if amount:
                mask &= table.view(requested) + amount <= table.view(allocatable)
        return mask

    def vector_score(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: Column) -> Column:
        wanted = pod.non_zero_requests
        total = np.zeros(len(rows), np.int64)
        for amount, used_name, capacity_name in ((wanted.milli_cpu, "nz_cpu", "alloc_cpu"),
                                                 (wanted.memory, "nz_mem", "alloc_mem")):
            capacity = table.view(capacity_name)[rows]
            requested = table.view(used_name)[rows] + amount
            usable = (capacity > 0) & (requested <= capacity)
            safe = np.where(capacity > 0, capacity, 1)
            part = requested * MAX_NODE_SCORE // safe if self.most_allocated else \
                (capacity - requested) * MAX_NODE_SCORE // safe
            total += np.where(usable, part, 0)
        result: Column = total // 2
        return result

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

    def vector_score(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: Column) -> Column:
        wanted = pod.non_zero_requests
        cpu_capacity, memory_capacity = table.view("alloc_cpu")[rows], table.view("alloc_mem")[rows]
        valid = (cpu_capacity > 0) & (memory_capacity > 0)
        cpu = np.minimum(1.0, (table.view("nz_cpu")[rows] + wanted.milli_cpu) / np.where(valid, cpu_capacity, 1))
        memory = np.minimum(1.0, (table.view("nz_mem")[rows] + wanted.memory) / np.where(valid, memory_capacity, 1))
        scores: Column = np.where(valid, ((1 - np.abs(cpu - memory) / 2) * MAX_NODE_SCORE).astype(np.int64), 0)
        return scores
