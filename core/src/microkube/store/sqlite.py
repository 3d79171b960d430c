"""The embedded store/v1 backend: a revision log in one SQLite file.

Every write appends a row whose ``id`` (INTEGER PRIMARY KEY AUTOINCREMENT) is the global revision, so
revisions are monotonic and never reused, even after compaction. A delete appends a tombstone.

Durability and speed: WAL with ``synchronous=FULL`` fsyncs every commit, so an acknowledged write
survives kill -9 and power loss. Writes go through one writer thread that applies every write queued
while the previous transaction committed in a single transaction (group commit): one fsync
acknowledges a whole batch, each write still checking its own precondition and getting its own
revision. Reads run on the event loop's thread with their own connection (WAL readers never block the
writer). Watchers are woken in-process after each commit; history replay and the live tail meet
without gap or duplicate. A background task compacts old revisions and keeps the file bounded.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from microkube_interfaces import errors
from microkube_interfaces.store import EventType, KeyValue, ListResult, WatchEvent

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
#: Most writes in one transaction; bounds the latency a large batch adds to its first write.
MAX_BATCH = 256
LATEST_ROW = "SELECT id, create_revision, deleted, value FROM kv WHERE name = ? ORDER BY id DESC LIMIT 1"


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


@dataclass
class _Write:
    op: str  # create | update | delete
    key: str
    value: bytes
    expected_revision: int
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    event: WatchEvent | None = None


@dataclass(eq=False)
class _Watch:
    prefix: str
    queue: asyncio.Queue[builtins.list[WatchEvent] | None] = field(default_factory=asyncio.Queue)


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        path, options = self.parse_url(url)
        self.path = path
        self.history = int(options.get("history", 10_000))
        self.compact_interval = float(options.get("compact_interval", 60))
        self._check_file(path)
        try:
            self._writer_db = self._connect(path)
            self._writer_db.executescript(SCHEMA)
            self._reader_db = self._connect(path)
        except sqlite3.DatabaseError as exc:
            raise errors.Permanent(f"cannot open store {path}: {exc}; restore it from a backup or point --store "
                                   "at another file") from None
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer_loop, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._watches: set[_Watch] = set()
        self._last_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False
        self._revision = self._read_revision()

    # -- opening ---------------------------------------------------------------------------------

    @staticmethod
    def parse_url(url: str) -> tuple[Path, dict[str, str]]:
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise errors.Invalid.field("store", f"{url!r} is not a sqlite:// URL")
        raw = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not raw:
            raise errors.Invalid.field("store", f"{url!r} names no file; use sqlite:///absolute/path.db")
        if raw.startswith("/"):
            raw = "/" + raw.lstrip("/")  # sqlite:////abs and sqlite:///abs name the same file
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return Path(raw), options

    @staticmethod
    def _check_file(path: Path) -> None:
        """Refuse, without writing a byte, a file that is not an SQLite database or a dir we cannot write."""
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise errors.Permanent(f"cannot create the store directory {directory}: {exc.strerror}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise errors.Permanent(f"the store directory {directory} is not writable; fix its permissions or "
                                   "choose another --store path")
        if path.exists() and path.stat().st_size:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_MAGIC))
            if header != SQLITE_MAGIC:
                raise errors.Permanent(f"store file {path} is not an SQLite database (corrupt or a different "
                                       "file); it was left untouched: restore it from a backup or point --store "
                                       "at another file")
            try:
                probe = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
                try:
                    probe.execute("PRAGMA quick_check(1)").fetchone()
                    probe.execute("SELECT name FROM sqlite_master").fetchall()
                finally:
                    probe.close()
            except sqlite3.DatabaseError as exc:
                raise errors.Permanent(f"store file {path} is damaged ({exc}); it was left untouched: restore it "
                                       "from a backup or point --store at another file") from None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2 and not db.execute(
            "SELECT 1 FROM sqlite_master LIMIT 1"
        ).fetchone():
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        return db

    def _read_revision(self) -> int:
        row = self._reader_db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
        return int(row[0]) if row else 0

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise errors.Permanent(f"store {self.path} is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self.compact_interval > 0:
                self._compactor = self._loop.create_task(self._compact_periodically(), name="sqlite-compactor")
        return self._loop

    # -- reads -----------------------------------------------------------------------------------

    def _compacted(self) -> int:
        row = self._reader_db.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()
        return int(row[0]) if row else 0

    def _check_revision(self, revision: int) -> int:
        if not revision:
            return self._revision
        if revision <= self._compacted():
            raise errors.Expired(f"required revision {revision} has been compacted")
        if revision > self._revision:
            raise errors.Invalid.field("revision", f"revision {revision} is in the future (current "
                                       f"{self._revision})")
        return revision

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        self._start()
        at = self._check_revision(revision)
        row = self._reader_db.execute(
            "SELECT id, create_revision, deleted, value FROM kv WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1",
            (key, at),
        ).fetchone()
        if row is None or row[2]:
            return None
        return KeyValue(key, row[3], row[1], row[0])

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str = "") -> ListResult:
        self._start()
        at = self._check_revision(revision)
        low = max(prefix, start_after)
        rows = self._reader_db.execute(
            "SELECT kv.name, kv.id, kv.create_revision, kv.value FROM kv JOIN ("
            "  SELECT MAX(id) AS id FROM kv WHERE name >= ? AND name < ? AND name > ? AND id <= ? GROUP BY name"
            ") latest ON kv.id = latest.id WHERE kv.deleted = 0 ORDER BY kv.name"
            + (" LIMIT ?" if limit else ""),
            (low, _prefix_end(prefix), start_after, at, *((limit + 1,) if limit else ())),
        ).fetchall()
        more = bool(limit) and len(rows) > limit
        if more:
            rows = rows[:limit]
        items = [KeyValue(name, value, create, rev) for name, rev, create, value in rows]
        return ListResult(items, at, more, None)

    async def current_revision(self) -> int:
        self._start()
        return self._revision

    async def compacted_revision(self) -> int:
        self._start()
        return self._compacted()

    # -- writes ----------------------------------------------------------------------------------

    async def _submit(self, op: str, key: str, value: bytes, expected_revision: int) -> Any:
        loop = self._start()
        future: asyncio.Future[Any] = loop.create_future()
        self._writes.put(_Write(op, key, value, expected_revision, future))
        return await future

    async def create(self, key: str, value: bytes) -> int:
        result: int = await self._submit("create", key, value, 0)
        return result

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> int:
        result: int = await self._submit("update", key, value, expected_revision)
        return result

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        result: KeyValue = await self._submit("delete", key, b"", expected_revision)
        return result

    def _writer_loop(self) -> None:
        db = self._writer_db
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                db.execute("BEGIN IMMEDIATE")
                self._last_id = self._sequence(db)
                for write in batch:
                    try:
                        self._apply(db, write)
                    except errors.MicrokubeError as exc:  # a failed precondition fails only this write
                        write.error = exc
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                failure = errors.Retryable(f"store write failed: {exc}", after=1)
                for write in batch:
                    write.error = failure
                    write.event = None
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver, batch)
            if stop:
                return

    @staticmethod
    def _sequence(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
        return int(row[0]) if row else 0

    def _apply(self, db: sqlite3.Connection, write: _Write) -> None:
        row = db.execute(LATEST_ROW, (write.key,)).fetchone()
        live = row is not None and not row[2]
        if write.op == "create":
            if live:
                raise errors.AlreadyExists(f"key {write.key} already exists")
            create_revision = 0
        else:
            if not live:
                raise errors.NotFound(f"key {write.key} not found")
            assert row is not None
            if write.expected_revision and row[0] != write.expected_revision:
                raise errors.Conflict(f"key {write.key} is at revision {row[0]}, not {write.expected_revision}")
            create_revision = row[1]
        deleted = write.op == "delete"
        value = row[3] if deleted and row is not None else write.value
        # The revision is chosen here (not by AUTOINCREMENT) so a create knows its create_revision
        # without a second statement; AUTOINCREMENT's sequence still follows the largest id.
        revision = self._last_id + 1
        db.execute(
            "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (revision, write.key, int(write.op == "create"), int(deleted), create_revision or revision,
             row[0] if row else 0, value),
        )
        self._last_id = revision
        create_revision = create_revision or revision
        kv = KeyValue(write.key, value, create_revision, revision)
        prev = KeyValue(write.key, row[3], row[1], row[0]) if live and row is not None else None
        write.event = WatchEvent(EventType.DELETE if deleted else EventType.PUT, kv, prev)
        write.result = kv if deleted else revision

    def _deliver(self, batch: builtins.list[_Write]) -> None:
        """On the event loop: acknowledge each write and hand committed events to watchers."""
        events = [w.event for w in batch if w.error is None and w.event is not None]
        if events:
            self._revision = max(self._revision, events[-1].revision)
        for write in batch:
            if write.future.done():
                continue
            if write.error is not None:
                write.future.set_exception(write.error)
            else:
                write.future.set_result(write.result)
        if events:
            for watch in list(self._watches):
                mine = [e for e in events if e.kv.key.startswith(watch.prefix)]
                if mine:
                    watch.queue.put_nowait(mine)

    # -- watch -----------------------------------------------------------------------------------

    def _history(self, prefix: str, after: int, upto: int) -> builtins.list[WatchEvent]:
        rows = self._reader_db.execute(
            "SELECT id, name, deleted, create_revision, value FROM kv WHERE id > ? AND id <= ? AND name >= ? AND "
            "name < ? ORDER BY id",
            (after, upto, prefix, _prefix_end(prefix)),
        ).fetchall()
        return [WatchEvent(EventType.DELETE if deleted else EventType.PUT, KeyValue(name, value, create, rev))
                for rev, name, deleted, create, value in rows]

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[builtins.list[WatchEvent]]:
        self._start()
        if start_revision and start_revision <= self._compacted():
            raise errors.Expired(f"required revision {start_revision} has been compacted")
        watch = _Watch(prefix)
        self._watches.add(watch)
        try:
            # Registered first, so nothing committed from here on is missed; history covers the rest.
            upto = self._revision
            delivered = upto
            history = self._history(prefix, max(0, start_revision - 1), upto)
            for start in range(0, len(history), 1000):
                yield history[start:start + 1000]
            while not self._closed:
                batch = await watch.queue.get()
                if batch is None:
                    return
                fresh = [e for e in batch if e.revision > delivered]
                if fresh:
                    delivered = fresh[-1].revision
                    yield fresh
        finally:
            self._watches.discard(watch)

    # -- compaction ------------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        loop = self._start()
        revision = min(revision, self._revision)
        if revision <= self._compacted():
            return
        await loop.run_in_executor(None, self._compact_blocking, revision)

    def _compact_blocking(self, revision: int) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "DELETE FROM kv WHERE id <= :rev AND (deleted = 1 OR id < "
                "(SELECT MAX(k2.id) FROM kv AS k2 WHERE k2.name = kv.name AND k2.id <= :rev))",
                {"rev": revision},
            )
            db.execute("INSERT INTO meta (key, value) VALUES ('compacted', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (revision,))
            db.execute("COMMIT")
            db.execute("PRAGMA incremental_vacuum")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    async def _compact_periodically(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.compact_interval)
            target = self._revision - self.history
            if target > 0:
                started = time.monotonic()
                try:
                    await self.compact(target)
                except Exception:
                    log.exception("compaction of %s failed", self.path)
                else:
                    log.debug("compacted %s to %d in %.3fs", self.path, target, time.monotonic() - started)

    # -- closing ---------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        self._writes.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        for watch in list(self._watches):
            watch.queue.put_nowait(None)
        self._writer_db.close()
        self._reader_db.close()
