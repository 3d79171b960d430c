"""Service cluster IPs and node ports, allocated by the API server when a Service is written.

The set of addresses and ports in use is read from the watch cache, so allocation needs no separate
state; the store's create-if-absent on the Service itself settles races (a loser gets 409 and the
client retries, as with any conflict).
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from microkube.apiserver.watchcache import WatchCache
from microkube_interfaces import errors

SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
NODE_PORT_RANGE = range(30000, 32768)
SERVICES_PREFIX = "/registry/services/"


class ServiceAllocator:
    #: The first address of the range is the `kubernetes` Service's, as in kube-apiserver.
    API_SERVICE_IP = str(next(SERVICE_CIDR.hosts()))

    def __init__(self, cache: WatchCache, cidr: ipaddress.IPv4Network = SERVICE_CIDR) -> None:
        self.cache = cache
        self.cidr = cidr

    def _in_use(self) -> tuple[set[str], set[int]]:
        ips: set[str] = set()
        ports: set[int] = set()
        for entry in self.cache.cache_for(SERVICES_PREFIX).entries.values():
            spec = entry.obj().get("spec") or {}
            ips.update(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None")
            ports.update(p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort"))
        return ips, ports

    def _allocate_ip(self, used: set[str]) -> str:
        size = self.cidr.num_addresses
        base = int(self.cidr.network_address)
        start = random.randrange(2, size - 1)
        for offset in range(size - 3):
            candidate = str(ipaddress.ip_address(base + 2 + (start + offset) % (size - 3)))
            if candidate not in used:
                return candidate
        raise errors.Retryable(f"no cluster IP left in the service range {self.cidr}", after=5)

    def _check_ip(self, ip: str, used: set[str]) -> None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise errors.Invalid.field("spec.clusterIP", f'Invalid value: "{ip}": must be a valid IP address or '
                                       '"None"') from None
        if address not in self.cidr:
            raise errors.Invalid.field("spec.clusterIP", f'Invalid value: "{ip}": provided IP is not in the valid '
                                       f"range. The range of valid IPs is {self.cidr}")
        if ip in used:
            raise errors.Invalid.field("spec.clusterIP", f'Invalid value: "{ip}": provided IP is already '
                                       "allocated", "FieldValueDuplicate")

    def _allocate_port(self, used: set[int]) -> int:
        free = [p for p in NODE_PORT_RANGE if p not in used]
        if not free:
            raise errors.Retryable("no node port left in the range 30000-32767", after=5)
        return random.choice(free)

    def allocate(self, service: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Fill clusterIP(s) and node ports the way kube-apiserver does (in place)."""
        spec = service.setdefault("spec", {})
        kind = spec.get("type") or "ClusterIP"
        used_ips, used_ports = self._in_use()
        old_spec = (old or {}).get("spec") or {}
        if old is not None:
            for ip in old_spec.get("clusterIPs") or [old_spec.get("clusterIP")]:
                used_ips.discard(ip)
            for port in old_spec.get("ports") or []:
                used_ports.discard(port.get("nodePort"))
        if kind == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            ip = spec.get("clusterIP") or old_spec.get("clusterIP") or ""
            if ip == "None":
                spec["clusterIPs"] = ["None"]
            else:
                if ip and ip != old_spec.get("clusterIP"):
                    self._check_ip(ip, used_ips)
                ip = ip or self._allocate_ip(used_ips)
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
        if kind in ("NodePort", "LoadBalancer"):
            old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                         for p in old_spec.get("ports") or []}
            for index, port in enumerate(spec.get("ports") or []):
                wanted = port.get("nodePort")
                if wanted:
                    if wanted not in NODE_PORT_RANGE:
                        raise errors.Invalid.field(f"spec.ports[{index}].nodePort", f"Invalid value: {wanted}: "
                                                   "provided port is not in the valid range. The range of valid "
                                                   "ports is 30000-32767")
                    if wanted in used_ports and wanted != old_ports.get((port.get("port"),
                                                                         port.get("protocol", "TCP"))):
                        raise errors.Invalid.field(f"spec.ports[{index}].nodePort", f"Invalid value: {wanted}: "
                                                   "provided port is already allocated", "FieldValueDuplicate")
                else:
                    wanted = old_ports.get((port.get("port"), port.get("protocol", "TCP"))) or \
                        self._allocate_port(used_ports)
                    port["nodePort"] = wanted
                used_ports.add(wanted)
        else:
            for port in spec.get("ports") or []:
                port.pop("nodePort", None)
