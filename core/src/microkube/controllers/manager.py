"""The controller manager: shared informers, one runner per controller, leader election.

Every registered controller (built-in or a pack's, through ``microkube_controllers``) reconciles the
keys of the resource it watches; events of the resources it owns queue their controller owner's key.
Controllers can be disabled by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from microkube.client import Client, Resource
from microkube.controllers.runtime import (
    ControllerRunner,
    EventRecorder,
    Informer,
    LeaderElector,
    WorkQueue,
    object_key,
)
from microkube.metrics import Exposition
from microkube_interfaces.controllers import Cache, ControllerRegistration, ResourceRef

log = logging.getLogger(__name__)

CONTROLLER_UID = "controller-uid"


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


class InformerCache:
    """The Cache view controllers read, over a shared Informer."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer

    def get(self, key: str) -> dict[str, Any] | None:
        return self.informer.get(key)

    def items(self, namespace: str = "") -> list[dict[str, Any]]:
        return [o for o in self.informer.objects.values()
                if not namespace or (o.get("metadata") or {}).get("namespace") == namespace]

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        return self.informer.by_index(index, value)

    def add_handler(self, handler: Callable[[str, dict[str, Any], dict[str, Any] | None], None]) -> None:
        self.informer.add_handler(handler)


class _Context:
    """What one controller sees: the shared caches and client, and its own queue."""

    def __init__(self, manager: ControllerManager, queue: WorkQueue) -> None:
        self.client = manager.client
        self._manager = manager
        self._queue = queue

    def cache(self, resource: ResourceRef) -> Cache:
        return self._manager.cache(resource)

    def enqueue(self, key: str) -> None:
        self._queue.add(key)

    async def record_event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        await self._manager.recorder.record(obj, type, reason, message)


class ControllerManager:
    def __init__(self, client: Client, registrations: Iterable[ControllerRegistration], *,
                 disabled: Iterable[str] = (), resync_seconds: float = 300.0) -> None:
        self.client = client
        self.resync_seconds = resync_seconds
        wanted = set(disabled)
        known = {r.name for r in registrations}
        unknown = wanted - known
        if unknown:
            raise ValueError(f"unknown controllers {sorted(unknown)} cannot be disabled; known: {sorted(known)}")
        self.registrations = [r for r in registrations if r.name not in wanted]
        self.informers: dict[ResourceRef, Informer] = {}
        self.recorder = EventRecorder(client, "microkube-controller-manager")
        self.runners: dict[str, ControllerRunner] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def cache(self, resource: ResourceRef) -> Cache:
        return InformerCache(self._informer(resource))

    def _informer(self, resource: ResourceRef) -> Informer:
        informer = self.informers.get(resource)
        if informer is None:
            informer = Informer(self.client, Resource(resource.group, resource.version, resource.plural,
                                                      resource.namespaced), resync_seconds=self.resync_seconds)
            informer.add_index(CONTROLLER_UID, lambda o: [ref["uid"]] if (ref := controller_ref(o)) else [])
            self.informers[resource] = informer
        return informer

    def _build(self) -> None:
        for registration in self.registrations:
            queue = WorkQueue()
            reconciler = registration.build(_Context(self, queue))
            runner = ControllerRunner(reconciler, workers=registration.workers, queue=queue)
            self.runners[registration.name] = runner
            self._informer(registration.watches).add_handler(runner.enqueue)
            for owned in registration.owns:
                self._informer(owned).add_handler(self._owner_handler(runner, registration.watches.kind))

    @staticmethod
    def _owner_handler(runner: ControllerRunner, kind: str) -> Any:
        def handle(event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            for candidate in (obj, old):
                ref = controller_ref(candidate) if candidate is not None else None
                if ref is not None and ref.get("kind") == kind:
                    namespace = (candidate or {}).get("metadata", {}).get("namespace")
                    runner.queue.add(f"{namespace}/{ref['name']}" if namespace else ref["name"])
        return handle

    async def run(self) -> None:
        """Run every controller until cancelled (the caller elects a leader first, if it wants one)."""
        self._build()
        self._tasks = [asyncio.create_task(i.run(), name=f"informer-{r.plural}") for r, i in self.informers.items()]
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))
        for runner in self.runners.values():
            runner.start()
        try:
            await asyncio.Event().wait()
        finally:
            for runner in self.runners.values():
                await runner.stop()
            for task in self._tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.recorder.close()

    def render_metrics(self) -> bytes:
        """Per-controller queue depth, adds, retries, reconciles, errors and latency; informer state."""
        out = Exposition()
        runners = sorted(self.runners.items())
        out.family("workqueue_depth", "gauge", "Keys waiting in each controller's work queue.",
                   (({"name": name}, len(r.queue)) for name, r in runners))
        out.family("workqueue_adds_total", "counter", "Keys added to each controller's work queue.",
                   (({"name": name}, r.queue.adds) for name, r in runners))
        out.family("workqueue_retries_total", "counter", "Keys requeued with backoff after a failed reconcile.",
                   (({"name": name}, r.queue.retries) for name, r in runners))
        out.family("controller_runtime_reconcile_total", "counter", "Reconciles by controller and result.",
                   (({"controller": name, "result": result}, value) for name, r in runners
                    for result, value in (("success", r.metrics.reconciles - r.metrics.errors),
                                          ("error", r.metrics.errors), ("requeue_after", r.metrics.requeues))))
        out.family("controller_runtime_reconcile_errors_total", "counter", "Failed reconciles by controller.",
                   (({"controller": name}, r.metrics.errors) for name, r in runners))
        out.family("controller_runtime_reconcile_time_seconds", "histogram", "Reconcile latency by controller.",
                   (({"controller": name}, r.metrics.latency) for name, r in runners))
        out.family("microkube_informer_objects", "gauge", "Objects cached by each shared informer.",
                   (({"resource": ref.plural}, len(i.objects)) for ref, i in self.informers.items()))
        out.family("microkube_informer_relists_total", "counter", "Full lists made by each shared informer.",
                   (({"resource": ref.plural}, i.relists) for ref, i in self.informers.items()))
        out.family("microkube_events_dropped_total", "counter", "Events dropped under an event storm.",
                   [({}, self.recorder.dropped)])
        return out.render()

    async def run_elected(self, identity: str = "") -> None:
        elector = LeaderElector(self.client, "microkube-controller-manager", identity=identity)
        try:
            await elector.run(self.run)
        finally:
            await elector.release()


__all__ = ["CONTROLLER_UID", "ControllerManager", "controller_ref", "object_key"]
