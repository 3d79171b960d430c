"""Node IPAM: every node gets a ``spec.podCIDR`` from the cluster CIDR (``--cluster-cidr``, by default
10.244.0.0/16 in /24s: 256 nodes; a larger cluster needs a larger range), never reused while a node
holds it. Which ranges are taken is kept from node events, so assigning one costs O(1), not a scan of
every node."""

from __future__ import annotations

import ipaddress
from typing import Any

from microkube.client import Resource
from microkube.controllers.daemonset import NODES
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome

CLUSTER_CIDR = "10.244.0.0/16"
NODE_PREFIX = 24
MANAGER = "node-ipam-controller"


class NodeIpamController:
    name = "nodeipam"

    def __init__(self, context: ControllerContext, cluster_cidr: str = CLUSTER_CIDR,
                 node_prefix: int = NODE_PREFIX) -> None:
        self.client = context.client
        self.nodes = context.cache(NODES)
        network = ipaddress.ip_network(cluster_cidr)
        if node_prefix < network.prefixlen:
            raise ValueError(f"--cluster-cidr {cluster_cidr} is smaller than one node's /{node_prefix}")
        self.subnets = [str(s) for s in network.subnets(new_prefix=node_prefix)]
        self.resource = Resource("", "v1", "nodes", namespaced=False)
        #: CIDR → the node holding it (seen in the cache, or handed out by this process and not seen yet)
        self.owners: dict[str, str] = {}
        self._cursor = 0
        self.nodes.add_handler(self._node_changed)

    def _node_changed(self, event: str, node: dict[str, Any], old: dict[str, Any] | None) -> None:
        name = node["metadata"]["name"]
        cidr = (node.get("spec") or {}).get("podCIDR")
        before = ((old or {}).get("spec") or {}).get("podCIDR")
        if before and (event == "DELETED" or before != cidr) and self.owners.get(before) == name:
            del self.owners[before]
        if cidr and event != "DELETED":
            self.owners[cidr] = name

    def _free(self) -> str | None:
        for offset in range(len(self.subnets)):
            index = (self._cursor + offset) % len(self.subnets)
            if self.subnets[index] not in self.owners:
                self._cursor = index + 1
                return self.subnets[index]
        return None

    async def reconcile(self, key: str) -> Outcome:
        node = self.nodes.get(key)
        if node is None:
            for cidr in [c for c, owner in self.owners.items() if owner == key]:
                del self.owners[cidr]  # handed out, never seen: the node is gone
            return Outcome.done()
        if (node.get("spec") or {}).get("podCIDR"):
            return Outcome.done()
        free = self._free()
        if free is None:
            raise errors.Retryable(f"no pod CIDR left in the cluster range for node {key}; give the controller "
                                   "manager a larger --cluster-cidr", after=30)
        self.owners[free] = key
        try:
            await self.client.patch(self.resource, key, {"spec": {"podCIDR": free, "podCIDRs": [free]}},
                                    field_manager=MANAGER)
        except errors.NotFound:
            self.owners.pop(free, None)
        return Outcome.done()
