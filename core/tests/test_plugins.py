"""The microkernel: built-ins through the same hooks, registrar rules, refusing wrong plugins."""

from __future__ import annotations

import types
from typing import Any

import pytest

from microkube.plugins import DEFAULT_PLUGINS, Plugins
from microkube.store import open_store
from microkube.store.memory import MemoryStore
from microkube_interfaces import PluginInfo, cni, cri, errors, hookimpl
from microkube_interfaces.hookspecs import ServerSettings
from microkube_interfaces.registry import Registrar
from microkube_interfaces.versioning import INTERFACE_VERSIONS


def test_builtins_register_through_hooks() -> None:
    plugins = Plugins(autoload=False)
    names = {p.name for p in plugins.loaded()}
    assert {"store", "builtin-resources", "auth", "custom-resources"} <= names
    assert all(p.builtin and p.distribution == "microkube" for p in plugins.loaded())
    assert plugins.registrar.stores.names() == ["memory", "sqlite"]
    kinds = {(r.resource.group, r.resource.kind) for r in plugins.resource_types(_settings())}
    assert ("apps", "Deployment") in kinds and ("", "Pod") in kinds


def _settings() -> ServerSettings:
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
    with pytest.raises(errors.AlreadyExists) as error:
        Plugins(autoload=False, extra=[pack])
    assert str(error.value) == ("store backend 'sqlite' is already registered by plugin 'store'; "
                                "plugin 'copycat' must choose another name")


def test_unknown_names_list_the_known_ones() -> None:
    registrar = Registrar()
    registrar.stores.add("memory", MemoryStore, plugin="x")
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


# -- a wrong pack is refused, naming the plugin, the problem and the fix ------------------------------------------


def _pack(info: PluginInfo | None = None, **hooks: Any) -> types.SimpleNamespace:
    """A pack as a namespace of hook functions; ``info`` becomes its microkube_plugin_info."""
    if info is not None:
        hooks["microkube_plugin_info"] = hookimpl(lambda: info)
    return types.SimpleNamespace(**hooks)


CNI = PluginInfo(name="acme", interfaces={"cni": ("1.1",)})


def _refused(*packs: object) -> errors.PluginError:
    with pytest.raises(errors.PluginError) as error:
        Plugins(autoload=False, extra=packs)
    return error.value


def test_a_hook_without_hookimpl_is_refused() -> None:
    def microkube_register(registrar: Registrar) -> None:
        registrar.networks.add("acme", object)

    error = _refused(_pack(CNI, microkube_register=microkube_register))
    assert error.plugin == "SimpleNamespace"
    assert error.problem == "defines microkube_register without @hookimpl, so microkube never calls it"
    assert error.fix == "decorate it with @microkube_interfaces.hookimpl"


def test_a_misspelt_hook_is_refused() -> None:
    error = _refused(_pack(CNI, microkube_registr=hookimpl(lambda registrar: None)))
    assert error.problem == ("implements microkube_registr, which microkube does not define "
                             "(did you mean microkube_register?)")
    assert "rename it to a hook of microkube_interfaces.hookspecs" in error.fix
    error = _refused(_pack(CNI, microkube_registr=lambda registrar: None))
    assert error.problem == ("defines microkube_registr (did you mean microkube_register?) without @hookimpl, so "
                             "microkube never calls it")
    assert error.fix == "decorate it with @microkube_interfaces.hookimpl and name it microkube_register"


def test_a_declared_interface_needs_a_register_hook() -> None:
    error = _refused(_pack(CNI))
    assert error.problem == ("declares cni ['1.1'] in microkube_plugin_info but implements no microkube_register hook, "
                             "so it adds no pod network")
    assert "registrar.networks.add(name, factory)" in error.fix


def test_what_a_pack_registers_matches_what_it_declares() -> None:
    error = _refused(_pack(CNI, microkube_register=hookimpl(lambda registrar: None)))
    assert error.problem == ("declares cni ['1.1'] in microkube_plugin_info but its microkube_register added no "
                             "pod network")
    assert error.fix == ("call registrar.networks.add(name, factory) in microkube_register, or drop 'cni' from "
                         "PluginInfo.interfaces")
    store_only = PluginInfo(name="acme", interfaces={"store": ("v1",)})

    def register(registrar: Registrar) -> None:
        registrar.stores.add("acme", MemoryStore)
        registrar.networks.add("acme", object)

    error = _refused(_pack(store_only, microkube_register=hookimpl(register)))
    assert error.problem == ("registers pod network 'acme' but its microkube_plugin_info does not declare the cni "
                             "interface")
    assert error.fix == "return PluginInfo(..., interfaces={'cni': ('1.1',)}) from microkube_plugin_info"


def test_registration_and_declared_versions_must_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(INTERFACE_VERSIONS, "cni", ("1.0", "1.1"))
    register = hookimpl(lambda registrar: registrar.networks.add("acme", object, versions=("1.0",)))
    error = _refused(_pack(CNI, microkube_register=register))
    assert error.problem == ("registers pod network 'acme' for cni versions ['1.0'] but declares ['1.1'] in "
                             "microkube_plugin_info")


def test_a_hookimpl_with_an_argument_microkube_does_not_pass() -> None:
    def microkube_register(registrar: Registrar, options: dict[str, str]) -> None: ...

    error = _refused(_pack(CNI, microkube_register=hookimpl(microkube_register)))
    assert error.problem == ("implements microkube_register(registrar, options) but microkube calls "
                             "microkube_register(registrar): options is not passed")
    assert error.fix == ("take only arguments of microkube_register(registrar), by those names (any subset; others "
                         "need a default)")


