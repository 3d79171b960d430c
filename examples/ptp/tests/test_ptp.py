"""What the conformance suite does not cover: traffic, configuration errors, allocation files, CHECK's detail."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from microkube_interfaces.cni import Attachment, AttachmentRequest, CNIError, CNIPlugin, ErrorCode
from microkube_interfaces.conformance.cni import (
    create_netns,
    create_netns_sync,
    delete_netns_sync,
    host_links,
    read_netns,
)
from microkube_ptp import GATEWAY, PTPNetwork
from microkube_ptp.ipam import AddressPool
from microkube_ptp.netns import enter_netns, in_thread, open_netns


def root(test: Callable[..., Any]) -> Callable[..., Any]:
    """Marked ``root`` and skipped without it (network namespaces, veth pairs)."""
    marked: Callable[..., Any] = pytest.mark.root(
        pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, veth pairs)")(test))
    return marked


CIDR = "10.214.0.0/24"
Netns = Callable[[str], Awaitable[str]]
#: Container ids unique to this process: host veth names derive from them.
RUN = f"{os.getpid():x}"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def network(state: Path) -> AsyncIterator[PTPNetwork]:
    net = PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state)})
    yield net
    await net.gc([])


@pytest.fixture
async def netns(tmp_path: Path) -> AsyncIterator[Netns]:
    made: list[str] = []

    async def make(name: str) -> str:
        path = str(tmp_path / f"ns-{name}")
        made.append(await create_netns(path))
        return path

    yield make
    for path in made:
        delete_netns_sync(path)


def request(name: str, netns: str = "", ifname: str = "eth0") -> AttachmentRequest:
    return AttachmentRequest(f"{name}-{RUN}", netns, ifname)


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"stateDir": "/x"}, "podCIDR"),
    ({"podCIDR": "10.0.0.0/8x", "stateDir": "/x"}, "podCIDR"),
    ({"podCIDR": "10.0.0.1/8", "stateDir": "/x"}, "podCIDR"),
    ({"podCIDR": "fd00::/64", "stateDir": "/x"}, "podCIDR"),
    ({"podCIDR": CIDR}, "stateDir"),
    ({"podCIDR": CIDR, "stateDir": "rel"}, "stateDir"),
    ({"podCIDR": CIDR, "stateDir": "/x", "mtu": 70000}, "mtu"),
    ({"podCIDR": CIDR, "stateDir": "/x", "mtu": True}, "mtu"),
])
def test_invalid_option_names_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(CNIError) as info:
        PTPNetwork.from_options(options)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert field in info.value.msg and info.value.details, info.value.to_json()


def test_unknown_option_is_unsupported_field(state: Path) -> None:
    """CNI code 2: the message carries the key and value, the details list what ptp accepts."""
    with pytest.raises(CNIError) as info:
        PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state), "mut": 1400})
    assert info.value.code == ErrorCode.UNSUPPORTED_FIELD
    assert "mut=1400" in info.value.msg and "mtu" in info.value.details


def test_options_as_the_node_agent_passes_them(state: Path) -> None:
    """`--network-option mtu=1400` arrives as an int, a hand-written mapping may hold the string."""
    assert PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state), "mtu": 1400}).config.mtu == 1400
    assert PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state), "mtu": "1400"}).config.mtu == 1400


def test_is_a_cni_plugin(network: PTPNetwork) -> None:
    assert isinstance(network, CNIPlugin)


# -- allocation files ------------------------------------------------------------------------------


def test_allocation_files(tmp_path: Path) -> None:
    """One file per address holding its owner; the next allocation starts after the last one (no quick reuse);
    a second pool on the same directory (a restarted node agent) sees the same allocations."""
    pool = AddressPool(tmp_path, ipaddress.IPv4Network("10.1.0.0/29"))
    first = pool.allocate(Attachment("c1", "eth0"))
    assert first == ipaddress.IPv4Address("10.1.0.1")
    assert (tmp_path / "10.1.0.1").read_text() == "c1\neth0\n"
    pool.release(first)
    assert pool.allocate(Attachment("c2", "eth0")) == ipaddress.IPv4Address("10.1.0.2")
    again = AddressPool(tmp_path, ipaddress.IPv4Network("10.1.0.0/29"))
    assert again.owned_by(Attachment("c2", "eth0")) == [ipaddress.IPv4Address("10.1.0.2")]
    assert again.free() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10.1.0.2", "last-reserved"]


def test_pool_exhaustion(tmp_path: Path) -> None:
    pool = AddressPool(tmp_path, ipaddress.IPv4Network("10.1.0.0/30"))
    assert {pool.allocate(Attachment(f"c{i}", "eth0")) for i in range(2)} == {
        ipaddress.IPv4Address("10.1.0.1"), ipaddress.IPv4Address("10.1.0.2")}
    with pytest.raises(CNIError) as info:
        pool.allocate(Attachment("c9", "eth0"))
    assert info.value.code == ErrorCode.NO_ADDRESSES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


async def test_status_not_available_when_full(state: Path) -> None:
    network = PTPNetwork.from_options({"podCIDR": "10.214.1.0/30", "stateDir": str(state)})
    await network.status()
    for i in range(2):
        network.pool.allocate(Attachment(f"c{i}", "eth0"))
    with pytest.raises(CNIError) as info:
        await network.status()
    assert info.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE


@root
async def test_gc_removes_what_a_crash_left(network: PTPNetwork) -> None:
    """A crash between writing and linking an allocation leaves a temporary file; one between deleting the veth
    and releasing the address leaves the file; an unreadable allocation has no owner. GC removes all three."""
    directory = network.pool.directory
    orphan = directory / ".tmp-999999999-abc"  # above pid_max: never a live process
    orphan.write_text("x\neth0\n")
    network.pool.allocate(Attachment("crashed", "eth0"))
    (directory / "10.214.0.200").write_text("")
    await network.gc([])
    assert not orphan.exists()
    assert network.pool.allocations() == {}


# -- the network on a real host --------------------------------------------------------------------


@root
async def test_state_survives_a_restart(network: PTPNetwork, state: Path, netns: Netns) -> None:
    """A new network object on the same stateDir (the node agent restarted) checks and deletes old attachments."""
    req = request("restart", await netns("restart"))
    result = await network.add(req)
    restarted = PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state)})
    await restarted.check(req, result)
    await restarted.delete(req)
    assert restarted.host_ifname(Attachment(req.container_id, req.ifname)) not in await host_links()
    assert restarted.pool.allocations() == {}


@root
async def test_del_after_a_cancelled_add(network: PTPNetwork, netns: Netns) -> None:
    """An ADD whose caller is cancelled finishes in its thread; the DEL that follows waits for it and removes
    what it made."""
    req = request("cancelled", await netns("cancelled"))
    task = asyncio.create_task(network.add(req))
    await asyncio.sleep(0)  # the ADD's thread is running now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await network.delete(req)
    assert network.host_ifname(Attachment(req.container_id, req.ifname)) not in await host_links()
    assert network.pool.allocations() == {}
    assert "eth0" not in (await read_netns(req.netns)).links


@root
async def test_namespace_layout_and_mtu(state: Path, netns: Netns) -> None:
    network = PTPNetwork.from_options({"podCIDR": CIDR, "stateDir": str(state), "mtu": 1400})
    req = request("layout", await netns("layout"))
    result = await network.add(req)
    try:
        view = await read_netns(req.netns)
        assert {"lo", "eth0"} <= set(view.links)
        ipv4 = {a for a in view.addresses[view.links["eth0"]] if a.version == 4}
        assert ipv4 == {ipaddress.ip_interface(result.ips[0].address)}
        assert result.ips[0].address.endswith("/32")
        assert (ipaddress.ip_network("0.0.0.0/0"), str(GATEWAY), 254) in view.routes
        assert all(i.mtu == 1400 for i in result.interfaces)
        host = result.interfaces[0].name
        sysfs = {f: Path(f).read_text().strip()  # noqa: ASYNC240 - tiny kernel files
                 for f in (f"/sys/class/net/{host}/mtu", f"/proc/sys/net/ipv4/conf/{host}/forwarding")}
        assert list(sysfs.values()) == ["1400", "1"], sysfs
    finally:
        await network.delete(req)
        await network.gc([])


@root
async def test_check_sees_a_missing_gateway_neighbour(network: PTPNetwork, netns: Netns) -> None:
    req = request("neigh", await netns("neigh"))
    result = await network.add(req)

    def remove_neighbour() -> None:
        from pyroute2 import IPRoute

        fd = open_netns(req.netns)
        try:
            enter_netns(fd)
            with IPRoute() as pod:
                (index,) = pod.link_lookup(ifname="eth0")
                pod.neigh("del", dst=str(GATEWAY), ifindex=index)
        finally:
            os.close(fd)

    await in_thread(remove_neighbour)
    with pytest.raises(CNIError) as info:
        await network.check(req, result)
    assert info.value.code == ErrorCode.ATTACHMENT_BROKEN and str(GATEWAY) in info.value.details
    await network.delete(req)


@root
@pytest.mark.skipif(not (shutil.which("busybox") and shutil.which("nsenter")), reason="needs busybox and nsenter")
def test_traffic_on_a_private_node(tmp_path: Path) -> None:
    """Node → pod, pod → pod and pod → node (ICMP echo with busybox ping) over the /32 routes, the on-link gateway and
    its permanent neighbour entry, with the node's ``ip_forward`` off: forwarding on the host veths is enough.

    The node is a namespace of the test's own (an uplink with the node's address, ``ip_forward=0``): the network
    runs in a thread that entered it, so this host's interfaces and sysctls are never touched."""
    paths = {name: str(tmp_path / name) for name in ("a", "b", "node")}
    node_ip = "10.217.255.1"

    def on_the_node() -> None:
        from pyroute2 import IPRoute

        for path in paths.values():
            create_netns_sync(path)  # leaves this thread in that namespace: the node's comes last
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="uplink", kind="veth", peer="uplink-peer")  # no dummy module on every host
            (uplink,) = ipr.link_lookup(ifname="uplink")
            ipr.addr("add", index=uplink, address=node_ip, prefixlen=32)
            ipr.link("set", index=uplink, state="up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("0")
        asyncio.run(attach_and_ping())

    def ping(target: str, netns: str) -> None:
        done = subprocess.run(["nsenter", f"--net={netns}", "busybox", "ping", "-c", "1", "-W", "5", target],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{netns} → {target}: {done.stdout}{done.stderr}"

    async def attach_and_ping() -> None:
        network = PTPNetwork.from_options({"podCIDR": "10.217.0.0/24", "stateDir": str(tmp_path / "state")})
        a, b = request("traffica", paths["a"]), request("trafficb", paths["b"])
        ip_a, ip_b = [(await network.add(r)).addresses()[0] for r in (a, b)]
        try:
            await asyncio.to_thread(ping, ip_a, paths["node"])
            await asyncio.to_thread(ping, ip_b, paths["a"])
            await asyncio.to_thread(ping, node_ip, paths["b"])
        finally:
            await network.delete(a)
            await network.delete(b)

    worker = threading.Thread(target=lambda: failures.extend(_capture(on_the_node)))
    failures: list[BaseException] = []
    try:
        worker.start()
        worker.join()
    finally:
        for path in paths.values():
            delete_netns_sync(path)
    if failures:
        raise failures[0]


def _capture(fn: Callable[[], None]) -> list[BaseException]:
    try:
        fn()
    except BaseException as exc:
        return [exc]
    return []
