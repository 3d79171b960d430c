"""controllers/v1: reconcile loops, for the built-in controllers and plugin packs alike.

A controller is registered through ``microkube_controllers`` as a ControllerRegistration: the
resources it watches (its own kind, whose keys it reconciles) and owns (objects whose controller
ownerReference points at its kind: their events queue the owner's key), and a factory that builds the
Reconciler from a ControllerContext. The controller manager shares one informer per resource between
all controllers, runs each controller's workers, elects a leader, and lets operators disable
controllers by name.

``reconcile(key)`` must be level-triggered and idempotent: it reads the current state from the
context's caches and makes the world match, whatever happened before. ``key`` is ``namespace/name``
(or ``name`` for cluster-scoped kinds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

INTERFACE = "controllers"
VERSION = "v1"


@dataclass(frozen=True)
class ResourceRef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True


@dataclass(frozen=True)
class Outcome:
    """What a reconcile asks for next: nothing, another look after a delay, or a retry with backoff."""

    requeue_after: float | None = None
    error: BaseException | None = None

    @classmethod
    def done(cls) -> Outcome:
        return cls()

    @classmethod
    def after(cls, seconds: float) -> Outcome:
        return cls(requeue_after=seconds)

    @classmethod
    def retry(cls, error: BaseException) -> Outcome:
        return cls(error=error)


class Reconciler(Protocol):
    name: str

    async def reconcile(self, key: str) -> Outcome:
        """Make the world match the desired state of ``key``; idempotent and level-triggered."""


class Cache(Protocol):
    """A read-only view of one resource's informer."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def items(self, namespace: str = "") -> list[dict[str, Any]]:
        """Every cached object (of one namespace, if given)."""

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]: ...

    def add_handler(self, handler: Callable[[str, dict[str, Any], dict[str, Any] | None], None]) -> None:
        """Call ``handler(event, obj, old)`` for every change (ADDED, MODIFIED, DELETED, SYNC)."""


class ControllerContext(Protocol):
    #: The async API client (microkube.client.Client): get, list, create, update, patch, delete.
    client: Any

    def cache(self, resource: ResourceRef) -> Cache:
        """The shared cache of ``resource``; every cache has the index ``controller-uid`` (the uid of
        an object's controller ownerReference)."""

    def enqueue(self, key: str) -> None:
        """Queue a key of this controller (from a handler on another cache, e.g. pods → Services)."""

    async def record_event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about ``obj`` (what `kubectl describe` shows); best effort, never raises."""


@dataclass(frozen=True)
class ControllerRegistration:
    name: str
    watches: ResourceRef
    build: Callable[[ControllerContext], Reconciler]
    owns: tuple[ResourceRef, ...] = ()
    workers: int = 2
    extra: dict[str, Any] = field(default_factory=dict)
