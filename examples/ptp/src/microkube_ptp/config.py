"""The network configuration: the factory's options, checked once, every error naming the field and the fix."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microkube_interfaces.cni import CNIError, ErrorCode

#: The pod's default gateway: a link-local address no host holds. Each pod resolves it to its own host-side veth
#: through a permanent neighbour entry, so no ARP, proxy ARP or host address is involved.
GATEWAY = ipaddress.IPv4Address("169.254.1.1")

#: Option → what it means (the error for an unknown option lists these).
OPTIONS = {
    "podCIDR": "IPv4 range pods take /32 addresses from (the node's spec.podCIDR)",
    "stateDir": "absolute directory for the allocation files (ptp keeps them under <stateDir>/ptp)",
    "mtu": "MTU of both veth ends (68-65535; default: the kernel's, 1500)",
}


def _invalid(field: str, value: Any, fix: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid {field} {value!r}", fix)


@dataclass(frozen=True)
class PTPConfig:
    pod_cidr: ipaddress.IPv4Network
    state_dir: Path
    mtu: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PTPConfig:
        """Raise ``CNIError``: code 2 for an option ptp does not know, code 7 for a missing or invalid value."""
        for key, value in options.items():
            if key not in OPTIONS:
                raise CNIError(ErrorCode.UNSUPPORTED_FIELD, f"unsupported field {key}={value!r}",
                               "ptp accepts " + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
        return cls(_pod_cidr(options.get("podCIDR")), _state_dir(options.get("stateDir")), _mtu(options.get("mtu")))


def _pod_cidr(value: Any) -> ipaddress.IPv4Network:
    if value is None or value == "":
        raise _invalid("podCIDR", value, "podCIDR is required: an IPv4 range such as 10.97.0.0/24")
    try:
        network = ipaddress.ip_network(str(value))
    except ValueError as exc:
        raise _invalid("podCIDR", value, f"{exc}; give an IPv4 range without host bits, such as 10.97.0.0/24") \
            from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _invalid("podCIDR", value, "ptp assigns IPv4 only; give an IPv4 range such as 10.97.0.0/24")
    if network.overlaps(ipaddress.IPv4Network("169.254.0.0/16")) or network.is_loopback or network.is_multicast:
        raise _invalid("podCIDR", value, "use a unicast range outside 127.0.0.0/8 and 169.254.0.0/16 (the gateway's)")
    return network


def _state_dir(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _invalid("stateDir", value, "stateDir is required: an absolute directory such as /var/lib/microkube/cni")
    path = Path(value)
    if not path.is_absolute():
        raise _invalid("stateDir", value, "stateDir must be an absolute path")
    return path


def _mtu(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise _invalid("mtu", value, "mtu is a whole number between 68 and 65535")
    mtu = int(value)
    if not 68 <= mtu <= 65535:
        raise _invalid("mtu", value, "mtu is a whole number between 68 and 65535")
    return mtu
