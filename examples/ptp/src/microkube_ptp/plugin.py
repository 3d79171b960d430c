"""The pack's hook implementations: who it is, and the ``ptp`` pod network."""

from __future__ import annotations

from microkube_interfaces import PluginInfo, Registrar, hookimpl
from microkube_ptp.network import PTPNetwork

NAME = "ptp"
#: The cni interface version this pack implements (microkube_interfaces.cni.VERSION when it was written).
CNI_VERSIONS = ("1.1",)


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name=NAME, interfaces={"cni": CNI_VERSIONS},
                      description="point-to-point pod network: a veth pair and a /32 per pod, no bridge")


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.networks.add(NAME, PTPNetwork.from_options, plugin=NAME, versions=CNI_VERSIONS)
