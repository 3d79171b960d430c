"""The registrar: choosing one implementation by name.

Broadcast hooks call every plugin; choosing *the* store backend or *the* runtime is a lookup by a
configured name. During ``microkube_register`` each plugin adds named factories to a Registrar; a
duplicate name is refused and an unknown name fails listing the known ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from microkube_interfaces.errors import AlreadyExists, NotFound

T = TypeVar("T")


@dataclass(frozen=True)
class Registration(Generic[T]):
    name: str
    factory: T
    plugin: str
    versions: tuple[str, ...]


class Kind(Generic[T]):
    """All registrations of one kind (store backends, runtimes, …), keyed by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Registration[T]] = {}

    def add(self, name: str, factory: T, *, plugin: str = "", versions: tuple[str, ...] = ("v1",)) -> None:
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        existing = self._items.get(name)
        if existing is not None:
            raise AlreadyExists(
                f"{self.kind} {name!r} is already registered by plugin {existing.plugin!r}; "
                f"plugin {plugin!r} must choose another name"
            )
        self._items[name] = Registration(name, factory, plugin, versions)

    def get(self, name: str) -> Registration[T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise NotFound(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[Registration[T]]:
        return iter(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items


class Registrar:
    """Passed to ``microkube_register``: one Kind per select-by-name interface.

    A plugin calls e.g. ``registrar.stores.add("sqlite", SqliteStore.from_url, plugin="sqlite")``.
    Interfaces added by later versions appear as further attributes; a plugin uses only those it knows.
    """

    def __init__(self) -> None:
        from microkube_interfaces.store import StoreFactory  # local: store imports nothing of ours either

        self.stores: Kind[StoreFactory] = Kind("store backend")
        #: container runtimes (cri/v1): name → factory(options: dict) -> a runtime and image service
        self.runtimes: Kind[Any] = Kind("container runtime")
        #: pod networks (cni/1.1): name → factory(options: dict) -> a CNI plugin
        self.networks: Kind[Any] = Kind("pod network")
