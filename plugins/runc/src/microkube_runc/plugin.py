"""The runc pack's hookimpls.

It declares cri/v1 and registers the container runtime ``runc`` in ``Registrar.runtimes``: the factory
``microkube_runc.runtime.create_runtime(options)`` returns a ``cri.Runtime`` whose ``runtime`` drives runc
(pod sandboxes, containers, logs, exec, stats) and whose ``images`` is the OCI image store under the same
root.
"""

from __future__ import annotations

from microkube_interfaces import PluginInfo, Registrar, hookimpl
from microkube_runc.runtime import create_runtime


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="runc",
        interfaces={"cri": ("v1",)},
        description="container runtime on runc: pod sandboxes, containers, CRI logs, exec; OCI image store, "
        "registry pulls",
    )


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.runtimes.add("runc", create_runtime, plugin="runc", versions=("v1",))
