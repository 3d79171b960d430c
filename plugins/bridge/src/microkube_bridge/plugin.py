"""The hookimpls of the ``bridge`` pack (entry point ``bridge`` in the ``microkube`` group)."""

from __future__ import annotations

from microkube_bridge.network import BridgeNetwork
from microkube_interfaces import PluginInfo, Registrar, hookimpl


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="bridge",
        interfaces={"cni": ("1.1",)},
        description="Pod network: a Linux bridge per node, veth pairs, host-local IPAM, nftables masquerade",
    )


@hookimpl
def microkube_register(registrar: Registrar) -> None:
    registrar.networks.add("bridge", BridgeNetwork.from_options, plugin="bridge", versions=("1.1",))
