"""The ptp pod network (cni/1.1): per attachment a veth pair, a /32 address and routes, no bridge.

Per ADD, for container C attached as ``ifname`` in namespace N:

- host: a veth ``ptp<12 hex>`` (a hash of the state directory, C and ``ifname``, so DEL finds it without state), up,
  tagged with an alias naming this network (GC finds leftovers by it), IPv4 forwarding on for packets it receives
  (pod to pod through the host; the host-wide ``ip_forward`` is left alone), and a route ``<ip>/32 dev ptp…``;
- pod: the peer, created straight inside N as ``ifname`` (so no host interface is ever renamed), up with ``lo``,
  ``<ip>/32``, an on-link route to the gateway 169.254.1.1, ``default via 169.254.1.1``, and a permanent neighbour
  entry mapping 169.254.1.1 to the host veth's MAC: the pod's traffic goes to the host without any ARP for the
  gateway, and the host needs no address on the veth and no proxy ARP;
- the address comes from ``podCIDR`` through one allocation file per address under ``<stateDir>/ptp/addresses``.

Deleting the host veth removes its peer and both routes, so DEL is: delete the veth if present, release the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
from collections.abc import Mapping, Sequence
from typing import Any

from microkube_interfaces.cni import (
    COMPATIBLE_SPEC_VERSIONS,
    SPEC_VERSION,
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
from microkube_ptp.config import GATEWAY, PTPConfig
from microkube_ptp.ipam import AddressPool
from microkube_ptp.netns import enter_netns, in_thread, open_netns

_SCOPE_LINK = 253
_IFF_UP = 0x1
_NUD_PERMANENT = 0x80
_ENODEV, _EEXIST = 19, 17
_DEFAULT = "0.0.0.0/0"


def _netlink_error(what: str, exc: Exception) -> CNIError:
    code = getattr(exc, "code", 0)
    return CNIError(ErrorCode.INTERNAL, what, f"{os.strerror(code) if code else exc}")


class PTPNetwork:
    """A cni/1.1 ``CNIPlugin``. Build it with ``PTPNetwork.from_options(options)``; blocking work runs in threads.
    It holds nothing between calls (each opens and closes its own netlink sockets), so it needs no closing."""

    def __init__(self, config: PTPConfig) -> None:
        self.config = config
        root = config.state_dir / "ptp"
        self.pool = AddressPool(root / "addresses", config.pod_cidr)
        self.pool.create()
        #: Identifies this network's host veths (their alias) and salts their names.
        self.key = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:12]
        self.alias = f"microkube-ptp {self.key}"
        #: ADDs still running in their thread, by attachment: a DEL waits for them (an ADD cancelled by its caller
        #: finishes in its thread, and the DEL that follows must see what it made).
        self._running: dict[Attachment, asyncio.Future[Any]] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PTPNetwork:
        """The registered factory: options → network. ``CNIError`` 2 or 7 names the offending field."""
        return cls(PTPConfig.from_options(options))

    def host_ifname(self, attachment: Attachment) -> str:
        digest = hashlib.sha256(f"{self.key}\0{attachment.container_id}\0{attachment.ifname}".encode()).hexdigest()
        return "ptp" + digest[:12]

    # -- ADD -----------------------------------------------------------------------------------------

    async def add(self, request: AttachmentRequest) -> Result:
        request.validate()
        attachment = Attachment(request.container_id, request.ifname)
        if attachment in self._running:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, "an ADD of this attachment is still running", attachment.ifname)
        future = in_thread(lambda: self._add(request, attachment))
        self._running[attachment] = future

        def finished(done: asyncio.Future[Result]) -> None:
            self._running.pop(attachment, None)
            if not done.cancelled():
                done.exception()  # retrieved: a caller that was cancelled meanwhile never will

        future.add_done_callback(finished)
        return await asyncio.shield(future)

    def _add(self, request: AttachmentRequest, attachment: Attachment) -> Result:
        fd = open_netns(request.netns)
        try:
            if self.pool.owned_by(attachment):
                raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "attachment exists",
                               f"{request.container_id}/{request.ifname} already has an address; DEL it first")
            address = self.pool.allocate(attachment)
            try:
                return self._plumb(request, attachment, fd, address)
            except BaseException:
                self.pool.release(address)
                raise
        finally:
            os.close(fd)

    def _plumb(self, request: AttachmentRequest, attachment: Attachment, fd: int,
               address: ipaddress.IPv4Address) -> Result:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        host_name = self.host_ifname(attachment)
        mtu = {"mtu": self.config.mtu} if self.config.mtu else {}
        with IPRoute() as host:
            if host.link_lookup(ifname=host_name):
                raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "attachment exists",
                               f"host interface {host_name} of {request.container_id}/{request.ifname} is present")
            try:
                host.link("add", ifname=host_name, kind="veth", **mtu,
                          peer={"ifname": request.ifname, "net_ns_fd": fd, **mtu})
            except NetlinkError as exc:
                if exc.code == _EEXIST:
                    raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "attachment exists",
                                   f"an interface {request.ifname} already exists in {request.netns}") from None
                raise _netlink_error(f"cannot create the veth pair {host_name}/{request.ifname}", exc) from None
            try:
                (host_index,) = host.link_lookup(ifname=host_name)
                host.link("set", index=host_index, ifalias=self.alias, state="up")
                with open(f"/proc/sys/net/ipv4/conf/{host_name}/forwarding", "w") as sysctl:
                    sysctl.write("1")
                host.route("replace", dst=f"{address}/32", oif=host_index, scope=_SCOPE_LINK)
                host_mac = str(host.get_links(host_index)[0].get("address"))
                enter_netns(fd)  # this thread now works in the pod's namespace; `host` stays in the host's
                with IPRoute() as pod:
                    (index,) = pod.link_lookup(ifname=request.ifname)
                    for lo in pod.link_lookup(ifname="lo"):
                        pod.link("set", index=lo, state="up")
                    pod.link("set", index=index, state="up")
                    pod.addr("add", index=index, address=str(address), prefixlen=32)
                    pod.route("add", dst=f"{GATEWAY}/32", oif=index, scope=_SCOPE_LINK)
                    pod.route("add", dst=_DEFAULT, gateway=str(GATEWAY), oif=index)
                    pod.neigh("add", dst=str(GATEWAY), lladdr=host_mac, ifindex=index, state=_NUD_PERMANENT)
                    pod_mac = str(pod.get_links(index)[0].get("address"))
            except BaseException as exc:
                try:
                    host.link("del", ifname=host_name)
                except NetlinkError:
                    pass
                if isinstance(exc, NetlinkError):
                    raise _netlink_error(f"cannot configure {host_name}/{request.ifname}", exc) from None
                if isinstance(exc, OSError):  # the forwarding sysctl (a read-only /proc/sys)
                    raise CNIError(ErrorCode.IO_FAILURE, f"cannot configure {host_name}",
                                   f"{exc.filename}: {exc.strerror}") from None
                raise
        return Result(
            cni_version=request.cni_version,
            interfaces=(Interface(host_name, host_mac, mtu=self.config.mtu),
                        Interface(request.ifname, pod_mac, sandbox=request.netns, mtu=self.config.mtu)),
            ips=(IPConfig(f"{address}/32", str(GATEWAY), interface=1),),
            routes=(Route(f"{GATEWAY}/32", scope=_SCOPE_LINK), Route(_DEFAULT, str(GATEWAY))),
        )

    # -- DEL -----------------------------------------------------------------------------------------

    async def delete(self, request: AttachmentRequest) -> None:
        request.validate(need_netns=False)
        attachment = Attachment(request.container_id, request.ifname)
        running = self._running.get(attachment)
        if running is not None:
            await asyncio.wait([running])
        await asyncio.to_thread(self._delete, attachment)

    def _delete(self, attachment: Attachment) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as host:
            self._delete_link(host, self.host_ifname(attachment))
        self.pool.release_owner(attachment)

    @staticmethod
    def _delete_link(host: Any, name: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            host.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code != _ENODEV:
                raise _netlink_error(f"cannot delete {name}", exc) from None

    # -- CHECK ---------------------------------------------------------------------------------------

    async def check(self, request: AttachmentRequest, previous: Result | None = None) -> None:
        request.validate()
        await in_thread(lambda: self._check(request, previous))

    def _check(self, request: AttachmentRequest, previous: Result | None) -> None:
        from pyroute2 import IPRoute

        attachment = Attachment(request.container_id, request.ifname)
        owned = self.pool.owned_by(attachment)
        if not owned:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "unknown attachment",
                           f"no address is allocated to {request.container_id}/{request.ifname}")
        address = owned[0]
        host_name = self.host_ifname(attachment)

        def broken(what: str) -> CNIError:
            return CNIError(ErrorCode.ATTACHMENT_BROKEN, "attachment broken", what)

        if previous is not None:
            if f"{address}/32" not in [ip.address for ip in previous.ips]:
                raise broken(f"{address} is allocated, the previous result has {previous.addresses()}")
            names = {i.name for i in previous.interfaces}
            if not {host_name, request.ifname} <= names:
                raise broken(f"the previous result names {sorted(names)}, not {host_name} and {request.ifname}")
        fd = open_netns(request.netns)
        try:
            with IPRoute() as host:
                found = host.link_lookup(ifname=host_name)
                if not found:
                    raise broken(f"host interface {host_name} is missing")
                link = host.get_links(found[0])[0]
                if not link["flags"] & _IFF_UP:
                    raise broken(f"host interface {host_name} is down")
                if not _has_route(host, f"{address}/32", oif=found[0]):
                    raise broken(f"host route {address}/32 dev {host_name} is missing")
                host_mac = link.get("address")
                enter_netns(fd)
                with IPRoute() as pod:
                    indexes = pod.link_lookup(ifname=request.ifname)
                    if not indexes:
                        raise broken(f"{request.ifname} is missing in {request.netns}")
                    (index,) = indexes
                    if pod.get_links(index)[0].get("link") != found[0]:
                        raise broken(f"{request.ifname} is not the peer of {host_name}")
                    addresses = {(a.get("address"), a["prefixlen"]) for a in pod.addr("dump", index=index)}
                    if (str(address), 32) not in addresses:
                        raise broken(f"{address}/32 is missing on {request.ifname}")
                    if not _has_route(pod, f"{GATEWAY}/32", oif=index):
                        raise broken(f"the on-link route to {GATEWAY} is missing")
                    if not _has_route(pod, _DEFAULT, oif=index, gateway=str(GATEWAY)):
                        raise broken(f"the default route via {GATEWAY} is missing")
                    neighbours = {(n.get("dst"), n.get("lladdr")) for n in pod.neigh("dump", ifindex=index)
                                  if n["state"] & _NUD_PERMANENT}
                    if (str(GATEWAY), host_mac) not in neighbours:
                        raise broken(f"the neighbour entry {GATEWAY} → {host_mac} is missing")
        finally:
            os.close(fd)

    # -- STATUS, GC, VERSION -------------------------------------------------------------------------

    async def status(self) -> None:
        free = await asyncio.to_thread(self._status)
        if free <= 0:
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"no free address in podCIDR {self.config.pod_cidr}",
                           "delete pods or give the node a larger podCIDR")

    def _status(self) -> int:
        if not os.access(self.pool.directory, os.W_OK | os.X_OK):
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"cannot write to {self.pool.directory}",
                           "fix its permissions or choose another stateDir")
        return self.pool.free()

    async def gc(self, valid: Sequence[Attachment]) -> None:
        keep = set(valid)
        await asyncio.to_thread(self._gc, keep)

    def _gc(self, keep: set[Attachment]) -> None:
        from pyroute2 import IPRoute

        keep_names = {self.host_ifname(a) for a in keep}
        with IPRoute() as host:
            for address, owner in self.pool.allocations().items():
                if owner is None or owner not in keep:
                    if owner is not None:
                        self._delete_link(host, self.host_ifname(owner))
                    self.pool.release(address)
            for link in host.link("dump"):
                name = link.get("ifname")
                if link.get("ifalias") == self.alias and name not in keep_names:
                    self._delete_link(host, name)
        self.pool.remove_orphaned_temporaries()

    async def version(self) -> VersionResult:
        return VersionResult(SPEC_VERSION, COMPATIBLE_SPEC_VERSIONS)


def _has_route(ipr: Any, dst: str, *, oif: int, gateway: str | None = None) -> bool:
    network = ipaddress.ip_network(dst)
    for route in ipr.route("dump", family=2):
        if route["dst_len"] != network.prefixlen or route.get("oif") != oif:
            continue
        if (route.get("dst") or "0.0.0.0") != str(network.network_address):
            continue
        if gateway is None or route.get("gateway") == gateway:
            return True
    return False
