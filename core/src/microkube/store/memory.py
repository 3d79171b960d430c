"""An in-memory store/v1 backend: the same semantics as SQLite (history, compaction), nothing durable."""

from __future__ import annotations

import asyncio
import bisect
import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass

from microkube_interfaces import errors
from microkube_interfaces.store import EventType, KeyValue, ListResult, WatchEvent


@dataclass(slots=True)
class _Row:
    revision: int
    key: str
    value: bytes
    create_revision: int
    deleted: bool


class MemoryStore:
    """Keeps every revision in a log until compacted; an index maps each key to its rows."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._log: builtins.list[_Row] = []  # ordered by revision
        self._log_revisions: builtins.list[int] = []
        self._rows: dict[str, builtins.list[_Row]] = {}
        self._revision = 0
        self._compacted = 0
        self._changed = asyncio.Condition()
        self._closed = False

    # -- reads -----------------------------------------------------------------------------------

    def _check_revision(self, revision: int) -> int:
        if revision and revision <= self._compacted:
            raise errors.Expired(f"required revision {revision} has been compacted (compacted at {self._compacted})")
        if revision > self._revision:
            raise errors.Invalid.field("revision", f"revision {revision} is in the future (current {self._revision})")
        return revision or self._revision

    @staticmethod
    def _at(rows: builtins.list[_Row], revision: int) -> _Row | None:
        index = bisect.bisect_right([r.revision for r in rows], revision) - 1
        return rows[index] if index >= 0 else None

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        revision = self._check_revision(revision)
        row = self._at(self._rows.get(key, []), revision)
        if row is None or row.deleted:
            return None
        return KeyValue(key, row.value, row.create_revision, row.revision)

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str = "") -> ListResult:
        revision = self._check_revision(revision)
        keys = sorted(k for k in self._rows if k.startswith(prefix) and k > start_after)
        items: builtins.list[KeyValue] = []
        for key in keys:
            row = self._at(self._rows[key], revision)
            if row is None or row.deleted:
                continue
            if limit and len(items) == limit:
                return ListResult(items, revision, True, None)
            items.append(KeyValue(key, row.value, row.create_revision, row.revision))
        return ListResult(items, revision, False, 0)

    # -- writes ----------------------------------------------------------------------------------

    def _latest(self, key: str) -> _Row | None:
        rows = self._rows.get(key)
        if not rows or rows[-1].deleted:
            return None
        return rows[-1]

    async def _append(self, key: str, value: bytes, create_revision: int, deleted: bool) -> int:
        if self._closed:
            raise errors.Permanent("the store is closed")
        self._revision += 1
        row = _Row(self._revision, key, value, create_revision or self._revision, deleted)
        self._log.append(row)
        self._log_revisions.append(row.revision)
        self._rows.setdefault(key, []).append(row)
        async with self._changed:
            self._changed.notify_all()
        return self._revision

    async def create(self, key: str, value: bytes) -> int:
        if self._latest(key) is not None:
            raise errors.AlreadyExists(f"key {key} already exists")
        return await self._append(key, value, 0, False)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> int:
        current = self._latest(key)
        if current is None:
            raise errors.NotFound(f"key {key} not found")
        if expected_revision and current.revision != expected_revision:
            raise errors.Conflict(f"key {key} is at revision {current.revision}, not {expected_revision}")
        return await self._append(key, value, current.create_revision, False)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        current = self._latest(key)
        if current is None:
            raise errors.NotFound(f"key {key} not found")
        if expected_revision and current.revision != expected_revision:
            raise errors.Conflict(f"key {key} is at revision {current.revision}, not {expected_revision}")
        revision = await self._append(key, current.value, current.create_revision, True)
        return KeyValue(key, current.value, current.create_revision, revision)

    # -- watch -----------------------------------------------------------------------------------

    def _events_after(self, revision: int, prefix: str) -> tuple[builtins.list[WatchEvent], int]:
        """Events after ``revision``, and the revision to continue after."""
        events = []
        position = bisect.bisect_right(self._log_revisions, revision)
        for row in self._log[position:]:
            if not row.key.startswith(prefix):
                continue
            kv = KeyValue(row.key, row.value, row.create_revision, row.revision)
            previous = self._previous(row)
            if row.deleted:
                events.append(WatchEvent(EventType.DELETE, kv, previous))
            else:
                events.append(WatchEvent(EventType.PUT, kv, previous))
        return events, self._revision

    def _previous(self, row: _Row) -> KeyValue | None:
        rows = self._rows.get(row.key, [])
        index = rows.index(row) if row in rows else -1
        if index <= 0 or rows[index - 1].deleted:
            return None
        prev = rows[index - 1]
        return KeyValue(prev.key, prev.value, prev.create_revision, prev.revision)

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[builtins.list[WatchEvent]]:
        if start_revision and start_revision <= self._compacted:
            raise errors.Expired(f"required revision {start_revision} has been compacted "
                                 f"(compacted at {self._compacted})")
        after = max(0, start_revision - 1)
        while not self._closed:
            events, after = self._events_after(after, prefix)
            if events:
                yield events
                continue
            async with self._changed:
                if after == self._revision and not self._closed:
                    await self._changed.wait()

    # -- maintenance -----------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return self._revision

    async def compacted_revision(self) -> int:
        return self._compacted

    async def compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        revision = min(revision, self._revision)
        keep: builtins.list[_Row] = []
        for key, rows in list(self._rows.items()):
            latest_old = self._at(rows, revision)
            kept = [r for r in rows if r.revision > revision or (r is latest_old and not r.deleted)]
            if kept:
                self._rows[key] = kept
            else:
                del self._rows[key]
        for row in self._log:
            if row.key in self._rows and row in self._rows[row.key]:
                keep.append(row)
        self._log = keep
        self._log_revisions = [r.revision for r in keep]
        self._compacted = revision

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
