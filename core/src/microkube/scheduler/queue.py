"""The scheduling queue: active (a heap by priority, then age), backoff and unschedulable pods.

A pod that fits nowhere waits among the unschedulable until the cluster changes in a way that could
help (a node added or changed, a pod removed, a watched resource changed); it then goes through
backoff (1 s doubling to 10 s per failed attempt, kube-scheduler's defaults) back to active. Pods
unschedulable for 5 minutes are retried regardless.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Any

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
MAX_UNSCHEDULABLE_SECONDS = 300.0


def _essence(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod matters to scheduling it (kube-scheduler's isPodUpdated ignores the rest)."""
    meta = pod.get("metadata") or {}
    return meta.get("labels"), meta.get("annotations"), pod.get("spec")


class SchedulingQueue:
    def __init__(self, initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.pods: dict[str, dict[str, Any]] = {}
        self.priorities: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self._active: list[tuple[int, int, str]] = []
        self._in_active: set[str] = set()
        self._in_flight: set[str] = set()
        self._backoff: dict[str, float] = {}
        self._unschedulable: dict[str, float] = {}
        self._sequence = itertools.count()
        self._wakeup = asyncio.Event()
        #: bumped by every cluster change that may help unschedulable pods (kube's moveRequestCycle)
        self._move_cycle = 0
        self._popped_at_cycle: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.pods)

    def stats(self) -> dict[str, int]:
        return {"active": len(self._in_active), "backoff": len(self._backoff),
                "unschedulable": len(self._unschedulable)}

    def _push_active(self, key: str) -> None:
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)
        if key not in self._in_active:
            self._in_active.add(key)
            heapq.heappush(self._active, (-self.priorities.get(key, 0), next(self._sequence), key))
            self._wakeup.set()

    def add(self, key: str, pod: dict[str, Any], priority: int) -> None:
        """A pending pod appeared or changed. An unschedulable pod is retried at once only when its
        spec or metadata changed: status writes (the scheduler's own conditions) are no reason."""
        previous = self.pods.get(key)
        self.pods[key] = pod
        self.priorities[key] = priority
        if key in self._in_flight:
            return
        if previous is None or (key in self._unschedulable and _essence(previous) != _essence(pod)):
            self._push_active(key)

    def delete(self, key: str) -> None:
        self.pods.pop(key, None)
        self.priorities.pop(key, None)
        self.attempts.pop(key, None)
        self._in_active.discard(key)  # its heap entry is skipped when popped
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)
        self._popped_at_cycle.pop(key, None)

    async def pop(self) -> tuple[str, dict[str, Any]]:
        while True:
            while self._active:
                _, _, key = heapq.heappop(self._active)
                if key in self._in_active and key in self.pods:
                    self._in_active.discard(key)
                    self._in_flight.add(key)
                    self._popped_at_cycle[key] = self._move_cycle
                    self.attempts[key] = self.attempts.get(key, 0) + 1
                    return key, self.pods[key]
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: str) -> None:
        """The pod was scheduled (assumed): it leaves the queue."""
        self._in_flight.discard(key)
        self.delete(key)

    def backoff_seconds(self, key: str) -> float:
        attempts = max(1, self.attempts.get(key, 1))
        return float(min(self.max_backoff, self.initial_backoff * 2 ** (attempts - 1)))

    def unschedulable(self, key: str) -> None:
        """The pod fits nowhere now. If the cluster changed while it was being scheduled, it may fit
        already: back off and retry; otherwise wait for a change."""
        self._in_flight.discard(key)
        if key not in self.pods:
            return
        if self._popped_at_cycle.get(key, -1) < self._move_cycle:
            self._backoff[key] = time.monotonic() + self.backoff_seconds(key)
        else:
            self._unschedulable[key] = time.monotonic()

    def retry(self, key: str) -> None:
        """An error (not a verdict): back off, then retry."""
        self._in_flight.discard(key)
        if key in self.pods:
            self._backoff[key] = time.monotonic() + self.backoff_seconds(key)

    def move_all(self) -> None:
        """The cluster changed in a way that may let unschedulable pods fit."""
        self._move_cycle += 1
        if not self._unschedulable:
            return
        for key, failed_at in list(self._unschedulable.items()):
            del self._unschedulable[key]
            self._backoff[key] = failed_at + self.backoff_seconds(key)  # the flusher activates it when due
        self.flush()

    def flush(self) -> None:
        """Move pods whose backoff has expired, and long-unschedulable pods, to active."""
        now = time.monotonic()
        for key, ready in list(self._backoff.items()):
            if ready <= now:
                self._push_active(key)
        for key, since in list(self._unschedulable.items()):
            if now - since >= MAX_UNSCHEDULABLE_SECONDS:
                self._push_active(key)

    async def run_flusher(self, interval: float = 0.2) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()
