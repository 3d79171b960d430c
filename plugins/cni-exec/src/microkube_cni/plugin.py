"""The hookimpls of the ``cni-exec`` pack (entry point ``cni-exec`` in the ``microkube`` group)."""

from __future__ import annotations

from microkube_cni.runtime import CNIExec
from microkube_interfaces import PluginInfo, Registrar, hookimpl


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="cni-exec",
        interfaces={"cni": ("1.1",)},
        description="Pod network: executes standard CNI plugin binaries (a conflist) per CNI spec 1.1",
    )


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.networks.add("cni-exec", CNIExec.from_options, plugin="cni-exec", versions=("1.1",))
