"""The scheduler process: informers feed the cache and the queue; one loop schedules a pod at a time;
bindings run concurrently behind it.

Pods are ours when ``spec.schedulerName`` is one of this scheduler's names, so several schedulers (with
different plugins) run side by side. Several replicas of one scheduler elect a leader on a Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from microkube.client import Client, Resource
from microkube.controllers.manager import InformerCache
from microkube.controllers.runtime import EventRecorder, Informer, LeaderElector, object_key
from microkube.metrics import Exposition, Histogram
from microkube.scheduler.cache import SchedulerCache
from microkube.scheduler.framework import Diagnosis, Framework
from microkube.scheduler.queue import SchedulingQueue
from microkube.scheduler.resources import PODS, pod_info
from microkube_interfaces import errors
from microkube_interfaces.controllers import Cache, ResourceRef
from microkube_interfaces.scheduling import (
    CycleState,
    NodeInfo,
    PodInfo,
    SchedulerPluginRegistration,
    Status,
)

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
NODES = Resource("", "v1", "nodes", namespaced=False)
PRIORITY_CLASSES = ResourceRef("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False)
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
#: bindings in flight at once (each is one API request)
MAX_BINDINGS = 256


@dataclass
class SchedulerMetrics:
    scheduled: int = 0
    unschedulable: int = 0
    errors: int = 0
    attempts: int = 0
    scheduling_seconds: float = 0.0
    attempt_duration: Histogram = field(default_factory=Histogram)


class _Handle:
    """The SchedulerHandle plugins are built with."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.client = scheduler.client
        self._scheduler = scheduler

    def nodes(self) -> list[NodeInfo]:
        return self._scheduler.cache.node_list

    def node(self, name: str) -> NodeInfo | None:
        return self._scheduler.cache.nodes.get(name)

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        return self._scheduler.cache.nodes_with_affinity_pods()

    def cache(self, resource: Any) -> Cache:
        informer = self._scheduler.informers.get(resource)
        if informer is None:
            raise KeyError(f"{resource.plural} is not watched by the scheduler: list it in the plugin's "
                           "`watches` attribute")
        return InformerCache(informer)

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return self._scheduler.framework.run_filters(state, pod, node)

    async def record_event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        await self._scheduler.recorder.record(obj, type, reason, message)


