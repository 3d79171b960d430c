"""The cni/1.1 conformance suite (microkube_interfaces.cni.CNIPlugin), after CNI spec 1.1.0 (``SPEC.md``).

A vendor subclasses ``CNIConformance`` and supplies a ``cni_plugin`` fixture that builds its network (and tears it
down afterwards); the suite creates real network namespaces (``netns_factory``, overridable) and looks at them from
outside: the interface, its addresses and routes as the kernel holds them, the host's interfaces before and after.
Optional behaviour is gated by ``CNICapabilities`` (the ``capabilities`` fixture; by default the plugin's
``cni_capabilities`` attribute when it has one, else everything). ``invalid_configs`` (with ``cni_factory``) lists
network configurations the factory or the first ADD must reject with code 7.

Every test's docstring names the section of SPEC.md it enforces ("§2 DEL" = section 2, operation DEL). Needs root:
namespaces are made with ``unshare(CLONE_NEWNET)`` in a throwaway thread and bind-mounted on a file, without forking;
the kernel is read through a few lines of rtnetlink, so the suite depends on nothing but pytest.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import json
import os
import re
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from microkube_interfaces.cni import (
    COMPATIBLE_SPEC_VERSIONS,
    SPEC_VERSION,
    Attachment,
    AttachmentRequest,
    CNIError,
    CNIPlugin,
    ErrorCode,
    NetworkFactory,
    Result,
)
from microkube_interfaces.conformance._helpers import assert_implements, expect_error

T = TypeVar("T")
RULE = "cni/1.1"

# ------------------------------------------------------------------------------------ capabilities


@dataclass(frozen=True)
class CNICapabilities:
    """What the suite may expect of a plugin; a vendor turns off what its plugin does not do."""

    #: CHECK verifies the attachment (§2 CHECK); off: CHECK tests skip.
    check: bool = True
    #: STATUS is meaningful (§2 STATUS).
    status: bool = True
    #: GC releases stale attachments (§2 GC).
    gc: bool = True
    #: ADD creates the container interface and assigns addresses (an "interface" plugin, not only a chained one).
    assigns_addresses: bool = True
    #: ADD installs the routes it reports.
    routes: bool = True
    #: Concurrent ADDs of different containers are allowed (§3 Lifecycle: plugins must handle them).
    concurrent: bool = True
    #: How many attachments the concurrency test makes.
    concurrency: int = 8
    #: Spec versions to exercise ADD with (each must be in VERSION's list); default: the interface's version.
    versions: tuple[str, ...] = (SPEC_VERSION,)
    #: Extra ``AttachmentRequest.args`` (CNI_ARGS) every request carries.
    args: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- namespaces (no fork)

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2


def _check(ret: int, what: str) -> None:
    if ret != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _in_thread(fn: Callable[[], T]) -> Awaitable[T]:
    """Run ``fn`` in a new thread that exits afterwards (a thread keeps the namespace it entered)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=run, name="cni-conformance-netns", daemon=True).start()
    return future


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, _CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def create_netns_sync(path: str) -> None:
    """Create a network namespace bound to ``path`` (call from a thread that may be left in it)."""
    Path(path).touch(mode=0o444, exist_ok=False)
    try:
        _check(_libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, _MS_BIND, None), f"bind mount {path}")
    except BaseException:
        os.unlink(path)
        raise


async def create_netns(path: str) -> str:
    await _in_thread(lambda: create_netns_sync(path))
    return path


