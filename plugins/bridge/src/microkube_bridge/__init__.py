"""microkube-bridge: the default pod network of microkube (cni/1.1), a Linux bridge with veth pairs.

Importing this package is cheap; pyroute2 is imported on the first netlink operation.
"""

from microkube_bridge.netns import create_netns, create_netns_sync, delete_netns, delete_netns_sync
from microkube_bridge.network import BridgeNetwork, BridgeOptions, veth_name

__version__ = "0.1.0"

__all__ = [
    "BridgeNetwork",
    "BridgeOptions",
    "__version__",
    "create_netns",
    "create_netns_sync",
    "delete_netns",
    "delete_netns_sync",
    "veth_name",
]
