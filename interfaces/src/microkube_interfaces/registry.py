"""The registrar: choosing one implementation by name.

Broadcast hooks call every plugin; choosing *the* store backend or *the* runtime is a lookup by a
configured name. During ``microkube_register`` each plugin adds named factories to a Registrar; a
duplicate name is refused and an unknown name fails listing the known ones.

A wrong registration is refused when it is made, naming the plugin and the fix: an empty name, a
factory that is not callable, interface versions this microkube does not speak. What a factory
returns is checked against the interface (``microkube_interfaces.compliance``) each time it is
called, before the caller uses it: ``registration.factory`` is the plugin's factory wrapped in that
check (the plugin's own is ``registration.factory.__wrapped__``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from microkube_interfaces import compliance
from microkube_interfaces.errors import AlreadyExists, NotFound, PluginError
from microkube_interfaces.versioning import INTERFACE_VERSIONS

T = TypeVar("T")


@dataclass(frozen=True)
class Registration(Generic[T]):
    name: str
    #: The plugin's factory, wrapped so that what it returns is checked against the interface.
    factory: T
    plugin: str
    versions: tuple[str, ...]


class Kind(Generic[T]):
    """All registrations of one kind (store backends, runtimes, …), keyed by name.

    ``interface`` names the interface the factories build (a key of ``versioning.INTERFACE_VERSIONS``);
    registrations are checked against it. ``attribute`` is the Registrar attribute, for messages.
    """

    def __init__(self, kind: str, interface: str = "", attribute: str = "") -> None:
        self.kind = kind
        self.interface = interface
        self.attribute = attribute or "<kind>"
        #: The plugin whose ``microkube_register`` is running (set by ``Registrar.registering``).
        self.current_plugin = ""
        self._items: dict[str, Registration[T]] = {}

    def add(self, name: str, factory: T, *, plugin: str = "", versions: tuple[str, ...] | None = None) -> None:
        """Register ``factory`` under ``name``. ``versions`` are the interface versions it speaks (default:
        the newest this microkube knows)."""
        plugin = plugin or self.current_plugin or "<unnamed>"
        attribute = self.attribute
        if not isinstance(name, str) or not name:
            raise PluginError(plugin, f"registers a {self.kind} with the name {name!r}",
                              f"pass a non-empty string: registrar.{attribute}.add('my-name', factory)")
        if not callable(factory):
            raise PluginError(plugin, f"registers {self.kind} {name!r} with a factory that is not callable "
                              f"({type(factory).__qualname__})",
                              f"pass the class or function that builds it (options -> object), not an instance: "
                              f"registrar.{attribute}.add({name!r}, MyThing.from_options)")
        known = INTERFACE_VERSIONS.get(self.interface, ())
        if versions is None:
            versions = known[-1:] or ("v1",)
        given: object = versions  # vendors' code is not type-checked: a bare "1.1" happens
        if not isinstance(given, tuple | list) or not given or not all(isinstance(v, str) for v in given):
            raise PluginError(plugin, f"registers {self.kind} {name!r} with versions={versions!r}",
                              f"pass a tuple of version strings, e.g. versions={known[-1:] or ('v1',)!r}")
        versions = tuple(versions)
        if known and not set(versions) & set(known):
            raise PluginError(plugin, f"registers {self.kind} {name!r} for {self.interface} versions {list(versions)} "
                              f"but this microkube speaks {list(known)}",
                              "build the factory for a version this microkube speaks and say so in versions=, "
                              "or upgrade microkube")
        existing = self._items.get(name)
        if existing is not None:
            raise AlreadyExists(
                f"{self.kind} {name!r} is already registered by plugin {existing.plugin!r}; "
                f"plugin {plugin!r} must choose another name"
            )
        self._items[name] = Registration(name, self._checked(name, factory, plugin), plugin, versions)

    def _checked(self, name: str, factory: T, plugin: str) -> T:
        if self.interface not in compliance.PROTOCOLS:
            return factory
        build = cast(Callable[..., Any], factory)
        what = f"{self.kind} {name!r}"
        interface = self.interface

        def create(*args: Any, **kwargs: Any) -> Any:
            made = build(*args, **kwargs)
            compliance.check(made, interface, plugin=plugin, what=what)
            return made

        # updated=() because a class's __dict__ (its methods) must not be copied onto the wrapper.
        return cast(T, functools.update_wrapper(create, build, updated=()))

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
        from microkube_interfaces.store import StoreFactory

        self.stores: Kind[StoreFactory] = Kind("store backend", "store", "stores")
        #: container runtimes (cri/v1): name → factory(options: dict) -> a runtime and image service
        self.runtimes: Kind[Any] = Kind("container runtime", "cri", "runtimes")
        #: pod networks (cni/1.1): name → factory(options: dict) -> a CNI plugin
        self.networks: Kind[Any] = Kind("pod network", "cni", "networks")

    def kinds(self) -> list[Kind[Any]]:
        """Every Kind, one per select-by-name interface."""
        return [self.stores, self.runtimes, self.networks]

    @contextlib.contextmanager
    def registering(self, plugin: str) -> Iterator[None]:
        """Registrations made inside, without ``plugin=``, are attributed to ``plugin``."""
        for kind in self.kinds():
            kind.current_plugin = plugin
        try:
            yield
        finally:
            for kind in self.kinds():
                kind.current_plugin = ""
