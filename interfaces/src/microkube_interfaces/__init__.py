"""microkube_interfaces: the contracts between microkube's core and its plugin packs."""

from microkube_interfaces.hookspecs import PluginInfo, ResourceRegistration, ServerSettings
from microkube_interfaces.markers import ENTRY_POINT_GROUP, PROJECT_NAME, hookimpl, hookspec
from microkube_interfaces.registry import Kind, Registrar, Registration

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "Kind",
    "PluginInfo",
    "Registrar",
    "Registration",
    "ResourceRegistration",
    "ServerSettings",
    "__version__",
    "hookimpl",
    "hookspec",
]
