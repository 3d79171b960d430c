"""The microkernel: built-ins through the same hooks, registrar rules, refusing wrong plugins."""

from __future__ import annotations

import types

import pytest

from microkube.plugins import DEFAULT_PLUGINS, Plugins
from microkube.store import open_store
from microkube.store.memory import MemoryStore
from microkube_interfaces import PluginInfo, errors, hookimpl
from microkube_interfaces.registry import Registrar


def test_builtins_register_through_hooks() -> None:
    plugins = Plugins(autoload=False)
    names = {p.name for p in plugins.loaded()}
    assert {"store", "builtin-resources", "auth", "custom-resources"} <= names
    assert all(p.builtin and p.distribution == "microkube" for p in plugins.loaded())
    assert plugins.registrar.stores.names() == ["memory", "sqlite"]
    kinds = {(r.resource.group, r.resource.kind) for r in plugins.resource_types(_settings())}
    assert ("apps", "Deployment") in kinds and ("", "Pod") in kinds


def _settings():  # type: ignore[no-untyped-def]
    from microkube_interfaces.hookspecs import ServerSettings

    return ServerSettings(data_dir="/nonexistent")


def test_a_plugin_adds_a_store_backend() -> None:
    class Backend(MemoryStore):
        def __init__(self, url: str) -> None:
            super().__init__()
            self.url = url

    pack = types.SimpleNamespace(
        microkube_plugin_info=hookimpl(lambda: PluginInfo(name="fancy", interfaces={"store": ("v1",)})),
        microkube_register=hookimpl(lambda registrar: registrar.stores.add("fancy", Backend, plugin="fancy")),
    )
    plugins = Plugins(autoload=False, extra=[pack])
    store = open_store(plugins.registrar, "fancy://somewhere")
    assert isinstance(store, Backend) and store.url == "fancy://somewhere"
    assert "fancy" in {p.name for p in plugins.loaded()}


def test_duplicate_names_are_refused() -> None:
    pack = types.SimpleNamespace(
        microkube_plugin_info=hookimpl(lambda: PluginInfo(name="copycat", interfaces={"store": ("v1",)})),
        microkube_register=hookimpl(lambda registrar: registrar.stores.add("sqlite", MemoryStore, plugin="copycat")),
    )
    plugins = Plugins(autoload=False, extra=[pack])
    with pytest.raises(errors.AlreadyExists) as error:
        plugins.registrar  # noqa: B018 - building the registrar runs the hooks
    assert str(error.value) == ("store backend 'sqlite' is already registered by plugin 'store'; "
                                "plugin 'copycat' must choose another name")


def test_unknown_names_list_the_known_ones() -> None:
    registrar = Registrar()
    registrar.stores.add("memory", object, plugin="x")
    with pytest.raises(errors.NotFound) as error:
        open_store(registrar, "redis://localhost")
    assert "memory" in str(error.value)


def test_unknown_hook_is_refused_at_load() -> None:
    pack = types.SimpleNamespace(microkube_no_such_hook=hookimpl(lambda: None))
    with pytest.raises(errors.PluginError) as error:
        Plugins(autoload=False, extra=[pack])
    assert "microkube_no_such_hook" in str(error.value)


def test_unsupported_interface_version_is_refused() -> None:
    pack = types.SimpleNamespace(
        microkube_plugin_info=hookimpl(lambda: PluginInfo(name="future", interfaces={"store": ("v9",)})))
    with pytest.raises(errors.PluginError) as error:
        Plugins(autoload=False, extra=[pack])
    assert "v9" in str(error.value) and "v1" in str(error.value)


def test_plugin_info_must_be_a_plugin_info() -> None:
    pack = types.SimpleNamespace(microkube_plugin_info=hookimpl(lambda: {"name": "dict"}))
    with pytest.raises(errors.PluginError) as error:
        Plugins(autoload=False, extra=[pack])
    assert "PluginInfo" in str(error.value)


def test_autoload_can_be_switched_off_and_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    class EntryPoint:
        def __init__(self, name: str) -> None:
            self.name = name
            self.value = f"pack_{name}:plugin"
            self.dist = None

        def load(self) -> object:
            loaded.append(self.name)
            return types.SimpleNamespace(
                microkube_plugin_info=hookimpl(lambda: PluginInfo(name=self.name)))

    monkeypatch.setattr("microkube.plugins.metadata.entry_points",
                        lambda group: [EntryPoint("alpha"), EntryPoint("beta")])
    Plugins(autoload=False)
    assert loaded == []
    Plugins(autoload=True, allow=["beta"])
    assert loaded == ["beta"]
    monkeypatch.setenv("MICROKUBE_DISABLE_PLUGIN_AUTOLOAD", "1")
    Plugins()
    assert loaded == ["beta"]
    monkeypatch.delenv("MICROKUBE_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("MICROKUBE_PLUGINS", "alpha")
    Plugins()
    assert loaded == ["beta", "alpha"]


def test_builtin_list_is_what_loads() -> None:
    assert len(Plugins(autoload=False).loaded()) == len(DEFAULT_PLUGINS)
