"""The bridge pod network against real network namespaces, a real bridge and a real nftables table.

Each test gets its own bridge (``mkt<pid><n>``), nft table, private /24 of 10.99.0.0/16 and state directory, and
removes all of them afterwards; nothing else on the host is touched (``net.ipv4.ip_forward`` is restored).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from microkube_bridge import BridgeNetwork, create_netns, delete_netns, veth_name
from microkube_bridge.masquerade import present
from microkube_interfaces.cni import Attachment, AttachmentRequest, CNIError, CNIPlugin, ErrorCode, PortMapping
from microkube_interfaces.cni import RuntimeConfig as CNIRuntimeConfig

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces, a bridge and nft rules"),
]

_counter = itertools.count()
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)


def sh(*argv: str, netns: str = "") -> subprocess.CompletedProcess[str]:
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=20, check=False)


def ping(address: str, netns: str = "") -> bool:
    return sh("busybox", "ping", "-c", "1", "-W", "2", address, netns=netns).returncode == 0


class Node:
    """One test's network, its pods' netns files and its state directory."""

    def __init__(self, tmp: Path) -> None:
        n = next(_counter)
        self.bridge = f"mkt{os.getpid() % 100000}{n}"[:15]
        self.table = f"mktest_{os.getpid()}_{n}"
        self.cidr = ipaddress.IPv4Network(f"10.99.{(_WORKER * 32 + n) % 256}.0/24")
        self.state = tmp / "state"
        self.netns_dir = tmp / "netns"
        self.netns_dir.mkdir()
        self.namespaces: list[str] = []
        self.instances: list[BridgeNetwork] = []

    def network(self, **extra: object) -> BridgeNetwork:
        options = {"podCIDR": str(self.cidr), "bridge": self.bridge, "nftTable": self.table,
                   "stateDir": str(self.state), **extra}
        network = BridgeNetwork.from_options(options)
        self.instances.append(network)
        return network

    async def netns(self, name: str) -> str:
        path = str(self.netns_dir / name)
        await create_netns(path)
        self.namespaces.append(path)
        return path

    async def cleanup(self) -> None:
        for path in self.namespaces:
            await delete_netns(path)
        previous = next((i.previous_ip_forward for i in self.instances if i.previous_ip_forward is not None), None)
        if self.instances:
            await self.instances[0].teardown()
        if previous is not None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:  # noqa: ASYNC230
                handle.write(previous)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(tmp_path)
    try:
        yield node
    finally:
        await node.cleanup()
        assert not exists(f"/sys/class/net/{node.bridge}")
        assert not present(node.table)


def req(container_id: str, netns: str, ifname: str = "eth0") -> AttachmentRequest:
    return AttachmentRequest(container_id=container_id, netns=netns, ifname=ifname)


async def raises(code: ErrorCode, call: Callable[[], Awaitable[object]]) -> CNIError:
    with pytest.raises(CNIError) as info:
        await call()
    assert info.value.code == code, info.value
    return info.value


def read(path: str) -> str:
    return Path(path).read_text().strip()


def exists(path: str) -> bool:
    return Path(path).exists()


def our_veths(bridge: str) -> list[str]:
    brif = Path(f"/sys/class/net/{bridge}/brif")
    return sorted(p.name for p in brif.iterdir()) if brif.exists() else []


async def test_add_gives_an_address_a_route_and_lo(node: Node) -> None:
    network = node.network()
    assert isinstance(network, CNIPlugin)
    pod = await node.netns("pod1")
    result = await network.add(req("pod1", pod))

    doc = json.loads(result.to_json())
    assert doc["cniVersion"] == "1.1.0"
    assert [i["name"] for i in doc["interfaces"]] == [node.bridge, veth_name("pod1", "eth0"), "eth0"]
    assert doc["interfaces"][2]["sandbox"] == pod
    address = ipaddress.IPv4Interface(doc["ips"][0]["address"])
    gateway = str(node.cidr.network_address + 1)
    assert address.ip in node.cidr and address.network == node.cidr
    assert doc["ips"][0] == {"address": str(address), "gateway": gateway, "interface": 2}
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": gateway}]

    assert str(address) in sh("ip", "-4", "-o", "addr", "show", "dev", "eth0", netns=pod).stdout
    assert f"default via {gateway} dev eth0" in sh("ip", "route", netns=pod).stdout
    assert "UP" in sh("ip", "-o", "link", "show", "lo", netns=pod).stdout
    assert doc["interfaces"][2]["mac"] in sh("ip", "-o", "link", "show", "eth0", netns=pod).stdout
    # host side: veth on the bridge, hairpin, bridge holds the gateway, masquerade in our own table
    host = veth_name("pod1", "eth0")
    assert our_veths(node.bridge) == [host]
    assert read(f"/sys/class/net/{host}/brport/hairpin_mode") == "1"
    assert f"{gateway}/24" in sh("ip", "-4", "-o", "addr", "show", "dev", node.bridge).stdout
    rules = sh("nft", "list", "table", "inet", node.table).stdout
    assert f"ip saddr {node.cidr}" in rules and "masquerade" in rules
    assert read("/proc/sys/net/ipv4/ip_forward") == "1"
    await network.check(req("pod1", pod), result)
    await network.status()


async def test_pods_reach_each_other_and_the_host_reaches_pods(node: Node) -> None:
    network = node.network()
    one, two = await node.netns("one"), await node.netns("two")
    ip_one = (await network.add(req("one", one))).addresses()[0]
    ip_two = (await network.add(req("two", two))).addresses()[0]
    assert ip_one != ip_two
    assert ping(ip_two, netns=one)
    assert ping(ip_one, netns=two)
    assert ping(ip_one)  # host -> pod
    assert ping(str(node.cidr.network_address + 1), netns=two)  # pod -> gateway
    assert ping(ip_one, netns=one)  # a pod reaches itself


async def test_add_of_an_existing_attachment_fails_without_leaking(node: Node) -> None:
    network = node.network()
    pod = await node.netns("pod")
    await network.add(req("pod", pod))
    error = await raises(ErrorCode.ATTACHMENT_EXISTS, lambda: network.add(req("pod", pod)))
    assert "already allocated" in error.details
    # another container id, same netns and ifname: the interface exists
    await raises(ErrorCode.ATTACHMENT_EXISTS, lambda: network.add(req("other", pod)))
    assert network.ipam.lookup("other", "eth0") is None
    assert our_veths(node.bridge) == [veth_name("pod", "eth0")]
    # a second interface in the same pod is a different attachment
    second = await network.add(req("pod", pod, "net1"))
    assert second.ips[0].address != "" and second.routes == ()
    await network.check(req("pod", pod, "net1"), second)
    # a netns that does not exist: container unknown, nothing allocated
    await raises(ErrorCode.UNKNOWN_CONTAINER, lambda: network.add(req("ghost", str(node.netns_dir / "nope"))))
    assert network.ipam.lookup("ghost", "eth0") is None
    await raises(ErrorCode.INVALID_ENVIRONMENT, lambda: network.add(req("bad", pod, "x" * 16)))
    ports = AttachmentRequest("pp", pod, "net2", runtime_config=CNIRuntimeConfig((PortMapping(8080, 80),)))
    await raises(ErrorCode.UNSUPPORTED_FIELD, lambda: network.add(ports))


async def test_delete_is_idempotent(node: Node) -> None:
    network = node.network()
    pod = await node.netns("pod")
    await network.add(req("pod", pod))
    await network.delete(req("pod", pod))
    await network.delete(req("pod", pod))
    await network.delete(req("never-added", pod))
    await network.delete(AttachmentRequest("pod", "", "eth0"))  # netns unknown to the runtime any more
    assert our_veths(node.bridge) == []
    # DEL after the netns vanished: the veth went with it, the allocation is released
    gone = await node.netns("gone")
    await network.add(req("gone", gone))
    await delete_netns(gone)
    await network.delete(req("gone", gone))
    assert network.ipam.allocations() == {}
    # the address can be handed out again, and ADD after DEL works
    await network.add(req("pod", pod))


async def test_check_detects_a_broken_attachment(node: Node) -> None:
    network = node.network()
    pod = await node.netns("pod")
    result = await network.add(req("pod", pod))
    await network.check(req("pod", pod), result)
    await raises(ErrorCode.UNKNOWN_CONTAINER, lambda: network.check(req("stranger", pod)))

    assert sh("ip", "addr", "flush", "dev", "eth0", netns=pod).returncode == 0
    error = await raises(ErrorCode.ATTACHMENT_BROKEN, lambda: network.check(req("pod", pod)))
    assert "address" in error.msg

    assert sh("ip", "link", "del", veth_name("pod", "eth0")).returncode == 0
    error = await raises(ErrorCode.ATTACHMENT_BROKEN, lambda: network.check(req("pod", pod)))
    assert "veth" in error.msg
    await network.delete(req("pod", pod))  # DEL still cleans up
    await raises(ErrorCode.UNKNOWN_CONTAINER, lambda: network.check(req("pod", pod)))


async def test_gc_releases_everything_not_valid(node: Node) -> None:
    network = node.network()
    pods = {name: await node.netns(name) for name in ("a", "b", "c")}
    for name, path in pods.items():
        await network.add(req(name, path))
    await network.gc([Attachment("a", "eth0")])
    assert our_veths(node.bridge) == [veth_name("a", "eth0")]
    assert list(network.ipam.allocations().values()) == [("a", "eth0")]
    assert sorted(os.listdir(network.ipam.directory)) == sorted([*map(str, network.ipam.allocations()),
                                                                   "last_reserved_ip.0"])
    await network.check(req("a", pods["a"]))
    await network.gc([Attachment("a", "eth0")])  # idempotent
    await network.gc([])
    assert our_veths(node.bridge) == [] and network.ipam.allocations() == {}


async def test_allocations_survive_a_crash(node: Node) -> None:
    first = node.network()
    one, two = await node.netns("one"), await node.netns("two")
    ip_one = (await first.add(req("one", one))).addresses()[0]
    ip_two = (await first.add(req("two", two))).addresses()[0]
    del first  # "crash": the next agent starts from the disk state only

    second = node.network()
    assert {str(ip): owner for ip, owner in second.ipam.allocations().items()} == {
        ip_one: ("one", "eth0"), ip_two: ("two", "eth0")}
    await raises(ErrorCode.ATTACHMENT_EXISTS, lambda: second.add(req("one", one)))
    await second.check(req("one", one))
    three = await node.netns("three")
    ip_three = (await second.add(req("three", three))).addresses()[0]
    assert ip_three not in (ip_one, ip_two)
    assert ping(ip_one, netns=three)
    # a stray temporary file from a crash mid-write is not an allocation
    (second.ipam.directory / ".tmp-10.99.0.77-1-1").write_text("x\r\neth0")
    third = node.network()
    assert len(third.ipam.allocations()) == 3
    assert not any(n.startswith(".tmp-") for n in os.listdir(third.ipam.directory))


async def test_status_and_version(node: Node) -> None:
    network = node.network()
    await network.status()  # bridge not created yet: ADD would create it
    assert (await network.version()).to_dict() == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}
    tiny = BridgeNetwork.from_options({"podCIDR": "10.99.255.252/30", "bridge": node.bridge, "ipMasq": False,
                                       "stateDir": str(node.state / "tiny"), "name": "tiny", "ipForward": False})
    pod = await node.netns("pod")
    await tiny.add(req("only", pod))  # a /30 has one pod address besides the gateway
    await raises(ErrorCode.PLUGIN_NOT_AVAILABLE, tiny.status)
    other = await node.netns("other")
    await raises(ErrorCode.NO_ADDRESSES, lambda: tiny.add(req("second", other)))
    await tiny.delete(req("only", pod))
    await tiny.status()
    assert sh("ip", "addr", "flush", "dev", node.bridge).returncode == 0
    assert sh("ip", "link", "set", node.bridge, "down").returncode == 0
    await raises(ErrorCode.PLUGIN_NOT_AVAILABLE, network.status)
    await raises(ErrorCode.INVALID_NETWORK_CONFIG, lambda: _factory({"bridge": "x"}))
    await raises(ErrorCode.UNSUPPORTED_FIELD, lambda: _factory({"podCIDR": "10.99.0.0/24", "bogus": 1}))


async def _factory(options: dict[str, object]) -> BridgeNetwork:
    return BridgeNetwork.from_options(options)


async def test_nothing_of_ours_remains_after_deleting_every_pod(node: Node) -> None:
    network = node.network()
    pods = [await node.netns(f"p{i}") for i in range(5)]
    for i, path in enumerate(pods):
        await network.add(req(f"p{i}", path))
    assert len(our_veths(node.bridge)) == 5
    for i, path in enumerate(pods):
        await network.delete(req(f"p{i}", path))
        await delete_netns(path)
    assert our_veths(node.bridge) == []
    assert not any(exists(f"/sys/class/net/{veth_name(f'p{i}', 'eth0')}") for i in range(5))
    assert os.listdir(network.ipam.directory) == ["last_reserved_ip.0"]
    assert os.listdir(node.netns_dir) == []
    assert f" {node.netns_dir}/" not in read("/proc/self/mountinfo")


def test_plugin_registers_the_bridge_network() -> None:
    from microkube_bridge import plugin
    from microkube_interfaces import Registrar

    info = plugin.microkube_plugin_info()
    assert info.name == "bridge" and info.interfaces == {"cni": ("1.1",)}
    registrar = Registrar()
    plugin.microkube_register(registrar)
    registration = registrar.networks.get("bridge")
    assert registration.versions == ("1.1",) and registration.plugin == "bridge"
    assert shutil.which("nsenter")


async def test_concurrent_adds_get_distinct_addresses(node: Node) -> None:
    network = node.network()
    paths = [await node.netns(f"c{i}") for i in range(10)]
    results = await asyncio.gather(*(network.add(req(f"c{i}", path)) for i, path in enumerate(paths)))
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 10
    assert len(our_veths(node.bridge)) == 10
    await asyncio.gather(*(network.delete(req(f"c{i}", path)) for i, path in enumerate(paths)))
    assert our_veths(node.bridge) == [] and network.ipam.allocations() == {}
