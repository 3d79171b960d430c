"""The built-in store plugin: the memory and SQLite backends, registered like any pack's."""

from __future__ import annotations

from microkube.store.memory import MemoryStore
from microkube.store.sqlite import SqliteStore
from microkube_interfaces.hookspecs import PluginInfo
from microkube_interfaces.markers import hookimpl
from microkube_interfaces.registry import Registrar


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="store", interfaces={"store": ("v1",)}, description="memory:// and sqlite:// stores")


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.stores.add("memory", MemoryStore, plugin="store")
    registrar.stores.add("sqlite", SqliteStore, plugin="store")
