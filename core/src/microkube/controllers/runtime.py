"""The reconcile runtime: shared informers, rate-limited work queues, level-triggered controllers,
and leader election through coordination.k8s.io Leases.

A controller implements ``reconcile(key) -> Outcome`` and must converge from any starting state:
events only say *which* key to look at, never *what* to do. Informers list, then watch from the
list's resourceVersion, relist when the server answers 410, and resync periodically so a missed
edge can never leave an object unreconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from microkube.client import Client, Resource
from microkube.metrics import Histogram
from microkube.timestamps import format_micro_time, format_time, parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import Outcome, Reconciler

__all__ = ["ControllerRunner", "EventRecorder", "Informer", "LeaderElector", "Outcome", "Reconciler", "WorkQueue",
           "object_key"]

log = logging.getLogger(__name__)

Object = dict[str, Any]
Handler = Callable[[str, Object, Object | None], None]
LEASES = Resource("coordination.k8s.io", "v1", "leases")


def object_key(obj: Object) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


class Informer:
    """A cache of one resource kept current by list + watch, shared by every controller that reads it."""

    def __init__(self, client: Client, resource: Resource, *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", resync_seconds: float = 300.0) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_seconds = resync_seconds
        self.objects: dict[str, Object] = {}
        self.handlers: list[Handler] = []
        self.indexers: dict[str, Callable[[Object], list[str]]] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str) -> Object | None:
        return self.objects.get(key)

    def add_handler(self, handler: Handler) -> None:
        """``handler(event, obj, old)`` with event ADDED, MODIFIED, DELETED or SYNC (a resync)."""
        self.handlers.append(handler)
        for obj in list(self.objects.values()):
            handler("ADDED", obj, None)

    def add_index(self, name: str, function: Callable[[Object], list[str]]) -> None:
        self.indexers[name] = function
        index: dict[str, set[str]] = {}
        for key, obj in self.objects.items():
            for value in function(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    def by_index(self, name: str, value: str) -> list[Object]:
        return [self.objects[k] for k in sorted(self._indexes.get(name, {}).get(value, set())) if k in self.objects]

    # -- keeping current -------------------------------------------------------------------------

    def _reindex(self, key: str, old: Object | None, new: Object | None) -> None:
        for name, function in self.indexers.items():
            index = self._indexes.setdefault(name, {})
            for value in function(old) if old is not None else []:
                index.get(value, set()).discard(key)
            for value in function(new) if new is not None else []:
                index.setdefault(value, set()).add(key)

    def _apply(self, event: str, obj: Object) -> None:
        # as client-go's informers in kube-scheduler and kube-controller-manager: managedFields are
        # never read from a cache and are a third of a pod; an update sent back without them keeps
        # the stored ones
        (obj.get("metadata") or {}).pop("managedFields", None)
        key = object_key(obj)
        old = self.objects.get(key)
        if event == "DELETED":
            self.objects.pop(key, None)
            self._reindex(key, old, None)
        else:
            self.objects[key] = obj
            self._reindex(key, old, obj)
            event = "ADDED" if old is None else "MODIFIED"
        for handler in self.handlers:
            handler(event, obj, old)

    async def _relist(self) -> None:
        listed = await self.client.list(self.resource, self.namespace, label_selector=self.label_selector,
                                        field_selector=self.field_selector)
        fresh = {object_key(o): o for o in listed.get("items") or []}
        for key in [k for k in self.objects if k not in fresh]:
            self._apply("DELETED", self.objects[key])
        for obj in fresh.values():
            current = self.objects.get(object_key(obj))
            if current is None or current.get("metadata", {}).get("resourceVersion") != obj["metadata"].get(
                "resourceVersion"
            ):
                self._apply("MODIFIED", obj)
        self.resource_version = str(listed.get("metadata", {}).get("resourceVersion", ""))
        self.relists += 1
        self.synced.set()

    def _resync(self) -> None:
        for obj in list(self.objects.values()):
            for handler in self.handlers:
                handler("SYNC", obj, obj)

    async def run(self) -> None:
        backoff = 0.1
        next_resync = time.monotonic() + self.resync_seconds
        while True:
            try:
                await self._relist()
                backoff = 0.1
                while True:
                    timeout = max(1, int(next_resync - time.monotonic()))
                    async for event in self.client.watch(
                        self.resource, self.namespace, resource_version=self.resource_version,
                        label_selector=self.label_selector, field_selector=self.field_selector,
                        timeout_seconds=timeout,
                    ):
                        obj = event.get("object") or {}
                        self.resource_version = str(obj.get("metadata", {}).get("resourceVersion",
                                                                                 self.resource_version))
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._apply(event["type"], obj)
                    if time.monotonic() >= next_resync:
                        self._resync()
                        next_resync = time.monotonic() + self.resync_seconds
            except asyncio.CancelledError:
                raise
            except errors.Expired:
                log.debug("watch of %s expired; relisting", self.resource.plural)
            except (errors.Retryable, errors.MicrokubeError) as exc:
                log.warning("informer for %s: %s; relisting in %.1fs", self.resource.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


class WorkQueue:
    """Keys to reconcile: each key is queued at most once and handled by one worker at a time; a key
    that fails waits an exponentially growing delay (5 ms doubling up to 1000 s, client-go's default)."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.shutting_down = False
        self.adds = 0
        self.retries = 0

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        if self.shutting_down:
            return
        if key in self._processing:
            self._dirty.add(key)  # handled again once the current run finishes
            return
        if key not in self._queued:
            self._queued.add(key)
            self.adds += 1
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.retries += 1
        delay: float = min(self.max_delay, self.base_delay * 2.0 ** failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str | None:
        key = await self._queue.get()
        if key is None:
            return None
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def shutdown(self, workers: int) -> None:
        self.shutting_down = True
        for timer in self._timers.values():
            timer.cancel()
        for _ in range(workers):
            self._queue.put_nowait(None)


@dataclass
class ControllerMetrics:
    reconciles: int = 0
    errors: int = 0
    requeues: int = 0
    latency: Histogram = field(default_factory=Histogram)


class ControllerRunner:
    """Runs a reconciler's workers over its queue and records its metrics."""

    def __init__(self, reconciler: Reconciler, *, workers: int = 2, queue: WorkQueue | None = None) -> None:
        self.reconciler = reconciler
        self.workers = workers
        self.queue = queue if queue is not None else WorkQueue()  # an empty queue is falsy
        self.metrics = ControllerMetrics()
        self._tasks: list[asyncio.Task[None]] = []

    def enqueue(self, event: str, obj: Object, old: Object | None) -> None:
        """An informer handler: every event, for any object, just queues its key."""
        self.queue.add(object_key(obj))

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            started = time.perf_counter()
            try:
                outcome = await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                raise
            except Exception as exc:  # a reconciler bug or a transient failure: retry with backoff
                log.warning("%s: reconcile of %s failed: %s", self.reconciler.name, key, exc)
                outcome = Outcome.retry(exc)
            self.metrics.reconciles += 1
            self.metrics.latency.observe(time.perf_counter() - started)
            self.queue.done(key)
            if outcome.error is not None:
                self.metrics.errors += 1
                after = outcome.error.after if isinstance(outcome.error, errors.Retryable) else None
                if after is not None:
                    self.queue.add_after(key, after)
                else:
                    self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
                if outcome.requeue_after is not None:
                    self.metrics.requeues += 1
                    self.queue.add_after(key, outcome.requeue_after)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"{self.reconciler.name}-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        self.queue.shutdown(self.workers)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


class LeaderElector:
    """Leader election on a coordination.k8s.io Lease, with Kubernetes' default timings."""

    def __init__(self, client: Client, name: str, *, namespace: str = "kube-system", identity: str = "",
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or f"{socket.gethostname()}_{random.getrandbits(32):08x}"
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()

    async def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except errors.NotFound:
            lease = None
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = parse_time(spec.get("renewTime"))
        duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or self.lease_duration))
        if lease is not None and holder and holder != self.identity and renewed and renewed + duration > now:
            return False  # someone else holds a live lease
        new_spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                    "renewTime": format_micro_time(now)}
        if holder == self.identity and lease is not None:
            new_spec["acquireTime"] = spec.get("acquireTime") or format_micro_time(now)
            new_spec["leaseTransitions"] = spec.get("leaseTransitions", 0)
        else:
            new_spec["acquireTime"] = format_micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + (1 if lease else 0)
        try:
            if lease is None:
                await self.client.create(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                   "metadata": {"name": self.name, "namespace": self.namespace},
                                                   "spec": new_spec}, self.namespace)
            else:
                lease["spec"] = new_spec
                await self.client.update(LEASES, lease)  # carries resourceVersion: a racing writer gets 409
        except (errors.Conflict, errors.AlreadyExists):
            return False
        return True

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Wait to become leader, run ``lead()`` while leading, stop it when the lease cannot be renewed."""
        while not await self._attempt():  # noqa: ASYNC110 - polling the Lease is the protocol
            await asyncio.sleep(self.retry_period * (1 + random.random() * 0.2))
        self.is_leader.set()
        leading = asyncio.create_task(lead())
        try:
            last_renew = time.monotonic()
            while not leading.done():
                await asyncio.sleep(self.retry_period)
                if await self._attempt():
                    last_renew = time.monotonic()
                elif time.monotonic() - last_renew > self.renew_deadline:
                    log.warning("lost the %s lease", self.name)
                    break
        finally:
            self.is_leader.clear()
            self.lost.set()
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leading

    async def _attempt(self) -> bool:
        try:
            return await self._try_acquire_or_renew()
        except errors.MicrokubeError as exc:
            log.debug("lease %s: %s", self.name, exc)
            return False

    async def release(self) -> None:
        """Give the lease up (on clean shutdown) so another candidate takes over at once."""
        with contextlib.suppress(errors.MicrokubeError):
            lease = await self.client.get(LEASES, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.client.update(LEASES, lease)


EVENTS = Resource("", "v1", "events")


class EventRecorder:
    """Writes core/v1 Events about objects (reason, message, the component that acted).

    Like client-go's event broadcaster, recording never waits for the API: events queue (up to
    ``queue_size``) and are written at most ``qps`` per second (bursts of ``burst``); under a storm
    the overflow is dropped and counted (``dropped``), so events can never slow the work they describe.
    """

    def __init__(self, client: Client, component: str, *, qps: float = 100.0, burst: int = 200,
                 queue_size: int = 1000) -> None:
        self.client = client
        self.component = component
        self.instance = socket.gethostname()
        self.qps = qps
        self.burst = burst
        self.dropped = 0
        self.written = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None

    async def record(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = utcnow()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'object')}.{int(now.timestamp() * 1e9):x}",
                         "namespace": namespace},
            "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
                               "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                               "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": type, "count": 1,
            "source": {"component": self.component}, "reportingComponent": self.component,
            "reportingInstance": self.instance, "firstTimestamp": format_time(now), "lastTimestamp": format_time(now),
        }
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._write(), name=f"events-{self.component}")

    async def _write(self) -> None:
        tokens = float(self.burst)
        last = time.monotonic()
        while True:
            event = await self._queue.get()
            now = time.monotonic()
            tokens = min(float(self.burst), tokens + (now - last) * self.qps)
            last = now
            if tokens < 1:
                await asyncio.sleep((1 - tokens) / self.qps)
                tokens, last = 1.0, time.monotonic()
            tokens -= 1
            try:
                await self.client.create(EVENTS, event, event["metadata"]["namespace"])
                self.written += 1
            except errors.MicrokubeError as exc:  # events are best effort: never fail the work for one
                log.debug("event %s not recorded: %s", event["reason"], exc)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