class Scheduler:
    def __init__(self, client: Client, registrations: Iterable[SchedulerPluginRegistration], *,
                 names: Iterable[str] = (DEFAULT_SCHEDULER,), disabled: Iterable[str] = (),
                 percentage_of_nodes_to_score: int | None = None, resync_seconds: float = 300.0) -> None:
        self.client = client
        self.names = frozenset(names)
        registrations = list(registrations)
        known = {r.name for r in registrations}
        unknown = set(disabled) - known
        if unknown:
            raise ValueError(f"unknown scheduler plugins {sorted(unknown)} cannot be disabled; known: {sorted(known)}")
        self.cache = SchedulerCache()
        self.queue = SchedulingQueue()
        self.metrics = SchedulerMetrics()
        self.recorder = EventRecorder(client, DEFAULT_SCHEDULER if DEFAULT_SCHEDULER in self.names
                                      else sorted(self.names)[0])
        self.resync_seconds = resync_seconds
        handle = _Handle(self)
        enabled = [r for r in registrations if r.name not in set(disabled) and r.enabled_by_default]
        plugins = [(r.build(handle), r.weight) for r in enabled]
        self.framework = Framework(plugins, percentage_of_nodes_to_score)
        self.informers: dict[Any, Informer] = {}
        for resource in [PRIORITY_CLASSES, *(w for p, _ in plugins for w in getattr(p, "watches", ()))]:
            if resource not in self.informers:
                informer = Informer(client, Resource(resource.group, resource.version, resource.plural,
                                                     resource.namespaced), resync_seconds=resync_seconds)
                informer.add_handler(self._on_other)
                self.informers[resource] = informer
        self.node_informer = Informer(client, NODES, resync_seconds=resync_seconds)
        self.node_informer.add_handler(self._on_node)
        self.pod_informer = Informer(client, PODS, resync_seconds=resync_seconds)
        self.pod_informer.add_handler(self._on_pod)
        self._bindings = asyncio.Semaphore(MAX_BINDINGS)
        self._background: set[asyncio.Task[None]] = set()
        self._last_failure: dict[str, str] = {}
        self._post_filtering: set[str] = set()
        self.ready = asyncio.Event()

    # -- what the informers tell -----------------------------------------------------------------

    def priority(self, pod: dict[str, Any]) -> int:
        spec = pod.get("spec") or {}
        if spec.get("priority"):
            return int(spec["priority"])
        class_name = spec.get("priorityClassName")
        if class_name:
            found = self.informers[PRIORITY_CLASSES].get(class_name)
            if found is not None:
                return int(found.get("value") or 0)
        return 0

    def _on_pod(self, event: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = object_key(pod)
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if event == "DELETED" or (node and phase in ("Succeeded", "Failed")):
            self.queue.delete(key)
            self._last_failure.pop(key, None)
            if self.cache.remove_pod(key):
                self.queue.move_all()
            return
        if node:
            self.queue.delete(key)
            if not self.cache.refresh_pod(pod, key):
                self.cache.add_pod(pod_info(pod, self.priority(pod)), node)
            return
        if spec.get("schedulerName", DEFAULT_SCHEDULER) not in self.names or \
                (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.delete(key)
            return
        self.queue.add(key, pod, self.priority(pod))

    def _on_node(self, event: str, node: dict[str, Any], old: dict[str, Any] | None) -> None:
        if event == "DELETED":
            self.cache.remove_node(node["metadata"]["name"])
        elif self.cache.update_node(node):
            self.queue.move_all()

    def _on_other(self, event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if event != "SYNC":
            self.queue.move_all()

    # -- scheduling ------------------------------------------------------------------------------

    def schedule_one(self, key: str, pod: dict[str, Any]) -> None:
        started = time.perf_counter()
        self.metrics.attempts += 1
        info = pod_info(pod, self.priority(pod))
        state = CycleState()
        adjust = self.cache.with_nominated if self.cache.nominated else None
        try:
            result = self.framework.schedule(state, info, self.cache.node_list, adjust, self.cache.table)
        except Exception as exc:  # a plugin bug must not stop the scheduler
            log.exception("scheduling %s failed", key)
            self.metrics.errors += 1
            self.queue.retry(key)
            self._spawn(self._report_failure(key, info, f"scheduling error: {exc}"))
            return
        if result.node is None:
            self.metrics.unschedulable += 1
            self.queue.unschedulable(key)
            diagnosis = result.diagnosis or Diagnosis(total_nodes=len(self.cache.node_list))
            self._spawn(self._unschedulable(key, info, state, diagnosis))
            return
        status = self.framework.reserve(state, info, result.node)
        if status is not None:
            self.queue.retry(key)
            self._spawn(self._report_failure(key, info, f"reserve: {status.message}"))
            return
        self.cache.assume(info, result.node)
        self.queue.done(key)
        elapsed = time.perf_counter() - started
        self.metrics.scheduling_seconds += elapsed
        self.metrics.attempt_duration.observe(elapsed)
        self._spawn(self._bind(key, info, state, result.node))

    async def _bind(self, key: str, info: PodInfo, state: CycleState, node: str) -> None:
        async with self._bindings:
            try:
                status = await self.framework.bind(state, info, node)
            except Exception as exc:
                status = Status.error(str(exc))
        if status is not None:
            self.metrics.errors += 1
            self.cache.forget(key)
            self.framework.unreserve(state, info, node)
            if key not in self.queue.pods and self.pod_informer.get(key) is not None:
                current = self.pod_informer.get(key) or info.pod
                if not (current.get("spec") or {}).get("nodeName"):
                    self.queue.add(key, current, info.priority)
                    self.queue.retry(key)
            await self._report_failure(key, info, f"Binding rejected: {status.message}")
            return
        self.metrics.scheduled += 1
        self._last_failure.pop(key, None)
        meta = info.pod["metadata"]
        await self.recorder.record(info.pod, "Normal", "Scheduled",
                                   f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")

    async def _unschedulable(self, key: str, info: PodInfo, state: CycleState, diagnosis: Diagnosis) -> None:
        message = diagnosis.message()
        # one post-filter (preemption) per pod at a time: a retry while victims are being chosen and
        # deleted must not pick a second set of victims
        if diagnosis.pre_filter is None and self.framework.post_filters and key not in self._post_filtering:
            self._post_filtering.add(key)
            try:
                result = await self.framework.post_filter(state, info, diagnosis)
            except Exception as exc:
                log.exception("post-filter of %s failed", key)
                result = None
                message += f" preemption: {exc}"
            finally:
                self._post_filtering.discard(key)
            if result is not None and result.nominated_node_name:
                self.cache.nominate(info, result.nominated_node_name)
            elif result is not None and result.message:
                message += " " + result.message
        await self._report_failure(key, info, message)

    async def _report_failure(self, key: str, info: PodInfo, message: str) -> None:
        """A FailedScheduling event and the PodScheduled=False condition, once per distinct message."""
        if self._last_failure.get(key) == message:
            return
        self._last_failure[key] = message
        await self.recorder.record(info.pod, "Warning", "FailedScheduling", message)
        meta = info.pod["metadata"]
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastProbeTime": None,
                     "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with contextlib.suppress(errors.MicrokubeError):
            await self.client.patch(PODS, meta["name"], {"status": {"conditions": [condition]}}, meta["namespace"],
                                    content_type=STRATEGIC_MERGE, subresource="status")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        informers = [self.node_informer, self.pod_informer, *self.informers.values()]
        tasks = [asyncio.create_task(i.run(), name=f"scheduler-informer-{i.resource.plural}") for i in informers]
        tasks.append(asyncio.create_task(self.queue.run_flusher()))
        try:
            await asyncio.gather(*(i.synced.wait() for i in informers))
            self.ready.set()
            while True:
                key, pod = await self.queue.pop()
                self.schedule_one(key, pod)
                await asyncio.sleep(0)  # let informer events and bindings in between pods
        finally:
            for task in [*tasks, *self._background]:
                task.cancel()
            for task in [*tasks, *self._background]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.recorder.close()

    def render_metrics(self) -> bytes:
        out = Exposition()
        m = self.metrics
        out.family("scheduler_schedule_attempts_total", "counter", "Scheduling attempts by result.",
                   [({"result": "scheduled"}, m.scheduled), ({"result": "unschedulable"}, m.unschedulable),
                    ({"result": "error"}, m.errors)])
        out.family("scheduler_pending_pods", "gauge", "Pending pods by queue.",
                   (({"queue": queue}, count) for queue, count in self.queue.stats().items()))
        out.family("scheduler_scheduling_algorithm_duration_seconds", "histogram",
                   "Time to choose a node for a pod (the scheduling cycle).", [({}, m.attempt_duration)])
        out.family("scheduler_cache_nodes", "gauge", "Nodes in the scheduler's cache.", [({}, len(self.cache.nodes))])
        out.family("microkube_events_dropped_total", "counter", "Events dropped under an event storm.",
                   [({}, self.recorder.dropped)])
        return out.render()

    async def run_elected(self, identity: str = "") -> None:
        lease = "kube-scheduler" if self.names == {DEFAULT_SCHEDULER} else \
            f"microkube-scheduler-{sorted(self.names)[0]}"
        elector = LeaderElector(self.client, lease, identity=identity)
        try:
            await elector.run(self.run)
        finally:
            await elector.release()
