"""BridgeNetwork: the cni/1.1 operations on a Linux bridge with veth pairs and host-local IPAM.

Every operation is one throwaway thread (``netns.in_thread``): the host-side netlink socket is opened first,
then the thread ``setns``-es into the pod's netns and opens a second socket there; the thread then exits, so
no pooled thread is ever left in a pod netns. pyroute2 is imported in that thread, on first use (~200 ms).

The host end of a pod's veth is named from a hash of ``(container id, ifname)`` (``mk`` + 12 hex digits), so
DEL, CHECK and GC find it without any state but the IPAM directory.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microkube_bridge import masquerade
from microkube_bridge.ipam import HostLocalIPAM
from microkube_bridge.netns import enter, in_thread
from microkube_interfaces.cni import (
    COMPATIBLE_SPEC_VERSIONS,
    Attachment,
    AttachmentRequest,
    CNIError,
    ErrorCode,
    Interface,
    IPConfig,
    Result,
    Route,
    VersionResult,
)

VETH_PREFIX = "mk"
DEFAULT_STATE_DIR = "/var/lib/microkube/cni"


def veth_name(container_id: str, ifname: str) -> str:
    """The host-side veth name of an attachment: stable, 14 characters (IFNAMSIZ allows 15)."""
    return VETH_PREFIX + hashlib.sha256(f"{container_id}\x00{ifname}".encode()).hexdigest()[:12]


def _bridge_mac(bridge: str) -> str:
    """A fixed, locally administered MAC for the bridge, so it does not change as ports come and go."""
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _ipr() -> Any:
    from pyroute2 import IPRoute  # lazily: importing pyroute2 costs ~200 ms

    return IPRoute()


def _netlink_code(exc: BaseException) -> int | None:
    from pyroute2.netlink.exceptions import NetlinkError

    code = exc.code if isinstance(exc, NetlinkError) else None
    return None if code is None else int(code)


@dataclass(frozen=True)
class BridgeOptions:
    pod_cidr: ipaddress.IPv4Network
    bridge: str = "mkbr0"
    name: str = "microkube"
    state_dir: str = DEFAULT_STATE_DIR
    mtu: int = 1500
    hairpin: bool = True
    ip_masq: bool = True
    nft_table: str = "microkube"
    ip_forward: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> BridgeOptions:
        def pick(*keys: str, default: Any = None) -> Any:
            for key in keys:
                if key in options:
                    return options[key]
            return default

        cidr = pick("podCIDR", "pod_cidr", "subnet")
        if not cidr:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "podCIDR is required", "e.g. {'podCIDR': '10.244.0.0/24'}")
        try:
            network = ipaddress.IPv4Network(str(cidr), strict=False)
        except ValueError as exc:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid podCIDR", str(exc)) from None
        bridge = str(pick("bridge", default="mkbr0"))
        if not bridge or len(bridge) > 15:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid bridge name", f"{bridge!r}: 1-15 characters")
        known = {"podCIDR", "pod_cidr", "subnet", "bridge", "name", "stateDir", "state_dir", "mtu", "hairpinMode",
                 "hairpin", "ipMasq", "ip_masq", "nftTable", "nft_table", "ipForward", "ip_forward", "cniVersion",
                 "type"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CNIError(ErrorCode.UNSUPPORTED_FIELD, "unsupported option", ", ".join(unknown))
        return cls(
            pod_cidr=network,
            bridge=bridge,
            name=str(pick("name", default="microkube")),
            state_dir=str(pick("stateDir", "state_dir", default=DEFAULT_STATE_DIR)),
            mtu=int(pick("mtu", default=1500)),
            hairpin=bool(pick("hairpinMode", "hairpin", default=True)),
            ip_masq=bool(pick("ipMasq", "ip_masq", default=True)),
            nft_table=str(pick("nftTable", "nft_table", default="microkube")),
            ip_forward=bool(pick("ipForward", "ip_forward", default=True)),
        )


class BridgeNetwork:
    """The ``bridge`` pod network (cni/1.1 ``CNIPlugin``)."""

    def __init__(self, options: BridgeOptions) -> None:
        self.options = options
        self.ipam = HostLocalIPAM(os.path.join(options.state_dir, "networks", options.name), options.pod_cidr)
        self.gateway = self.ipam.gateway
        self.prefixlen = options.pod_cidr.prefixlen
        self.bridge_mac = _bridge_mac(options.bridge)
        #: ``net.ipv4.ip_forward`` before this instance set it (None: not touched yet).
        self.previous_ip_forward: str | None = None
        self._setup_lock = threading.Lock()
        self._bridge_index: int | None = None
        self._host_ready = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BridgeNetwork:
        """The registered factory: ``options`` as in the README (``podCIDR`` required)."""
        return cls(BridgeOptions.parse(options))

    # ----------------------------------------------------------------------------- host setup

    def _ensure_bridge(self, ipr: Any, *, force: bool = False) -> int:
        """Create (or adopt) the bridge with the gateway address, up; then masquerade and ip_forward, once."""
        with self._setup_lock:
            if self._bridge_index is not None and not force:
                return self._bridge_index
            name = self.options.bridge
            link = self._get_link(ipr, name)
            if link is None:
                try:
                    ipr.link("add", ifname=name, kind="bridge", address=self.bridge_mac, mtu=self.options.mtu)
                except Exception as exc:
                    if _netlink_code(exc) != errno.EEXIST:
                        raise
                link = ipr.link("get", ifname=name)[0]
            info = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            if info != "bridge":
                raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "not a bridge",
                               f"link {name!r} exists and is a {info or 'non-bridge'} device")
            index = int(link["index"])
            try:
                ipr.addr("add", index=index, address=str(self.gateway), prefixlen=self.prefixlen)
            except Exception as exc:
                if _netlink_code(exc) != errno.EEXIST:
                    raise
            ipr.link("set", index=index, state="up")
            if not self._host_ready:
                if self.options.ip_forward:
                    previous = masquerade.enable_ip_forward()
                    if self.previous_ip_forward is None:
                        self.previous_ip_forward = previous
                if self.options.ip_masq:
                    masquerade.ensure(self.options.nft_table, self.options.pod_cidr)
                self._host_ready = True
            self._bridge_index = index
            return index

    @staticmethod
    def _get_link(ipr: Any, name: str) -> Any:
        """The link message of ``name``, or None."""
        try:
            return ipr.link("get", ifname=name)[0]
        except Exception as exc:
            if _netlink_code(exc) in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    # ---------------------------------------------------------------------------------- ADD

    def _add(self, request: AttachmentRequest) -> Result:
        try:
            netns_fd = os.open(request.netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "network namespace not found",
                           f"{request.netns}: {exc}") from None
        host = veth_name(request.container_id, request.ifname)
        ip = self.ipam.allocate(request.container_id, request.ifname)
        created = False
        try:
            with _ipr() as ipr:
                bridge = self._ensure_bridge(ipr)
                for attempt in (1, 2):
                    try:
                        ipr.link("add", ifname=host, kind="veth", mtu=self.options.mtu,
                                 peer={"ifname": request.ifname, "net_ns_fd": netns_fd, "mtu": self.options.mtu},
                                 master=bridge, state="up")
                        break
                    except Exception as exc:
                        code = _netlink_code(exc)
                        if code == errno.EEXIST:
                            raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "interface already exists",
                                           f"{host} on the host or {request.ifname} in {request.netns}") from None
                        if code == errno.ENODEV and attempt == 1:  # the bridge vanished: recreate it
                            bridge = self._ensure_bridge(ipr, force=True)
                            continue
                        raise
                created = True
            # sysfs rather than two more netlink round trips (a third of an ADD's time in pyroute2)
            port = Path("/sys/class/net") / host
            if self.options.hairpin:
                (port / "brport" / "hairpin_mode").write_text("1")
            host_mac = (port / "address").read_text().strip()
            os.close(netns_fd)
            netns_fd = -1
            enter(request.netns)
            with _ipr() as ipr:
                ipr.link("set", index=1, state="up")  # lo is ifindex 1 in every netns
                pod_link = ipr.link("get", ifname=request.ifname)[0]
                index = pod_link["index"]
                ipr.addr("add", index=index, address=str(ip), prefixlen=self.prefixlen)
                ipr.link("set", index=index, state="up")
                try:
                    ipr.route("add", dst="0.0.0.0/0", gateway=str(self.gateway), oif=index)
                    default_route = True
                except Exception as exc:  # a second interface: the pod has its default route already
                    if _netlink_code(exc) != errno.EEXIST:
                        raise
                    default_route = False
                pod_mac = pod_link.get("IFLA_ADDRESS")
        except BaseException as exc:
            if netns_fd >= 0:
                os.close(netns_fd)
            if created:
                self._delete_link(host)
            self.ipam.release(request.container_id, request.ifname)
            if isinstance(exc, CNIError) or not isinstance(exc, Exception):
                raise
            raise CNIError(ErrorCode.INTERNAL, "ADD failed", repr(exc)) from exc
        return Result(
            cni_version=request.cni_version,
            interfaces=(Interface(self.options.bridge, mac=self.bridge_mac),
                        Interface(host, mac=host_mac or ""),
                        Interface(request.ifname, mac=pod_mac or "", sandbox=request.netns)),
            ips=(IPConfig(f"{ip}/{self.prefixlen}", gateway=str(self.gateway), interface=2),),
            routes=(Route("0.0.0.0/0", gw=str(self.gateway)),) if default_route else (),
        )

    async def add(self, request: AttachmentRequest) -> Result:
        """ADD (see ``microkube_interfaces.cni.NetworkAttacher.add``). ``portMappings`` are not supported
        (UNSUPPORTED_FIELD): a pod with hostPorts needs a network with the portMappings capability."""
        request.validate()
        if request.runtime_config.port_mappings:
            raise CNIError(ErrorCode.UNSUPPORTED_FIELD, "portMappings are not supported by the bridge network",
                           ", ".join(f"{p.host_port}->{p.container_port}/{p.protocol}"
                                     for p in request.runtime_config.port_mappings))
        return await in_thread(lambda: self._add(request), "microkube-cni-add")

    # ---------------------------------------------------------------------------------- DEL

    def _delete_link(self, name: str) -> bool:
        """Delete a host link by name; False when it did not exist."""
        with _ipr() as ipr:
            try:
                ipr.link("del", ifname=name)
            except Exception as exc:
                if _netlink_code(exc) in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                    return False
                raise
        return True

    def _link_missing(self, exc: BaseException) -> bool:
        return _netlink_code(exc) in (errno.ENODEV, errno.ENOENT)

    def _delete(self, request: AttachmentRequest) -> None:
        # The interface first, then the address: an address is never handed out while its old veth exists.
        # Deleting the host end removes the peer in the pod netns too (if the netns is gone, both are gone).
        try:
            self._delete_link(veth_name(request.container_id, request.ifname))
        except Exception as exc:
            raise CNIError(ErrorCode.INTERNAL, "cannot delete the veth pair", repr(exc)) from exc
        self.ipam.release(request.container_id, request.ifname)

    async def delete(self, request: AttachmentRequest) -> None:
        """DEL: idempotent; a missing netns, veth or allocation is success."""
        request.validate(need_netns=False)
        await in_thread(lambda: self._delete(request), "microkube-cni-del")

    # -------------------------------------------------------------------------------- CHECK

    def _check(self, request: AttachmentRequest, previous: Result | None) -> None:
        ip = self.ipam.lookup(request.container_id, request.ifname)
        if ip is None:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "no such attachment",
                           f"container {request.container_id} interface {request.ifname} holds no address")
        want = f"{ip}/{self.prefixlen}"
        if previous is not None and previous.ips and want not in [i.address for i in previous.ips]:
            raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "address differs from the previous result",
                           f"allocated {want}, previous result {[i.address for i in previous.ips]}")
        host = veth_name(request.container_id, request.ifname)
        with _ipr() as ipr:
            link = self._get_link(ipr, host)
            if link is None:
                raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "host veth missing", host)
            master = link.get("IFLA_MASTER")
            bridge = self._get_link(ipr, self.options.bridge)
            if bridge is None or master != bridge["index"]:
                raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "host veth not on the bridge",
                               f"{host} master {master}, bridge {self.options.bridge}")
        try:
            enter(request.netns)
        except OSError as exc:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "network namespace not found",
                           f"{request.netns}: {exc}") from None
        with _ipr() as ipr:
            found = ipr.link_lookup(ifname=request.ifname)
            if not found:
                raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "interface missing in the pod",
                               f"{request.ifname} in {request.netns}")
            addresses = {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=found[0], family=2)}
            if want not in addresses:
                raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "address missing in the pod",
                               f"{request.ifname} has {sorted(addresses)}, expected {want}")
            # The default route: via our gateway when ADD's result says so, else any (a second interface
            # leaves the pod's existing default route alone).
            gateways = {r.get("RTA_GATEWAY") for r in ipr.get_routes(family=2) if r["dst_len"] == 0}
            wanted = {r.gw for r in previous.routes if r.dst == "0.0.0.0/0"} if previous is not None else set()
            if not gateways or not wanted <= gateways:
                raise CNIError(ErrorCode.ATTACHMENT_BROKEN, "default route missing in the pod",
                               f"expected a default route via {sorted(wanted) or 'any gateway'}, found {gateways}")

    async def check(self, request: AttachmentRequest, previous: Result | None = None) -> None:
        """CHECK: the allocation, the host veth on the bridge, the pod interface with its address and the
        default route. Raises UNKNOWN_CONTAINER (no allocation, no netns) or ATTACHMENT_BROKEN."""
        request.validate()
        await in_thread(lambda: self._check(request, previous), "microkube-cni-check")

    # ------------------------------------------------------------------------------- STATUS

    def _status(self) -> None:
        if self.ipam.free() <= 0:
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "no free address",
                           f"every address of {self.options.pod_cidr} is allocated")
        if not os.access(self.ipam.directory, os.W_OK):
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "IPAM state directory not writable",
                           str(self.ipam.directory))
        with _ipr() as ipr:
            link = self._get_link(ipr, self.options.bridge)
            if link is None:
                return  # ADD creates it
            kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            if kind != "bridge":
                raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "not a bridge",
                               f"link {self.options.bridge!r} is a {kind or 'non-bridge'} device")
            if link.get("state") != "up":
                raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "bridge down", self.options.bridge)

    async def status(self) -> None:
        """STATUS: raises PLUGIN_NOT_AVAILABLE when the pool is exhausted, the state directory is not writable,
        or the bridge name is taken by something else or the bridge is down. A bridge not yet created is fine."""
        await in_thread(self._status, "microkube-cni-status")

    # ----------------------------------------------------------------------------------- GC

    def _gc(self, valid: Sequence[Attachment]) -> None:
        keep = {(a.container_id, a.ifname) for a in valid}
        keep_links = {veth_name(c, i) for c, i in keep}
        with _ipr() as ipr:
            bridge = self._get_link(ipr, self.options.bridge)
            if bridge is not None:
                for link in ipr.get_links():
                    name = link.get("IFLA_IFNAME") or ""
                    if (link.get("IFLA_MASTER") == bridge["index"] and name.startswith(VETH_PREFIX)
                            and name not in keep_links):
                        try:
                            ipr.link("del", index=link["index"])
                        except Exception as exc:
                            if not self._link_missing(exc):
                                raise
        self.ipam.release_except(keep)

    async def gc(self, valid: Sequence[Attachment]) -> None:
        """GC: delete our veths on our bridge and release addresses of attachments not in ``valid``."""
        await in_thread(lambda: self._gc(valid), "microkube-cni-gc")

    # ------------------------------------------------------------------------------ VERSION

    async def version(self) -> VersionResult:
        return VersionResult(supported_versions=COMPATIBLE_SPEC_VERSIONS)

    # ------------------------------------------------------------------------ uninstall/tests

    def _teardown(self, restore_ip_forward: bool) -> None:
        self._gc(())
        self._delete_link(self.options.bridge)
        if self.options.ip_masq:
            masquerade.remove(self.options.nft_table, self.options.pod_cidr)
        if restore_ip_forward and self.previous_ip_forward is not None:
            masquerade.set_ip_forward(self.previous_ip_forward)
        with self._setup_lock:
            self._bridge_index = None
            self._host_ready = False

    async def teardown(self, *, restore_ip_forward: bool = False) -> None:
        """Remove every attachment, the bridge and the masquerade rules (node uninstall, tests)."""
        await in_thread(lambda: self._teardown(restore_ip_forward), "microkube-cni-teardown")
