"""The ``microkube_*`` hookspecs: every way a plugin pack extends microkube.

Hooks are synchronous: they register and configure. What they return are objects whose methods are
``async`` (the core is asyncio). The built-in components of microkube register through these same
hooks, so a pip-installed pack and the core itself are plugged in the same way.

Lifecycle of one cluster instance:

1. ``microkube_plugin_info`` — at load, for ``microkube plugins`` and interface-version negotiation.
2. ``microkube_register`` — once, before anything starts: add named implementations (store backends…).
3. ``microkube_resource_types`` — once, when the API server builds its resource registry.
4. ``microkube_admission_plugins``, ``microkube_authenticators``, ``microkube_authorizer`` — once,
   when the API server builds its request chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from microkube_interfaces.markers import hookspec

if TYPE_CHECKING:
    from microkube_interfaces.admission import AdmissionPlugin
    from microkube_interfaces.auth import Authenticator, Authorizer
    from microkube_interfaces.controllers import ControllerRegistration
    from microkube_interfaces.registry import Registrar
    from microkube_interfaces.resources import ResourceType, Strategy
    from microkube_interfaces.scheduling import SchedulerPluginRegistration


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin says about itself. ``interfaces`` maps interface name → versions implemented."""

    name: str
    interfaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ResourceRegistration:
    resource: ResourceType
    strategy: Strategy


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the API server a plugin may read while configuring itself."""

    data_dir: str
    options: dict[str, Any] = field(default_factory=dict)


@hookspec
def microkube_plugin_info() -> PluginInfo:  # type: ignore[empty-body]
    """Describe this plugin: its name and the interface versions it implements.

    Called once per plugin at load time. A plugin that declares an interface version this microkube
    does not know is refused at load with a message naming the supported versions.
    """


@hookspec
def microkube_register(registrar: Registrar) -> None:
    """Add named implementations to ``registrar`` (store backends by URL scheme, and later runtimes,
    networks, volume drivers, clouds). Called once per cluster instance, before anything starts.
    Duplicate names are refused with AlreadyExists."""


@hookspec
def microkube_resource_types(settings: ServerSettings) -> Sequence[ResourceRegistration]:  # type: ignore[empty-body]
    """Return the API kinds this plugin serves. Called once when the API server starts; every
    plugin's answer is used. Two plugins serving the same group/version/plural is an error."""


@hookspec
def microkube_admission_plugins(settings: ServerSettings) -> Sequence[AdmissionPlugin]:  # type: ignore[empty-body]
    """Return admission plugins; all are used, mutating ones in registration order."""


@hookspec
def microkube_authenticators(settings: ServerSettings) -> Sequence[Authenticator]:  # type: ignore[empty-body]
    """Return authenticators; all are tried in order for each request until one recognises it."""


@hookspec(firstresult=True)
def microkube_authorizer(settings: ServerSettings) -> Authorizer | None:
    """Return the authorizer. First non-None answer wins; the built-in one (allow authenticated
    users) is registered ``trylast`` so any plugin's authorizer replaces it."""


@hookspec
def microkube_controllers(settings: ServerSettings) -> Sequence[ControllerRegistration]:  # type: ignore[empty-body]
    """Return reconcile loops for the controller manager; all are used. Names must be unique;
    operators disable controllers by name. Called once when the controller manager starts."""


@hookspec
def microkube_scheduler_plugins(settings: ServerSettings) -> Sequence[SchedulerPluginRegistration]:  # type: ignore[empty-body]
    """Return scheduler framework plugins (filters, scores, binders, …); all are used, unless the
    operator disables them by name. Names must be unique. Called once when a scheduler starts."""