def test_an_installed_pack_is_checked_like_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def microkube_register(registrar: Registrar, node: str) -> None: ...

    class EntryPoint:
        name, value, dist = "acme", "microkube_acme.plugin", None

        def load(self) -> object:
            return _pack(CNI, microkube_register=hookimpl(microkube_register))

    monkeypatch.setattr("microkube.plugins.metadata.entry_points", lambda group: [EntryPoint()])
    with pytest.raises(errors.PluginError) as error:
        Plugins(autoload=True)
    assert error.value.plugin == "acme" and "node is not passed" in error.value.problem


@pytest.mark.parametrize(("register", "problem", "fix"), [
    (lambda registrar: registrar.networks.add("acme", BridgeLike()),  # type: ignore[abstract]
     "registers pod network 'acme' with a factory that is not callable (BridgeLike)",
     "pass the class or function that builds it"),
    (lambda registrar: registrar.networks.add("acme", BridgeLike, versions=("2.0",)),
     "registers pod network 'acme' for cni versions ['2.0'] but this microkube speaks ['1.1']",
     "build the factory for a version this microkube speaks"),
    (lambda registrar: registrar.network.add("acme", BridgeLike),
     "microkube_register raised AttributeError(\"'Registrar' object has no attribute 'network'\")",
     "the registrar offers registrar.stores, registrar.runtimes, registrar.networks"),
])
def test_a_wrong_registration_names_the_pack(register: Any, problem: str, fix: str) -> None:
    error = _refused(_pack(CNI, microkube_register=hookimpl(register)))
    assert error.plugin == "SimpleNamespace"
    assert problem in error.problem and fix in error.fix


# -- first use: what a factory returns is checked before the core uses it ---------------------------------------


class BridgeLike(cni.CNIPlugin):
    """A pod network with every operation (the Protocol's own) but a synchronous ``status``."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options

    def status(self) -> None:  # type: ignore[override]
        return None


class SyncExecRuntime(cri.RuntimeService):
    def exec_sync(self, container_id: str, cmd: list[str],  # type: ignore[override]
                  timeout: int = 0) -> cri.ExecSyncResponse:
        return cri.ExecSyncResponse(b"", b"", 0)


class NoPullImages(cri.ImageService):
    pull_image = None  # type: ignore[assignment]


def test_a_store_is_checked_when_opened() -> None:
    class HalfStore:
        def __init__(self, url: str) -> None: ...

        def get(self, key: str, *, revision: int = 0) -> None: ...

    info = PluginInfo(name="half", interfaces={"store": ("v1",)})
    pack = _pack(info, microkube_register=hookimpl(lambda registrar: registrar.stores.add("half", HalfStore)))
    with pytest.raises(errors.PluginError) as error:
        open_store(Plugins(autoload=False, extra=[pack]).registrar, "half://x")
    assert error.value.plugin == "SimpleNamespace"
    assert str(error.value).startswith(
        "plugin 'SimpleNamespace': its store backend 'half' (test_a_store_is_checked_when_opened.<locals>.HalfStore) "
        "does not implement store/v1 store.Store: get is a plain def but store.Store.get is async (microkube awaits "
        "it); missing list, create, update, delete, watch, current_revision, compacted_revision, compact, close; "
        "make it `async def get(self, key: str, *, revision: int = 0) -> KeyValue | None`; add `async def list(")


def test_a_runtime_and_a_network_are_checked_when_built() -> None:
    def pack_factory(options: dict[str, Any]) -> object:
        return types.SimpleNamespace(runtime=SyncExecRuntime(), images=NoPullImages(),  # type: ignore[abstract]
                                     capabilities=cri.RuntimeCapabilities())

    info = PluginInfo(name="acme", interfaces={"cri": ("v1",), "cni": ("1.1",)})

    def register(registrar: Registrar) -> None:
        registrar.runtimes.add("acme", pack_factory, plugin="acme")
        registrar.networks.add("acme", BridgeLike, plugin="acme")

    registrar = Plugins(autoload=False, extra=[_pack(info, microkube_register=hookimpl(register))]).registrar
    with pytest.raises(errors.PluginError) as error:
        registrar.runtimes.get("acme").factory({"root": "/nonexistent"})
    assert str(error.value) == (
        "plugin 'acme': its container runtime 'acme' (SimpleNamespace) does not implement cri/v1 cri.Runtime: "
        "runtime.exec_sync is a plain def but cri.RuntimeService.exec_sync is async (microkube awaits it); "
        "images.pull_image is not callable (an attribute of type NoneType); "
        "make it `async def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> ExecSyncResponse`; "
        "define `async def pull_image(self, image: ImageSpec, auth: AuthConfig | None = None, sandbox_config: "
        "PodSandboxConfig | None = None) -> str`")
    with pytest.raises(errors.PluginError) as error:
        registrar.networks.get("acme").factory({"podCIDR": "10.0.0.0/24"})
    assert str(error.value) == (
        "plugin 'acme': its pod network 'acme' (BridgeLike) does not implement cni/1.1 cni.CNIPlugin: status is a "
        "plain def but cni.CNIPlugin.status is async (microkube awaits it); make it `async def status(self) -> None`")
