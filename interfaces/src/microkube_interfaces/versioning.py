"""Interface versions.

Every plugin interface has a version of its own, independent of package versions (``store/v1``,
``cri/v1``, ``cni/1.1``). A plugin declares the versions it implements; the core picks one it
supports. Interfaces grow only by addition: a breaking change is a new version beside the old one.
"""

from __future__ import annotations

from collections.abc import Iterable

from microkube_interfaces.errors import PluginError

#: The interface versions this release of microkube_interfaces defines.
INTERFACE_VERSIONS: dict[str, tuple[str, ...]] = {
    "store": ("v1",),
    "resources": ("v1",),
    "admission": ("v1",),
    "authentication": ("v1",),
    "authorization": ("v1",),
    "controllers": ("v1",),
    "scheduler": ("v1",),
    "cri": ("v1",),
    "cni": ("1.1",),
}


def negotiate(interface: str, plugin: str, offered: Iterable[str]) -> str:
    """Return the newest version of ``interface`` that both the core and ``plugin`` support."""
    known = INTERFACE_VERSIONS.get(interface)
    if known is None:
        raise PluginError(plugin, f"declares unknown interface {interface!r}",
                          f"known interfaces: {', '.join(sorted(INTERFACE_VERSIONS))}")
    offered = tuple(offered)
    for version in reversed(known):
        if version in offered:
            return version
    raise PluginError(
        plugin,
        f"implements {interface} versions {list(offered)} but this microkube supports {list(known)}",
        "upgrade the plugin or microkube so that they share an interface version",
    )
