"""The containerd pack's hookimpls: cri/v1, the runtime ``containerd`` in ``Registrar.runtimes``.

``microkube_containerd.runtime.create_runtime(options)`` returns a ``cri.Runtime`` whose services are CRI
v1 gRPC calls to ``options["endpoint"]`` (default ``unix:///run/containerd/containerd.sock``).
"""

from __future__ import annotations

from microkube_containerd.runtime import create_runtime
from microkube_interfaces import PluginInfo, Registrar, hookimpl


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="containerd",
        interfaces={"cri": ("v1",)},
        description="container runtime through CRI v1 gRPC (containerd 1.6+): sandboxes, containers, images; "
        "pods networked by the runtime's CNI config",
    )


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.runtimes.add("containerd", create_runtime, plugin="containerd", versions=("v1",))
