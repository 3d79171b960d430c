"""Deletion that outlives a request: emptying a terminating namespace, and ownerReference cascades.

This is the minimum the API contract needs so that ``kubectl delete namespace`` and deletes with
``propagationPolicy`` Foreground, Background and Orphan complete: it runs in-process beside the watch
cache. The full garbage collector and namespace controller (with events, conditions and rate
limiting) belong to the controller manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from microkube.apiserver.objects import DeleteOptions, WriteOptions
from microkube.apiserver.status import ApiError
from microkube.apiserver.watchcache import CacheEvent
from microkube_interfaces.auth import UserInfo

if TYPE_CHECKING:
    from microkube.apiserver.catalog import Served
    from microkube.apiserver.server import APIServer

log = logging.getLogger(__name__)

GC_USER = UserInfo("system:serviceaccount:kube-system:generic-garbage-collector", groups=("system:masters",))
NAMESPACE_PREFIX = "/registry/namespaces/"
POLL_SECONDS = 0.2


class Lifecycle:
    def __init__(self, server: APIServer) -> None:
        self.server = server
        #: owner uid → {(cache prefix, key)} of its dependents.
        self.dependents: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._owners_of: dict[str, list[str]] = {}
        #: uid → key of every live object, to tell whether an owner still exists.
        self._live: dict[str, str] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for prefix, cache in self.server.cache.caches.items():
            for entry in cache.entries.values():
                self._index(prefix, entry.key, entry.obj())
        self.server.cache.add_global_listener(self._on_event)
        for entry in list(self.server.cache.cache_for(NAMESPACE_PREFIX).entries.values()):
            self._check(NAMESPACE_PREFIX, entry.key, entry.obj())
        for prefix, cache in self.server.cache.caches.items():
            for entry in list(cache.entries.values()):
                obj = entry.obj()
                if (obj.get("metadata") or {}).get("deletionTimestamp"):
                    self._check(prefix, entry.key, obj)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- bookkeeping -----------------------------------------------------------------------------

    def _index(self, prefix: str, key: str, obj: dict[str, Any] | None, uid: str = "") -> None:
        if obj is None:
            self._live.pop(uid, None)
        else:
            self._live[(obj.get("metadata") or {}).get("uid", "")] = key
        for owner in self._owners_of.pop(key, []):
            self.dependents[owner].discard((prefix, key))
            if not self.dependents[owner]:
                del self.dependents[owner]
        if obj is None:
            return
        owners = [ref.get("uid", "") for ref in (obj.get("metadata") or {}).get("ownerReferences") or []]
        if owners:
            self._owners_of[key] = owners
            for owner in owners:
                self.dependents[owner].add((prefix, key))

    def _on_event(self, event: CacheEvent) -> None:
        prefix = self.server.cache.prefix_of(event.entry.key)
        key = event.entry.key
        if event.type == "DELETED":
            uid = (event.object().get("metadata") or {}).get("uid", "")
            self._index(prefix, key, None, uid)
            if uid in self.dependents:
                self._spawn(f"orphaned:{uid}", self._delete_dependents(uid, "Background"))
            return
        obj = event.object()
        self._index(prefix, key, obj)
        self._check(prefix, key, obj)

    def _check(self, prefix: str, key: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if not meta.get("deletionTimestamp"):
            return
        finalizers = meta.get("finalizers") or []
        if "orphan" in finalizers:
            self._spawn(f"orphan:{key}", self._orphan(prefix, key, meta.get("uid", "")))
        if "foregroundDeletion" in finalizers:
            self._spawn(f"foreground:{key}", self._foreground(prefix, key, meta.get("uid", "")))
        if prefix == NAMESPACE_PREFIX and "kubernetes" in ((obj.get("spec") or {}).get("finalizers") or []):
            self._spawn(f"namespace:{meta.get('name')}", self._empty_namespace(meta.get("name", "")))

    def _spawn(self, name: str, coro: Any) -> None:
        if name in self._busy:
            coro.close()
            return
        self._busy.add(name)

        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)
            finally:
                self._busy.discard(name)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _served_for(self, prefix: str) -> Served | None:
        for served in self.server.catalog:
            if served.key_prefix == prefix:
                return served
        return None

    async def _delete(self, prefix: str, key: str, policy: str) -> None:
        served = self._served_for(prefix)
        entry = self.server.cache.cache_for(prefix).entries.get(key)
        if served is None or entry is None:
            return
        with contextlib.suppress(ApiError):
            await self.server.objects.delete(served, entry.namespace, entry.name,
                                             DeleteOptions(propagation_policy=policy), WriteOptions(user=GC_USER))

    async def _prune_metadata_list(self, prefix: str, key: str, field: str, keep: Callable[[Any], bool]) -> None:
        """Drop the items of ``metadata.<field>`` that ``keep`` rejects (the field goes when empty)."""
        served = self._served_for(prefix)
        entry = self.server.cache.cache_for(prefix).entries.get(key)
        if served is None or entry is None:
            return

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            meta = current["metadata"]
            meta[field] = [item for item in meta.get(field) or [] if keep(item)]
            if not meta[field]:
                del meta[field]
            return current

        with contextlib.suppress(ApiError):
            await self.server.objects._update_loop(served, entry.namespace, entry.name, produce,
                                                   WriteOptions(user=GC_USER), field, "")

    async def _remove_finalizer(self, prefix: str, key: str, finalizer: str) -> None:
        await self._prune_metadata_list(prefix, key, "finalizers", lambda item: item != finalizer)

    # -- cascades --------------------------------------------------------------------------------

    async def _delete_dependents(self, uid: str, policy: str) -> None:
        for prefix, key in sorted(self.dependents.get(uid, set())):
            entry = self.server.cache.cache_for(prefix).entries.get(key)
            if entry is None:
                continue
            refs = (entry.obj().get("metadata") or {}).get("ownerReferences") or []
            others = [r for r in refs if r.get("uid") != uid]
            if others and any(self._owner_alive(r.get("uid", "")) for r in others):
                continue  # another owner still holds it
            await self._delete(prefix, key, policy)

    def _owner_alive(self, uid: str) -> bool:
        return bool(uid) and uid in self._live

    async def _foreground(self, prefix: str, key: str, uid: str) -> None:
        await self._delete_dependents(uid, "Foreground")
        while True:
            blocking = []
            for dep_prefix, dep_key in self.dependents.get(uid, set()):
                entry = self.server.cache.cache_for(dep_prefix).entries.get(dep_key)
                if entry is None:
                    continue
                refs = (entry.obj().get("metadata") or {}).get("ownerReferences") or []
                if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs):
                    blocking.append(dep_key)
            if not blocking:
                break
            await asyncio.sleep(POLL_SECONDS)
        await self._remove_finalizer(prefix, key, "foregroundDeletion")

    async def _orphan(self, prefix: str, key: str, uid: str) -> None:
        for dep_prefix, dep_key in sorted(self.dependents.get(uid, set())):
            await self._prune_metadata_list(dep_prefix, dep_key, "ownerReferences",
                                            lambda ref: ref.get("uid") != uid)
        await self._remove_finalizer(prefix, key, "orphan")

    async def _empty_namespace(self, namespace: str) -> None:
        namespaces = self.server.catalog.get("", "v1", "namespaces")
        if namespaces is None or not namespace:
            return
        while True:
            remaining = 0
            for served in list(self.server.catalog):
                if not served.resource.namespaced or "delete" not in served.resource.verbs:
                    continue
                cache = self.server.cache.cache_for(served.key_prefix)
                for entry in [e for e in cache.entries.values() if e.namespace == namespace]:
                    remaining += 1
                    obj = entry.obj()
                    if not (obj.get("metadata") or {}).get("deletionTimestamp"):
                        await self._delete(served.key_prefix, entry.key, "Background")
            if not remaining:
                break
            await asyncio.sleep(POLL_SECONDS)
        ns_entry = self.server.cache.cache_for(NAMESPACE_PREFIX).entries.get(f"{NAMESPACE_PREFIX}{namespace}")
        if ns_entry is None:
            return
        finalizers = [f for f in (ns_entry.obj().get("spec") or {}).get("finalizers") or [] if f != "kubernetes"]
        with contextlib.suppress(ApiError):
            await self.server.subresources.finalize_namespace(namespaces, namespace, finalizers, GC_USER)
