"""The watch cache: lists and watches are served from memory, fed by one store watch.

At start the cache lists everything under ``/registry/`` at one revision, then watches from the next
revision. Each group-resource (``pods``, ``deployments.apps``) has a ResourceCache with the current
objects (kept as JSON bytes with ``resourceVersion`` already injected, so a LIST is a join of bytes)
and a bounded history of events, so a watch can resume from a recent resourceVersion; older ones get
410 Expired and the client relists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from microkube_interfaces.errors import Expired
from microkube_interfaces.store import EventType, KeyValue, Store

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "/registry/"
#: Events kept per group-resource for watch resumption.
HISTORY_EVENTS = 10_000
#: A watcher that falls this far behind is closed (the client re-watches), protecting server memory.
WATCHER_QUEUE_LIMIT = 50_000


def inject_revision(value: bytes, revision: int) -> tuple[bytes, dict[str, Any]]:
    obj: dict[str, Any] = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return orjson.dumps(obj), obj


@dataclass(slots=True)
class Entry:
    """One object as cached: its bytes (resourceVersion included) and what list filters need."""

    key: str
    raw: bytes
    namespace: str
    name: str
    labels: dict[str, str]
    revision: int
    #: metadata.deletionTimestamp is set (the object is being deleted).
    deleting: bool = False

    def obj(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.raw)
        return result


def make_entry(key: str, raw: bytes, obj: dict[str, Any], revision: int) -> Entry:
    meta = obj.get("metadata") or {}
    return Entry(key, raw, meta.get("namespace") or "", meta.get("name") or "", meta.get("labels") or {}, revision,
                 bool(meta.get("deletionTimestamp")))


@dataclass(slots=True)
class CacheEvent:
    """One change. ``obj``/``prev_obj`` are the decoded objects while the event is fanned out; events
    kept in history drop them (decoded objects cost ~10x their JSON) and decode again on demand."""

    type: str  # ADDED | MODIFIED | DELETED
    entry: Entry
    obj: dict[str, Any] | None
    prev: Entry | None
    prev_obj: dict[str, Any] | None
    #: Encodings shared by every watcher of this event, keyed by the watcher's output format.
    encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def revision(self) -> int:
        return self.entry.revision

    def object(self) -> dict[str, Any]:
        return self.obj if self.obj is not None else self.entry.obj()

    def previous(self) -> dict[str, Any] | None:
        if self.prev_obj is not None:
            return self.prev_obj
        return self.prev.obj() if self.prev is not None else None


Matcher = Callable[[Entry, dict[str, Any] | None], bool]


class Watcher:
    """One client watch: filtered events queued for the HTTP handler to write."""

    def __init__(self, namespace: str, matches: Matcher) -> None:
        self.namespace = namespace
        self.matches = matches
        self.queue: asyncio.Queue[CacheEvent | None] = asyncio.Queue()
        self.closed = False

    def offer(self, event: CacheEvent) -> None:
        if self.closed:
            return
        if self.namespace and event.entry.namespace != self.namespace:
            return
        now_matches = self.matches(event.entry, event.obj)
        was_matching = event.prev is not None and self.matches(event.prev, event.prev_obj)
        if event.type == "DELETED":
            if now_matches:
                self._put(event)
            return
        if now_matches and (event.type == "ADDED" or was_matching):
            self._put(event)
        elif now_matches:
            self._put(CacheEvent("ADDED", event.entry, event.obj, event.prev, event.prev_obj))
        elif was_matching:
            # The object left this watcher's selection: to the watcher it was deleted.
            self._put(CacheEvent("DELETED", event.entry, event.obj, event.prev, event.prev_obj))

    def _put(self, event: CacheEvent) -> None:
        if self.queue.qsize() >= WATCHER_QUEUE_LIMIT:
            self.close()
            return
        self.queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class ResourceCache:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.entries: dict[str, Entry] = {}
        self.history: deque[CacheEvent] = deque(maxlen=HISTORY_EVENTS)
        #: Revision from which history is complete (events after it are all in ``history``).
        self.history_start = 0
        self.watchers: set[Watcher] = set()
        #: In-process observers called synchronously with every event (CRD serving, lifecycle).
        self.listeners: list[Callable[[CacheEvent], None]] = []
        self._sorted: list[str] | None = None

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.entries)
        return self._sorted

    def load(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self._sorted = None

    def apply(self, kind: EventType, kv: KeyValue) -> CacheEvent:
        prev = self.entries.get(kv.key)
        raw, obj = inject_revision(kv.value, kv.mod_revision)
        entry = make_entry(kv.key, raw, obj, kv.mod_revision)
        if kind is EventType.DELETE:
            self.entries.pop(kv.key, None)
            self._sorted = None
            event = CacheEvent("DELETED", entry, obj, prev, None)
        else:
            if prev is None:
                self._sorted = None
            self.entries[kv.key] = entry
            event = CacheEvent("ADDED" if prev is None else "MODIFIED", entry, obj, prev, None)
        for watcher in list(self.watchers):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)
        if len(self.history) == self.history.maxlen:
            self.history_start = self.history[0].revision
        self.history.append(CacheEvent(event.type, event.entry, None, event.prev, None))
        return event

    def events_since(self, revision: int) -> list[CacheEvent]:
        """Events after ``revision``; Expired if history no longer reaches back that far."""
        if revision < self.history_start:
            raise Expired(f"too old resource version: {revision} ({self.history_start})")
        return [e for e in self.history if e.revision > revision]


class WatchCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.caches: dict[str, ResourceCache] = {}
        self.global_listeners: list[Callable[[CacheEvent], None]] = []
        self.revision = 0
        self.started_at = 0
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None

    def cache_for(self, prefix: str) -> ResourceCache:
        cache = self.caches.get(prefix)
        if cache is None:
            cache = self.caches[prefix] = ResourceCache(prefix)
            # Every event since the cache started went to the cache of its prefix: none was missed.
            cache.history_start = self.started_at
            cache.listeners.extend(self.global_listeners)
        return cache

    def add_global_listener(self, listener: Callable[[CacheEvent], None]) -> None:
        """Observe every event of every resource, including resources cached later."""
        self.global_listeners.append(listener)
        for cache in self.caches.values():
            cache.listeners.append(listener)

    @staticmethod
    def prefix_of(key: str) -> str:
        end = key.index("/", len(REGISTRY_PREFIX))
        return key[: end + 1]

    async def start(self) -> None:
        revision = await self.store.current_revision()
        page = await self.store.list(REGISTRY_PREFIX, revision=revision)
        for kv in page.items:
            raw, obj = inject_revision(kv.value, kv.mod_revision)
            self.cache_for(self.prefix_of(kv.key)).load(make_entry(kv.key, raw, obj, kv.mod_revision))
        self.revision = revision
        self.started_at = revision
        for cache in self.caches.values():
            cache.history_start = revision
        self._task = asyncio.create_task(self._run(revision + 1), name="watch-cache")
        self.ready.set()

    async def _run(self, start_revision: int) -> None:
        try:
            async for batch in self.store.watch(REGISTRY_PREFIX, start_revision=start_revision):
                for event in batch:
                    self.cache_for(self.prefix_of(event.kv.key)).apply(event.type, event.kv)
                    self.revision = event.kv.mod_revision
                async with self._advanced:
                    self._advanced.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the cache is the API server's read path: fail loudly
            log.exception("watch cache stopped")
            self.failed = exc
            async with self._advanced:
                self._advanced.notify_all()

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the cache has applied ``revision`` (read-your-writes for lists and watches)."""
        if self.revision >= revision:
            return
        async with asyncio.timeout(timeout), self._advanced:
            while self.revision < revision:
                if self.failed is not None:
                    raise RuntimeError(f"watch cache failed: {self.failed}")
                await self._advanced.wait()

    async def sync(self) -> None:
        """Catch up with everything the store has committed so far."""
        await self.wait_for(await self.store.current_revision())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cache in self.caches.values():
            for watcher in list(cache.watchers):
                watcher.close()