def delete_netns_sync(path: str) -> None:
    """Unmount and remove a namespace file made by ``create_netns``; absent is fine."""
    if _libc.umount2(path.encode(), _MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        raise OSError(ctypes.get_errno(), f"umount {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------ rtnetlink, read-mostly

_RTM_DELLINK, _RTM_GETADDR, _RTM_GETROUTE = 17, 22, 26
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 1, 4, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3


def _netlink(msg_type: int, flags: int, body: bytes) -> list[tuple[bytes, dict[int, bytes]]]:
    """One rtnetlink request in the calling thread's netns; the reply messages as (fixed header, attributes)."""
    fixed = {_RTM_GETADDR: 8, _RTM_GETROUTE: 12}.get(msg_type, 16)
    out: list[tuple[bytes, dict[int, bytes]]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.sendall(struct.pack("=IHHII", 16 + len(body), msg_type, _NLM_F_REQUEST | flags, 1, 0) + body)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
                payload = data[offset + 16:offset + length]
                offset += (length + 3) & ~3
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return out
                attrs: dict[int, bytes] = {}
                pos = fixed
                while pos + 4 <= len(payload):
                    alen, atype = struct.unpack_from("=HH", payload, pos)
                    attrs.setdefault(atype & 0x3FFF, payload[pos + 4:pos + alen])
                    pos += (alen + 3) & ~3
                out.append((payload[:fixed], attrs))
            if not flags & _NLM_F_DUMP:
                return out


@dataclass(frozen=True)
class NetnsView:
    """What the kernel holds in one network namespace: interface names, addresses per interface, routes."""

    links: dict[str, int]
    addresses: dict[int, set[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]
    routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int]]  # (dst, gateway, table)


def _ip(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(raw)


def read_netns_sync() -> NetnsView:
    """The calling thread's namespace as a NetnsView."""
    links = {name: index for index, name in socket.if_nameindex()}
    addresses: dict[int, set[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {}
    for header, attrs in _netlink(_RTM_GETADDR, _NLM_F_DUMP, struct.pack("=BBBBI", 0, 0, 0, 0, 0)):
        _, prefixlen, _, _, index = struct.unpack("=BBBBI", header)
        raw = attrs.get(2) or attrs.get(1)  # IFA_LOCAL, else IFA_ADDRESS
        if raw:
            addresses.setdefault(index, set()).add(ipaddress.ip_interface(f"{_ip(raw)}/{prefixlen}"))
    routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int]] = []
    for header, attrs in _netlink(_RTM_GETROUTE, _NLM_F_DUMP, struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0)):
        family, dst_len, _, _, table, _, _, _, _ = struct.unpack("=BBBBBBBBI", header)
        if 1 in attrs:
            dst = ipaddress.ip_network(f"{_ip(attrs[1])}/{dst_len}", strict=False)
        else:
            dst = ipaddress.ip_network("0.0.0.0/0" if family == socket.AF_INET else "::/0")
        gateway = str(_ip(attrs[5])) if 5 in attrs else ""
        if 15 in attrs:
            (table,) = struct.unpack("=I", attrs[15])
        routes.append((dst, gateway, table))
    return NetnsView(links, addresses, routes)


async def read_netns(path: str) -> NetnsView:
    def run() -> NetnsView:
        _enter(path)
        return read_netns_sync()

    return await _in_thread(run)


async def host_links() -> set[str]:
    """Interface names in the host (the test process's) network namespace."""
    return {name for _, name in socket.if_nameindex()}


async def delete_link(path: str, ifname: str) -> None:
    """Delete interface ``ifname`` inside the namespace at ``path`` (breaks an attachment behind the plugin)."""

    def run() -> None:
        _enter(path)
        index = socket.if_nametoindex(ifname)
        _netlink(_RTM_DELLINK, _NLM_F_ACK, struct.pack("=BxHiII", 0, 0, index, 0, 0))

    await _in_thread(run)


# ---------------------------------------------------------------------------------------------- spec

#: Keys of the spec's result objects (§5 ADD Success).
RESULT_KEYS = {"cniVersion", "interfaces", "ips", "routes", "dns"}
INTERFACE_KEYS = {"name", "mac", "mtu", "sandbox", "socketPath", "pciID"}
IP_KEYS = {"address", "gateway", "interface"}
ROUTE_KEYS = {"dst", "gw", "mtu", "advmss", "priority", "table", "scope"}
DNS_KEYS = {"nameservers", "domain", "search", "options"}
_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")

NetnsFactory = Callable[[str], Awaitable[str]]
#: Makes container ids unique to this test process.
_RUN = f"{os.getpid():x}{os.urandom(3).hex()}"


class CNIConformance:
    """Subclass this and provide a ``cni_plugin`` fixture yielding a ready ``CNIPlugin`` (cleaned up afterwards).

    Optional overrides: ``capabilities`` (a ``CNICapabilities``), ``cni_factory`` + ``invalid_configs`` (configs
    the factory or the first ADD must reject with code 7), ``netns_factory`` (how to make a namespace).
    """

    # ------------------------------------------------------------------------------- fixtures

    @pytest.fixture
    def cni_plugin(self) -> CNIPlugin:  # pragma: no cover - vendors override
        raise NotImplementedError("provide a `cni_plugin` fixture that yields a ready CNI plugin")

    @pytest.fixture
    def capabilities(self, cni_plugin: CNIPlugin) -> CNICapabilities:
        found = getattr(cni_plugin, "cni_capabilities", None)
        return found if isinstance(found, CNICapabilities) else CNICapabilities()

    @pytest.fixture
    def cni_factory(self) -> NetworkFactory | None:
        """The registered factory (options → plugin); None skips the invalid-config test."""
        return None

    @pytest.fixture
    def invalid_configs(self) -> Sequence[Mapping[str, Any]]:
        """Factory options that are invalid network configurations (§5 Error code 7)."""
        return ()

    @pytest.fixture
    async def netns_factory(self, tmp_path: Path) -> AsyncIterator[NetnsFactory]:
        """``await make(name)`` → the path of a fresh network namespace; all are removed afterwards."""
        directory = tmp_path / "netns"
        directory.mkdir()
        made: list[str] = []

        async def make(name: str) -> str:
            path = str(directory / name)
            await create_netns(path)
            made.append(path)
            return path

        yield make
        for path in made:
            delete_netns_sync(path)

    @pytest.fixture
    async def netns(self, netns_factory: NetnsFactory) -> str:
        return await netns_factory("pod0")

    # -------------------------------------------------------------------------------- helpers

    @staticmethod
    def request(name: str, netns: str, capabilities: CNICapabilities, ifname: str = "eth0",
                version: str = SPEC_VERSION) -> AttachmentRequest:
        """A request for container ``<name>-<run token>``: ids are unique per test process, since plugins may
        derive host-global names (veths, chains) from them and other test processes may run at the same time."""
        return AttachmentRequest(f"{name}-{_RUN}", netns, ifname, args=dict(capabilities.args), cni_version=version)

    @staticmethod
    async def expect_error(call: Awaitable[Any], *codes: int, shown: str = "", when: str = "") -> CNIError:
        """Await ``call``, which must raise ``CNIError`` (with one of ``codes``, when given). ``shown`` is the call
        as the failure message shows it, ``when`` the situation the rule is about."""
        shown = shown or f"{getattr(getattr(call, 'cr_code', None), 'co_name', 'the call')}(...)"
        when = when or "this call"
        wanted = " or ".join(f"{int(c)} ({ErrorCode(c).name})" if c in ErrorCode._value2member_map_ else str(c)
                             for c in codes)
        fix = f"raise CNIError({' or '.join(_code_name(c) for c in codes)}, ...)" if codes else ""
        with expect_error(CNIError, shown, f"{RULE}: {when}", fix=fix) as info:
            await call
        if codes:
            assert int(info.value.code) in codes, (
                f"{shown} raised {info.value.to_json()}; {RULE} requires code {wanted} for {when} — {fix}")
        return info.value

    @staticmethod
    def host_interfaces(result: Result) -> set[str]:
        return {i.name for i in result.interfaces if not i.sandbox}

    # ------------------------------------------------------------------------------------ ADD

    async def test_implements_the_interface(self, cni_plugin: CNIPlugin) -> None:
        """§2 CNI operations: the plugin offers ADD, DEL, CHECK, STATUS, GC and VERSION as the cni/1.1 Protocol
        declares them, async and callable with its arguments (microkube_interfaces.compliance, the check the core
        runs on it)."""
        assert_implements(cni_plugin, "cni", "cni_plugin")

    async def test_add_result_shape(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§5 ADD Success: cniVersion is the one supplied; interfaces list the container interface with
        ``sandbox`` = CNI_NETNS; every ip is CIDR and its ``interface`` indexes ``interfaces``."""
        for n, version in enumerate(capabilities.versions):
            request = self.request(f"shape{n}", netns, capabilities, ifname=f"eth{n}", version=version)
            result = await cni_plugin.add(request)
            try:
                assert result.cni_version == version
                if not capabilities.assigns_addresses:
                    continue
                sandboxed = [i for i, iface in enumerate(result.interfaces) if iface.name == request.ifname]
                assert sandboxed, f"no interface {request.ifname} in {result.to_json()}"
                assert all(result.interfaces[i].sandbox == netns for i in sandboxed)
                assert result.ips, "an interface plugin reports the addresses it assigned"
                for ip in result.ips:
                    ipaddress.ip_interface(ip.address)
                    assert "/" in ip.address, f"{ip.address} is not in CIDR notation"
                    if ip.gateway:
                        ipaddress.ip_address(ip.gateway)
                    if ip.interface is not None:
                        assert 0 <= ip.interface < len(result.interfaces)
                assert any(ip.interface in sandboxed for ip in result.ips)
                for iface in result.interfaces:
                    assert iface.name
                    assert len(iface.name) <= 15
                    assert not iface.mac or _MAC.match(iface.mac), iface.mac
            finally:
                await cni_plugin.delete(request)

    async def test_add_configures_the_namespace(self, cni_plugin: CNIPlugin, netns: str,
                                                capabilities: CNICapabilities) -> None:
        """§2 ADD: the interface named CNI_IFNAME exists inside CNI_NETNS and holds the reported addresses;
        §5 ADD Success ``routes``: the reported routes are installed."""
        if not capabilities.assigns_addresses:
            pytest.skip("the plugin does not create interfaces (chained plugin)")
        request = self.request("conf0", netns, capabilities, ifname="net1")
        result = await cni_plugin.add(request)
        view = await read_netns(netns)
        assert "net1" in view.links, f"no net1 in the namespace: {sorted(view.links)}"
        index = view.links["net1"]
        for ip in result.ips:
            if ip.interface is not None and result.interfaces[ip.interface].sandbox == netns:
                configured = view.addresses.get(view.links[result.interfaces[ip.interface].name], set())
                assert ipaddress.ip_interface(ip.address) in configured, f"{ip.address} not in {configured}"
        assert view.addresses.get(index), "net1 holds no address"
        if capabilities.routes:
            for route in result.routes:
                dst = ipaddress.ip_network(route.dst, strict=False)
                matches = [r for r in view.routes if r[0] == dst and (route.table == 0 or r[2] == route.table)]
                assert matches, f"route {route.to_dict()} not installed: {view.routes}"
                if route.gw:
                    assert any(r[1] == route.gw for r in matches), f"route {route.to_dict()} has another gateway"
        await cni_plugin.delete(request)

    async def test_add_existing_attachment_fails(self, cni_plugin: CNIPlugin, netns: str,
                                                 capabilities: CNICapabilities) -> None:
        """§2 ADD: "If an interface of the requested name already exists in the container, the CNI plugin MUST
        return with an error"; the existing attachment stays intact."""
        request = self.request("dup0", netns, capabilities)
        first = await cni_plugin.add(request)
        await self.expect_error(cni_plugin.add(request), shown="add(<the same request again>)",
                                when="ADD of an attachment that exists")
        if capabilities.check:
            await cni_plugin.check(request, first)
        if capabilities.assigns_addresses:
            view = await read_netns(netns)
            assert ipaddress.ip_interface(first.ips[0].address) in view.addresses.get(view.links["eth0"], set())
        await cni_plugin.delete(request)

    async def test_add_to_missing_netns_fails_then_del(self, cni_plugin: CNIPlugin, tmp_path: Path,
                                                       netns: str, capabilities: CNICapabilities) -> None:
        """§3 Lifecycle: "A delete must still be executed even if the add fails": DEL after a failed ADD succeeds
        and leaves nothing that blocks a later ADD of the same container."""
        missing = str(tmp_path / "no-such-netns")
        request = self.request("failed0", missing, capabilities)
        await self.expect_error(cni_plugin.add(request), shown=f"add(<netns {missing}>)",
                                when="ADD into a network namespace that does not exist")
        await cni_plugin.delete(request)
        retry = replace(request, netns=netns)
        await cni_plugin.add(retry)
        await cni_plugin.delete(retry)

    async def test_invalid_ifname(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§2 Parameters / §5 Error code 4: an invalid CNI_IFNAME (empty, "." or "..", 16+ characters, "/", ":"
        or whitespace) or CNI_CONTAINERID is rejected with "invalid necessary environment variables"."""
        for ifname in ("", ".", "..", "a" * 16, "a/b", "a:b", "a b"):
            await self.expect_error(cni_plugin.add(self.request("badif0", netns, capabilities, ifname=ifname)),
                                    ErrorCode.INVALID_ENVIRONMENT, shown=f"add(<ifname {ifname!r}>)",
                                    when=f"the invalid CNI_IFNAME {ifname!r}")
        for container_id in ("", "-x", "a/b", "a b"):
            bad = replace(self.request("x", netns, capabilities), container_id=container_id)
            await self.expect_error(cni_plugin.add(bad), ErrorCode.INVALID_ENVIRONMENT,
                                    shown=f"add(<container id {container_id!r}>)",
                                    when=f"the invalid CNI_CONTAINERID {container_id!r}")
        view = await read_netns(netns)
        assert set(view.links) <= {"lo"}, f"a rejected ADD left {sorted(view.links)}"

    async def test_incompatible_version(self, cni_plugin: CNIPlugin, netns: str,
                                        capabilities: CNICapabilities) -> None:
        """§5 Error code 1 / §1 Version considerations: a cniVersion the plugin does not speak is rejected with
        "incompatible CNI version"."""
        await self.expect_error(cni_plugin.add(self.request("ver0", netns, capabilities, version="99.0.0")),
                                ErrorCode.INCOMPATIBLE_VERSION, shown="add(<cniVersion 99.0.0>)",
                                when="a cniVersion the plugin does not speak")

    async def test_invalid_network_config(self, cni_factory: NetworkFactory | None,
                                          invalid_configs: Sequence[Mapping[str, Any]], netns: str,
                                          capabilities: CNICapabilities) -> None:
        """§5 Error code 7: an invalid network configuration is rejected with "invalid network config" (when the
        network is built or, at the latest, on the first ADD)."""
        if cni_factory is None or not invalid_configs:
            pytest.skip("the vendor lists no invalid configurations")
        for config in invalid_configs:
            try:
                plugin = cni_factory(config)
            except CNIError as exc:
                rejected: CNIError | None = exc
            else:
                rejected = None
            if rejected is not None:
                assert rejected.code == ErrorCode.INVALID_NETWORK_CONFIG, rejected.to_json()
                continue
            request = self.request("badconf0", netns, capabilities)
            try:
                await self.expect_error(plugin.add(request), ErrorCode.INVALID_NETWORK_CONFIG,
                                        shown=f"add() on a network built from {config!r}",
                                        when="an invalid network configuration")
            finally:
                await plugin.delete(request)

    async def test_result_json_round_trip(self, cni_plugin: CNIPlugin, netns: str,
                                          capabilities: CNICapabilities) -> None:
        """§5 ADD Success: the result's JSON uses exactly the spec's keys and parses back to the same result."""
        request = self.request("json0", netns, capabilities)
        result = await cni_plugin.add(request)
        await cni_plugin.delete(request)
        raw = json.loads(result.to_json())
        assert raw["cniVersion"] == request.cni_version
        assert set(raw) <= RESULT_KEYS
        assert "dns" in raw
        assert set(raw["dns"]) <= DNS_KEYS
        assert all(set(i) <= INTERFACE_KEYS and "name" in i for i in raw.get("interfaces", []))
        assert all(set(i) <= IP_KEYS and "address" in i for i in raw.get("ips", []))
        assert all(set(r) <= ROUTE_KEYS and "dst" in r for r in raw.get("routes", []))
        assert Result.from_json(result.to_json()) == result

    async def test_concurrent_adds_get_distinct_addresses(self, cni_plugin: CNIPlugin, netns_factory: NetnsFactory,
                                                          capabilities: CNICapabilities) -> None:
        """§3 Lifecycle: "Plugins must handle being executed concurrently across different containers";
        different attachments never share an address."""
        if not capabilities.concurrent:
            pytest.skip("the plugin declares no concurrent ADDs")
        count = capabilities.concurrency
        paths = [await netns_factory(f"conc{i}") for i in range(count)]
        requests = [self.request(f"conc{i}", path, capabilities) for i, path in enumerate(paths)]
        results = await asyncio.gather(*(cni_plugin.add(r) for r in requests), return_exceptions=True)
        try:
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, failures
            if capabilities.assigns_addresses:
                addresses = [a for r in results if isinstance(r, Result) for a in r.addresses()]
                assert len(addresses) == len(set(addresses)) >= count, addresses
        finally:
            await asyncio.gather(*(cni_plugin.delete(r) for r in requests))

    # ------------------------------------------------------------------------------------ DEL

    async def test_del_is_idempotent(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§2 DEL: "Plugins MUST accept multiple DEL calls for the same (CNI_CONTAINERID, CNI_IFNAME) pair";
        the container interface is gone after the first."""
        request = self.request("del0", netns, capabilities)
        await cni_plugin.add(request)
        await cni_plugin.delete(request)
        if capabilities.assigns_addresses:
            assert "eth0" not in (await read_netns(netns)).links
        await cni_plugin.delete(request)

    async def test_del_never_added(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§2 DEL: best effort, success when the interface or any modification is missing (never added; with
        and without CNI_NETNS, which is optional for DEL)."""
        await cni_plugin.delete(self.request("never0", netns, capabilities))
        await cni_plugin.delete(self.request("never1", "", capabilities))

    async def test_del_after_netns_removed(self, cni_plugin: CNIPlugin, netns_factory: NetnsFactory,
                                           capabilities: CNICapabilities) -> None:
        """§2 DEL: the plugin cleans up "even if the container network namespace and/or container network
        interface no longer exist"; the attachment's host interfaces and address are released (re-ADD works)."""
        path = await netns_factory("gone0")
        request = self.request("gone0", path, capabilities)
        result = await cni_plugin.add(request)
        delete_netns_sync(path)
        await cni_plugin.delete(request)
        await cni_plugin.delete(replace(request, netns=""))
        leftover = self.host_interfaces(result) & await host_links()
        again = replace(request, netns=await netns_factory("gone0b"))
        leftover -= self.host_interfaces(await cni_plugin.add(again))  # shared ones (the bridge) come back
        for _ in range(40):  # the kernel destroys a removed namespace, and veth ends in it, asynchronously
            if not leftover:
                break
            await asyncio.sleep(0.05)
            leftover &= await host_links()
        await cni_plugin.delete(again)
        assert not leftover, f"DEL left host interfaces {sorted(leftover)}"

    async def test_no_host_interfaces_left(self, cni_plugin: CNIPlugin, netns_factory: NetnsFactory,
                                           capabilities: CNICapabilities) -> None:
        """§2 DEL: "undo any modifications applied in ADD": after DEL of every attachment no host interface
        the results name remains but the network's shared ones (those in every result, such as a bridge)."""
        results: list[Result] = []
        requests = []
        for i in range(3):
            requests.append(self.request(f"clean{i}", await netns_factory(f"clean{i}"), capabilities))
            results.append(await cni_plugin.add(requests[-1]))
        per_result = [self.host_interfaces(r) for r in results]
        shared = set.intersection(*per_result) if per_result else set()
        for request in requests:
            await cni_plugin.delete(request)
        own = set.union(*per_result) - shared
        left = own & await host_links()
        assert not left, f"left behind: {sorted(left)}"

    # ---------------------------------------------------------------------------------- CHECK

    async def test_check_after_add(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§2 CHECK: "The plugin must handle CHECK being called immediately after an ADD"; it succeeds with and
        without the previous result passed by the caller."""
        if not capabilities.check:
            pytest.skip("the plugin does not implement CHECK")
        request = self.request("chk0", netns, capabilities)
        result = await cni_plugin.add(request)
        await cni_plugin.check(request, result)
        await cni_plugin.check(request)
        await cni_plugin.delete(request)

    async def test_check_fails_when_interface_removed(self, cni_plugin: CNIPlugin, netns: str,
                                                      capabilities: CNICapabilities) -> None:
        """§2 CHECK: "The plugin should return an error if a resource included in the CNI Result type
        (interface, address or route) was created by the plugin … but is missing"; DEL still succeeds."""
        if not capabilities.check or not capabilities.assigns_addresses:
            pytest.skip("the plugin does not implement CHECK of interfaces")
        request = self.request("chk1", netns, capabilities)
        result = await cni_plugin.add(request)
        await delete_link(netns, "eth0")
        await self.expect_error(cni_plugin.check(request, result), shown="check(<eth0 deleted>)",
                                when="CHECK of an attachment whose interface is gone")
        await cni_plugin.delete(request)

    # --------------------------------------------------------------------------------- STATUS

    async def test_status_ready(self, cni_plugin: CNIPlugin, netns: str, capabilities: CNICapabilities) -> None:
        """§2 STATUS: "A plugin must exit with a zero (success) return code if the plugin is ready to service ADD
        requests" — before any ADD and while attachments exist; STATUS changes nothing."""
        if not capabilities.status:
            pytest.skip("the plugin does not implement STATUS")
        await cni_plugin.status()
        request = self.request("status0", netns, capabilities)
        await cni_plugin.add(request)
        await cni_plugin.status()
        if capabilities.check:
            await cni_plugin.check(request)
        await cni_plugin.delete(request)

    # ------------------------------------------------------------------------------------- GC

    async def test_gc_releases_only_stale(self, cni_plugin: CNIPlugin, netns_factory: NetnsFactory,
                                          capabilities: CNICapabilities) -> None:
        """§2 GC: the plugin removes resources of attachments not in ``cni.dev/valid-attachments`` and leaves the
        valid ones alone; GC is repeatable (idempotent)."""
        if not capabilities.gc:
            pytest.skip("the plugin does not implement GC")
        keep = self.request("gckeep", await netns_factory("gckeep"), capabilities)
        stale_path = await netns_factory("gcstale")
        stale = self.request("gcstale", stale_path, capabilities)
        kept = await cni_plugin.add(keep)
        dropped = await cni_plugin.add(stale)
        delete_netns_sync(stale_path)  # §2 GC: the plugin MAY assume the stale netns is gone
        valid = [Attachment(keep.container_id, keep.ifname)]
        await cni_plugin.gc(valid)
        await cni_plugin.gc(valid)
        if capabilities.check:
            await cni_plugin.check(keep, kept)
            await self.expect_error(cni_plugin.check(stale, dropped), shown="check(<an attachment GC released>)",
                                    when="CHECK of an attachment GC released")
        own = self.host_interfaces(dropped) - self.host_interfaces(kept)
        assert not own & await host_links(), f"GC left {sorted(own & await host_links())}"
        if capabilities.assigns_addresses:
            view = await read_netns(keep.netns)
            assert ipaddress.ip_interface(kept.ips[0].address) in view.addresses.get(view.links["eth0"], set())
        again = replace(stale, netns=await netns_factory("gcstale2"))
        await cni_plugin.add(again)  # the stale attachment's state is gone: the same id attaches again
        await cni_plugin.delete(again)
        await cni_plugin.delete(keep)

    # -------------------------------------------------------------------------------- VERSION

    async def test_version(self, cni_plugin: CNIPlugin, capabilities: CNICapabilities) -> None:
        """§2 VERSION / §5 VERSION Success: supportedVersions lists every version in use, including the
        interface's (1.1.0 or a compatible one)."""
        result = await cni_plugin.version()
        assert result.supported_versions
        assert set(capabilities.versions) <= set(result.supported_versions)
        assert set(COMPATIBLE_SPEC_VERSIONS) & set(result.supported_versions)
        raw = json.loads(result.to_json())
        assert set(raw) == {"cniVersion", "supportedVersions"}


def _code_name(code: int) -> str:
    return f"ErrorCode.{ErrorCode(code).name}" if code in ErrorCode._value2member_map_ else str(code)


__all__ = [
    "CNICapabilities",
    "CNIConformance",
    "NetnsView",
    "create_netns",
    "create_netns_sync",
    "delete_link",
    "delete_netns_sync",
    "host_links",
    "read_netns",
]
