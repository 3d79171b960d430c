"""The microkernel: one pluggy PluginManager per cluster instance, behind a typed facade.

Built-in components are plugins too: the modules in DEFAULT_PLUGINS register through the same hooks
as pip-installed packs (found through the ``microkube`` entry-point group). Autoload of installed
packs can be switched off (``MICROKUBE_DISABLE_PLUGIN_AUTOLOAD=1`` or ``autoload=False``) and limited
to an allow-list of entry-point names (``MICROKUBE_PLUGINS=a,b`` or ``allow=``), which keeps tests
hermetic.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import pluggy

from microkube_interfaces import hookspecs
from microkube_interfaces.admission import AdmissionPlugin
from microkube_interfaces.auth import Authenticator, Authorizer
from microkube_interfaces.controllers import ControllerRegistration
from microkube_interfaces.errors import PluginError
from microkube_interfaces.hookspecs import PluginInfo, ResourceRegistration, ServerSettings
from microkube_interfaces.markers import ENTRY_POINT_GROUP, PROJECT_NAME
from microkube_interfaces.registry import Registrar
from microkube_interfaces.scheduling import SchedulerPluginRegistration
from microkube_interfaces.versioning import negotiate

#: Built-in plugins, registered in this order before any installed pack.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "microkube.store.plugin",
    "microkube.apiserver.builtin",
    "microkube.apiserver.authplugin",
    "microkube.apiserver.crds",
    "microkube.apiserver.quota",
    "microkube.controllers.builtin",
    "microkube.scheduler.builtin",
)

#: Entry points whose names start with this are microkube's own (never blocked by the allow-list).
AUTOLOAD_DISABLE_ENV = "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_LIST_ENV = "MICROKUBE_PLUGINS"


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    distribution: str
    version: str
    interfaces: dict[str, tuple[str, ...]]
    builtin: bool


def _core_version() -> str:
    try:
        return metadata.version("microkube")
    except metadata.PackageNotFoundError:
        return "0.0.0+source"


class Plugins:
    """The plugin manager of one cluster instance."""

    def __init__(
        self,
        *,
        builtins: Sequence[str] = DEFAULT_PLUGINS,
        extra: Iterable[object] = (),
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
    ) -> None:
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self._builtin_names: set[str] = set()
        self._distributions: dict[str, tuple[str, str]] = {}
        for module_name in builtins:
            module = importlib.import_module(module_name)
            self._register(module, module_name, builtin=True)
        for plugin in extra:
            self._register(plugin, getattr(plugin, "__name__", type(plugin).__name__), builtin=False)
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_DISABLE_ENV, "") not in ("1", "true", "yes")
        if allow is None and os.environ.get(ALLOW_LIST_ENV):
            allow = [n.strip() for n in os.environ[ALLOW_LIST_ENV].split(",") if n.strip()]
        if autoload:
            self._load_entry_points(set(allow) if allow is not None else None)
        self._check()
        self._registrar: Registrar | None = None

    def _register(self, plugin: object, name: str, *, builtin: bool) -> None:
        try:
            self.manager.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(name, f"could not be registered: {exc}", "give each plugin a unique name") from exc
        if builtin:
            self._builtin_names.add(name)

    def _load_entry_points(self, allow: set[str] | None) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                continue
            if self.manager.get_plugin(ep.name) is not None or self.manager.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    ep.name, f"entry point {ep.value!r} failed to import: {exc}",
                    "fix the package or uninstall it"
                ) from exc
            self.manager.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            if dist is not None:
                self._distributions[ep.name] = (dist.metadata["Name"], dist.version)

    def _check(self) -> None:
        """Refuse plugins that implement unknown hooks or declare unsupported interface versions."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                str(exc.plugin_name if hasattr(exc, "plugin_name") else exc.plugin),
                f"implements a hook microkube does not define: {exc}",
                "check the hook name against microkube_interfaces.hookspecs",
            ) from exc
        for name, info in self._infos():
            for interface, versions in info.interfaces.items():
                negotiate(interface, name, versions)

    def _infos(self) -> list[tuple[str, PluginInfo]]:
        out: list[tuple[str, PluginInfo]] = []
        for name, plugin in self.manager.list_name_plugin():
            impl = getattr(plugin, "microkube_plugin_info", None)
            if impl is None:
                out.append((name, PluginInfo(name=name)))
                continue
            info = impl()
            if not isinstance(info, PluginInfo):
                raise PluginError(name, "microkube_plugin_info must return a PluginInfo",
                                  "return microkube_interfaces.PluginInfo(name=..., interfaces=...)")
            out.append((name, info))
        return out

    # -- typed access to the hooks -------------------------------------------------------------

    @property
    def registrar(self) -> Registrar:
        if self._registrar is None:
            registrar = Registrar()
            self.manager.hook.microkube_register(registrar=registrar)
            self._registrar = registrar
        return self._registrar

    def resource_types(self, settings: ServerSettings) -> list[ResourceRegistration]:
        results = self.manager.hook.microkube_resource_types(settings=settings)
        return [reg for batch in reversed(results) for reg in batch]

    def admission_plugins(self, settings: ServerSettings) -> list[AdmissionPlugin]:
        results = self.manager.hook.microkube_admission_plugins(settings=settings)
        return [p for batch in reversed(results) for p in batch]

    def controllers(self, settings: ServerSettings) -> list[ControllerRegistration]:
        results = self.manager.hook.microkube_controllers(settings=settings)
        return _unique([c for batch in reversed(results) for c in batch], "controller")

    def scheduler_plugins(self, settings: ServerSettings) -> list[SchedulerPluginRegistration]:
        results = self.manager.hook.microkube_scheduler_plugins(settings=settings)
        return _unique([p for batch in reversed(results) for p in batch], "scheduler plugin")

    def authenticators(self, settings: ServerSettings) -> list[Authenticator]:
        results = self.manager.hook.microkube_authenticators(settings=settings)
        return [a for batch in reversed(results) for a in batch]

    def authorizer(self, settings: ServerSettings) -> Authorizer:
        authorizer: Authorizer | None = self.manager.hook.microkube_authorizer(settings=settings)
        if authorizer is None:
            raise PluginError("authorizer", "no plugin provides an authorizer",
                              "keep microkube.apiserver.authplugin registered")
        return authorizer

    def loaded(self) -> list[LoadedPlugin]:
        rows = []
        for name, info in self._infos():
            builtin = name in self._builtin_names
            dist, version = ("microkube", _core_version()) if builtin else self._distributions.get(name, ("", ""))
            rows.append(LoadedPlugin(info.name or name, dist, version, dict(info.interfaces), builtin))
        return rows


_Named = TypeVar("_Named", ControllerRegistration, SchedulerPluginRegistration)


def _unique(found: list[_Named], what: str) -> list[_Named]:
    names = [item.name for item in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PluginError(",".join(duplicates), f"{what} names must be unique", f"rename the plugin's {what}")
    return found
