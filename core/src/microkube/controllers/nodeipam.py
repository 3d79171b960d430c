"""Node IPAM: every node gets a ``spec.podCIDR`` from the cluster CIDR (10.244.0.0/16 in /24s by
default), never reused while a node holds it."""

from __future__ import annotations

import ipaddress

from microkube.client import Resource
from microkube.controllers.daemonset import NODES
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome

CLUSTER_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
NODE_PREFIX = 24
MANAGER = "node-ipam-controller"


class NodeIpamController:
    name = "nodeipam"

    def __init__(self, context: ControllerContext, cluster_cidr: ipaddress.IPv4Network = CLUSTER_CIDR,
                 node_prefix: int = NODE_PREFIX) -> None:
        self.client = context.client
        self.nodes = context.cache(NODES)
        self.subnets = list(cluster_cidr.subnets(new_prefix=node_prefix))
        self.resource = Resource("", "v1", "nodes", namespaced=False)
        #: CIDRs handed out by this process that the node cache may not show yet.
        self.assigned: dict[str, str] = {}

    async def reconcile(self, key: str) -> Outcome:
        node = self.nodes.get(key)
        if node is None or (node.get("spec") or {}).get("podCIDR"):
            return Outcome.done()
        names = {n["metadata"]["name"] for n in self.nodes.items()}
        self.assigned = {cidr: owner for cidr, owner in self.assigned.items() if owner in names}
        taken = {(n.get("spec") or {}).get("podCIDR") for n in self.nodes.items()} | set(self.assigned)
        free = next((str(s) for s in self.subnets if str(s) not in taken), None)
        if free is None:
            raise errors.Retryable(f"no pod CIDR left in the cluster range for node {key}", after=30)
        self.assigned[free] = key
        try:
            await self.client.patch(self.resource, key, {"spec": {"podCIDR": free, "podCIDRs": [free]}},
                                    field_manager=MANAGER)
        except errors.NotFound:
            self.assigned.pop(free, None)
        return Outcome.done()
