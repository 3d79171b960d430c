"""Every node's numbers as columns, so the built-in plugins filter and score thousands of nodes in a
few vector operations instead of a Python call per node.

This is a core-private fast path: a built-in plugin may offer ``vector_filter(state, pod, table)``
(a boolean mask over rows, or None to fall back to per-node ``filter``) and
``vector_score(state, pod, table, rows)`` (normalised scores for those rows). Plugins from packs use
the per-node extension points of scheduler/v1, and a pod whose active plugins lack a vector form
takes the per-node path. Both paths give the same answers (tested).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from microkube_interfaces.scheduling import NodeInfo

Column = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class NodeTable:
    COLUMNS = ("alloc_cpu", "alloc_mem", "alloc_eph", "alloc_pods", "req_cpu", "req_mem", "req_eph", "req_pods",
               "nz_cpu", "nz_mem")

    def __init__(self) -> None:
        self.nodes: list[NodeInfo] = []
        self.rows: dict[str, int] = {}
        self._capacity = 0
        self.alloc_cpu = self.alloc_mem = self.alloc_eph = self.alloc_pods = np.zeros(0, np.int64)
        self.req_cpu = self.req_mem = self.req_eph = self.req_pods = np.zeros(0, np.int64)
        self.nz_cpu = self.nz_mem = np.zeros(0, np.int64)
        self.unschedulable: Mask = np.zeros(0, np.bool_)
        self.tainted: Mask = np.zeros(0, np.bool_)
        #: rows with scalar (extended) resources allocatable or requested: checked per node
        self.scalar: Mask = np.zeros(0, np.bool_)
        self._grow(64)

    def __len__(self) -> int:
        return len(self.nodes)

    def _grow(self, capacity: int) -> None:
        for name in self.COLUMNS:
            column = np.zeros(capacity, np.int64)
            column[: self._capacity] = getattr(self, name)[: self._capacity]
            setattr(self, name, column)
        for name in ("unschedulable", "tainted", "scalar"):
            flags = np.zeros(capacity, np.bool_)
            flags[: self._capacity] = getattr(self, name)[: self._capacity]
            setattr(self, name, flags)
        self._capacity = capacity

    def add(self, node: NodeInfo) -> None:
        if len(self.nodes) == self._capacity:
            self._grow(self._capacity * 2)
        self.rows[node.name] = len(self.nodes)
        self.nodes.append(node)
        self.sync(node)

    def rebuild(self, nodes: list[NodeInfo]) -> None:
        self.nodes, self.rows = [], {}
        for node in nodes:
            self.add(node)

    def sync(self, node: NodeInfo) -> None:
        row = self.rows.get(node.name)
        if row is None:
            return
        allocatable, requested, non_zero = node.allocatable, node.requested, node.non_zero_requested
        self.alloc_cpu[row] = allocatable.milli_cpu
        self.alloc_mem[row] = allocatable.memory
        self.alloc_eph[row] = allocatable.ephemeral_storage
        self.alloc_pods[row] = allocatable.pods
        self.req_cpu[row] = requested.milli_cpu
        self.req_mem[row] = requested.memory
        self.req_eph[row] = requested.ephemeral_storage
        self.req_pods[row] = requested.pods
        self.nz_cpu[row] = non_zero.milli_cpu
        self.nz_mem[row] = non_zero.memory
        self.unschedulable[row] = node.unschedulable
        self.tainted[row] = bool(node.taints)
        self.scalar[row] = bool(allocatable.scalar) or any(requested.scalar.values())

    def view(self, name: str) -> Column:
        column: Column = getattr(self, name)[: len(self.nodes)]
        return column

    def flags(self, name: str) -> Mask:
        mask: Mask = getattr(self, name)[: len(self.nodes)]
        return mask
