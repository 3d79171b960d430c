"""The microkernel: one pluggy PluginManager per cluster instance, behind a typed facade.

Built-in components are plugins too: the modules in DEFAULT_PLUGINS register through the same hooks
as pip-installed packs (found through the ``microkube`` entry-point group). Autoload of installed
packs can be switched off (``MICROKUBE_DISABLE_PLUGIN_AUTOLOAD=1`` or ``autoload=False``) and limited
to an allow-list of entry-point names (``MICROKUBE_PLUGINS=a,b`` or ``allow=``), which keeps tests
hermetic.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import pluggy

from microkube_interfaces import hookspecs
from microkube_interfaces.admission import AdmissionPlugin
from microkube_interfaces.auth import Authenticator, Authorizer
from microkube_interfaces.controllers import ControllerRegistration
from microkube_interfaces.errors import MicrokubeError, PluginError
from microkube_interfaces.hookspecs import PluginInfo, ResourceRegistration, ServerSettings
from microkube_interfaces.markers import ENTRY_POINT_GROUP, PROJECT_NAME
from microkube_interfaces.registry import Kind, Registrar
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
        # Built at load so that a wrong registration is refused here too (hooks only register: this is cheap).
        self._registrar = self._build_registrar()

    def _register(self, plugin: object, name: str, *, builtin: bool) -> None:
        try:
            self.manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(name, *self._signature_problem(plugin, exc)) from exc
        except ValueError as exc:
            raise PluginError(name, f"could not be registered: {exc}", "give each plugin a unique name") from exc
        if builtin:
            self._builtin_names.add(name)

    def _signature_problem(self, plugin: object, exc: pluggy.PluginValidationError) -> tuple[str, str]:
        """(problem, fix) for a hookimpl pluggy refused: an argument the hookspec does not pass, or a wrapper
        that is not a generator."""
        for attribute in dir(plugin):
            if self.manager.parse_hookimpl_opts(plugin, attribute) is None:
                continue
            caller = getattr(self.manager.hook, attribute, None)
            spec = caller.spec if caller is not None else None
            if spec is None:
                continue
            function = getattr(plugin, attribute)
            required = [p.name for p in inspect.signature(function).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            extra = [a for a in required if a not in spec.argnames]
            if extra:
                hook = f"{attribute}({', '.join(spec.argnames)})"
                return (f"implements {attribute}({', '.join(required)}) but microkube calls {hook}: "
                        f"{', '.join(extra)} is not passed",
                        f"take only arguments of {hook}, by those names (any subset; others need a default)")
        first_line = str(exc).splitlines()[-1]
        return (f"has a hook implementation microkube cannot call: {first_line}",
                "check the hookimpl options and arguments against microkube_interfaces.hookspecs")

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
            self._register(plugin, ep.name, builtin=False)
            dist = getattr(ep, "dist", None)
            if dist is not None:
                self._distributions[ep.name] = (dist.metadata["Name"], dist.version)

    def _check(self) -> None:
        """Refuse, naming the fix: a hook microkube does not define, a hook function without @hookimpl, an
        unsupported interface version, a select-by-name interface declared without a microkube_register."""
        hooks = self._hook_names()
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.manager.get_name(exc.plugin) or str(exc.plugin)
            unknown = sorted(c.name for c in self.manager.get_hookcallers(exc.plugin) or () if not c.has_spec())
            raise PluginError(
                name, f"implements {', '.join(unknown) or 'a hook'}, which microkube does not define"
                      f"{_did_you_mean(unknown, hooks)}",
                "rename it to a hook of microkube_interfaces.hookspecs, or remove its @hookimpl",
            ) from exc
        for name, plugin in self.manager.list_name_plugin():
            for attribute in dir(plugin):
                if not attribute.startswith(f"{PROJECT_NAME}_") or self.manager.parse_hookimpl_opts(
                        plugin, attribute) is not None:
                    continue
                close = difflib.get_close_matches(attribute, hooks, n=1, cutoff=0.9)
                if close and inspect.isroutine(getattr(plugin, attribute, None)):
                    hook = close[0]
                    spelt = "" if hook == attribute else f" (did you mean {hook}?)"
                    raise PluginError(name, f"defines {attribute}{spelt} without @hookimpl, so microkube never "
                                      "calls it",
                                      f"decorate it with @microkube_interfaces.hookimpl"
                                      f"{'' if hook == attribute else f' and name it {hook}'}")
        registrable = {kind.interface: kind for kind in Registrar().kinds()}
        registers = {impl.plugin_name for impl in self.manager.hook.microkube_register.get_hookimpls()}
        for name, info in self._infos():
            for interface, versions in info.interfaces.items():
                negotiate(interface, name, versions)
                kind = registrable.get(interface)
                if kind is not None and name not in registers:
                    raise PluginError(
                        name, f"declares {interface} {list(versions)} in microkube_plugin_info but implements no "
                              f"microkube_register hook, so it adds no {kind.kind}",
                        f"add `@hookimpl def microkube_register(registrar): registrar.{kind.attribute}.add(name, "
                        "factory)` (spelt exactly so, with @hookimpl)")

    def _hook_names(self) -> list[str]:
        return sorted(name for name, caller in vars(self.manager.hook).items()
                      if isinstance(caller, pluggy.HookCaller) and caller.has_spec())

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

    def _build_registrar(self) -> Registrar:
        """Run each plugin's microkube_register on its own, so that every registration is attributed to its
        plugin and checked against what the plugin declared. Built-ins run first, then packs in load order:
        of two plugins claiming one name, the later is refused."""
        registrar = Registrar()
        infos = dict(self._infos())
        for impl in self.manager.hook.microkube_register.get_hookimpls():
            name = impl.plugin_name
            if impl.wrapper or impl.hookwrapper:
                raise PluginError(name, "implements microkube_register as a wrapper",
                                  "drop wrapper=/hookwrapper=: microkube_register only adds factories")
            before = {kind.interface: set(kind.names()) for kind in registrar.kinds()}
            with registrar.registering(name):
                try:
                    impl.function(*[registrar for _ in impl.argnames])  # as pluggy calls it
                except MicrokubeError:
                    raise
                except Exception as exc:
                    raise PluginError(name, f"microkube_register raised {exc!r}", _register_fix(exc)) from exc
            declared = infos.get(name, PluginInfo(name=name)).interfaces
            for kind in registrar.kinds():
                added = [kind.get(n) for n in kind.names() if n not in before[kind.interface]]
                _check_declared(name, kind, added, declared)
        return registrar

    # -- typed access to the hooks -------------------------------------------------------------

    @property
    def registrar(self) -> Registrar:
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


def _did_you_mean(names: list[str], hooks: list[str]) -> str:
    guesses = [match for name in names for match in difflib.get_close_matches(name, hooks, n=1, cutoff=0.6)]
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def _register_fix(exc: Exception) -> str:
    if isinstance(exc, AttributeError) and "Registrar" in str(exc):
        kinds = ", ".join(f"registrar.{kind.attribute}" for kind in Registrar().kinds())
        return f"the registrar offers {kinds}; fix microkube_register (the traceback shows where)"
    return "fix microkube_register (the traceback shows where); it only registers factories"


def _check_declared(plugin: str, kind: Kind[Any], added: list[Any], declared: dict[str, tuple[str, ...]]) -> None:
    """A plugin registers a kind if and only if its microkube_plugin_info declares that interface, with a
    version in common."""
    interface = kind.interface
    if interface in declared and not added:
        raise PluginError(plugin, f"declares {interface} {list(declared[interface])} in microkube_plugin_info but its "
                          f"microkube_register added no {kind.kind}",
                          f"call registrar.{kind.attribute}.add(name, factory) in microkube_register, or drop "
                          f"{interface!r} from PluginInfo.interfaces")
    for registration in added:
        if interface not in declared:
            raise PluginError(plugin, f"registers {kind.kind} {registration.name!r} but its microkube_plugin_info does "
                              f"not declare the {interface} interface",
                              f"return PluginInfo(..., interfaces={{{interface!r}: {registration.versions!r}}}) "
                              "from microkube_plugin_info")
        if not set(registration.versions) & set(declared[interface]):
            raise PluginError(plugin, f"registers {kind.kind} {registration.name!r} for {interface} versions "
                              f"{list(registration.versions)} but declares {list(declared[interface])} in "
                              "microkube_plugin_info", "make versions= and PluginInfo.interfaces agree")


_Named = TypeVar("_Named", ControllerRegistration, SchedulerPluginRegistration)


def _unique(found: list[_Named], what: str) -> list[_Named]:
    names = [item.name for item in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PluginError(",".join(duplicates), f"{what} names must be unique", f"rename the plugin's {what}")
    return found
