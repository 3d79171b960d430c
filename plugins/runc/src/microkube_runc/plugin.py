"""The runc pack's hookimpls.

It declares cri/v1. The image service (``microkube_runc.images.ImageStore``) is implemented; the
runtime service (runc-driven pod sandboxes and containers) is not implemented yet, so no factory is
added to ``Registrar.runtimes``: selecting runtime ``runc`` fails with the registrar's "unknown
container runtime" message until it is.
"""

from __future__ import annotations

from microkube_interfaces import PluginInfo, hookimpl


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="runc",
        interfaces={"cri": ("v1",)},
        description="container runtime on runc (image service: OCI image store, registry pulls)",
    )
