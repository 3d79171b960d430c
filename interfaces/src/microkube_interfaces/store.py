"""store/v1: the revisioned key-value store every API object lives in.

The shape is etcd v3's. Every write gets the next global *revision* (a positive, strictly increasing
integer, never reused); the API server shows it to clients as ``resourceVersion``. Keys are strings
(``/registry/pods/default/web-0``) and values opaque bytes.

Errors: ``NotFound`` (update or delete of an absent key), ``AlreadyExists`` (create of a present key),
``Conflict`` (``expected_revision`` did not match), ``Expired`` (a revision at or below the compaction
point was asked for: the caller relists). Backends are selected by URL scheme through
``Registrar.stores``: ``memory://``, ``sqlite:///path/to/file.db``, ``etcd://host:port``.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

INTERFACE = "store"
VERSION = "v1"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    #: Revision of the write that created this incarnation of the key.
    create_revision: int
    #: Revision of the last write to the key (for a deletion event: the deletion's revision).
    mod_revision: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    #: For PUT the new value; for DELETE the last value before deletion, with ``mod_revision`` set
    #: to the deletion's revision.
    kv: KeyValue
    #: The value before this event, when the backend knows it (``None`` for a create).
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    #: The store revision the list was read at (the list's resourceVersion).
    revision: int
    #: True when ``limit`` cut the list short; continue with ``start_after=items[-1].key`` at ``revision``.
    more: bool = False
    #: How many matching keys remain after this page, when cheaply known (else ``None``).
    remaining: int | None = None


@runtime_checkable
class Store(Protocol):
    """A revisioned, watchable key-value store. All methods are safe to call concurrently."""

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """The value of ``key`` at ``revision`` (0 = now), or ``None``. Raises Expired below compaction."""

    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        """Live keys under ``prefix`` in key order at ``revision`` (0 = now).

        ``limit`` > 0 caps the page; ``start_after`` resumes after that key. A revision at or below
        the compaction point raises Expired.
        """

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if absent (AlreadyExists otherwise). Returns the new revision."""

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> int:
        """Overwrite an existing ``key``. With ``expected_revision`` > 0 the key's mod_revision must
        equal it (Conflict otherwise). NotFound if absent. Returns the new revision."""

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete ``key`` (NotFound if absent; Conflict on a revision mismatch).

        Returns the deleted value with ``mod_revision`` set to the deletion's revision.
        """

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[builtins.list[WatchEvent]]:
        """Events under ``prefix`` with revision >= ``start_revision``, in revision order, in batches.

        History from ``start_revision`` is replayed first, then live events follow without gaps.
        Raises Expired (when iterated) if ``start_revision`` is at or below the compaction point.
        The iterator ends only when the store closes or the consumer stops iterating.
        """

    async def current_revision(self) -> int:
        """The revision of the last write (0 for an empty store)."""

    async def compacted_revision(self) -> int:
        """Revisions at or below this are no longer readable (0 = nothing compacted)."""

    async def compact(self, revision: int) -> None:
        """Drop history at or below ``revision``; the latest value of every live key stays."""

    async def close(self) -> None:
        """Release resources; idempotent. Open watches end."""


@dataclass(frozen=True)
class StoreCapabilities:
    """What a backend offers beyond the required contract (gates conformance tests)."""

    durable: bool = True
    #: Several processes may open the same store at once (etcd yes, SQLite file: one writer process).
    multi_process: bool = False


class StoreFactory(Protocol):
    """Registered under a URL scheme; builds a Store from the full URL."""

    def __call__(self, url: str) -> Store: ...
