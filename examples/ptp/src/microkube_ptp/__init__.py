"""microkube-ptp: a point-to-point pod network for microkube (cni/1.1), written from microkube's plugin docs."""

from microkube_ptp.config import GATEWAY, PTPConfig
from microkube_ptp.network import PTPNetwork

__version__ = "0.1.0"

__all__ = ["GATEWAY", "PTPConfig", "PTPNetwork", "__version__"]
