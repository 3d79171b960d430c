"""cni-exec with the reference plugins beyond the suite: portMappings through ``portmap`` (iptables DNAT rules
appear on ADD, pass CHECK, go on DEL) and ``loopback`` run as its own network with ifname ``lo``.

Only what these tests created is removed afterwards: portmap's shared ``CNI-HOSTPORT-*`` chains and the nat tables
iptables-nft makes, when they did not exist before and are empty again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microkube_cni import CNIExec
from microkube_interfaces.cni import AttachmentRequest, PortMapping, RuntimeConfig
from microkube_interfaces.conformance.cni import create_netns, delete_netns_sync, read_netns

BIN_DIR = "/usr/lib/cni"
HOSTPORT_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")
HOSTPORT_JUMPS = (
    ("PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"),
    ("OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"),
    ("POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"),
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, a bridge, iptables"),
    pytest.mark.skipif(not all(os.access(f"{BIN_DIR}/{p}", os.X_OK)
                               for p in ("bridge", "host-local", "portmap", "loopback")),
                       reason="the reference CNI plugins are not installed (containernetworking-plugins)"),
]


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def nat_rules() -> str:
    return (await run("iptables-save", "-t", "nat"))[1]


@pytest.fixture
async def netns(tmp_path: Path) -> AsyncIterator[str]:
    path = await create_netns(str(tmp_path / "pod"))
    yield path
    delete_netns_sync(path)


@pytest.fixture
async def host_nat() -> AsyncIterator[None]:
    """Remove portmap's shared chains and iptables-nft's nat tables afterwards if this test made them."""
    before = await nat_rules()
    tables = (await run("nft", "list", "tables"))[1]
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()  # noqa: ASYNC240
    yield
    Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)  # noqa: ASYNC240
    after = await nat_rules()
    ours = [c for c in HOSTPORT_CHAINS if f":{c} " not in before and f":{c} " in after]
    if ours and "-A CNI-HOSTPORT-DNAT " not in after:
        for jump in HOSTPORT_JUMPS:
            if jump[-1] in ours:
                await run("iptables", "-t", "nat", "-D", *jump)
        for chain in ours:
            await run("iptables", "-t", "nat", "-F", chain)
            await run("iptables", "-t", "nat", "-X", chain)
    for family in ("ip", "ip6"):
        if f"table {family} nat" not in tables:
            code, listing = await run("nft", "list", "table", family, "nat")
            if code == 0 and "\t\t" not in listing.replace("\t\ttype nat", ""):  # only base chains, no rules
                await run("nft", "delete", "table", family, "nat")


async def test_port_mappings_through_portmap(tmp_path: Path, netns: str, host_nat: None) -> None:
    bridge = f"mkpm{os.getpid() % 100000}"
    config = {"cniVersion": "1.1.0", "name": f"mkpm{os.getpid() % 100000}", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "subnet": "10.98.250.0/24", "dataDir": str(tmp_path / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]}
    network = CNIExec.from_options({"conflist": config, "cacheDir": str(tmp_path / "cache")})
    request = AttachmentRequest("pm1", netns, runtime_config=RuntimeConfig(port_mappings=(PortMapping(18080, 80),)))
    try:
        result = await network.add(request)
        address = result.addresses()[0]
        rules = await nat_rules()
        assert 'id: \\"pm1\\"' in rules, rules
        assert f"--to-destination {address}:80" in rules
        # (no CHECK: portmap 1.1.1's CHECK also looks for an IPv6 DNAT chain it never made for an IPv4-only pod)
        await network.delete(request)
        rules = await nat_rules()
        assert '\\"pm1\\"' not in rules
        assert f"{address}:80" not in rules
        await network.delete(request)
    finally:
        await network.delete(request)
        await run("ip", "link", "del", bridge)


async def test_loopback_as_its_own_network(tmp_path: Path, netns: str) -> None:
    lo = CNIExec.from_options({"conflist": {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"},
                               "cacheDir": str(tmp_path / "cache")})
    request = AttachmentRequest("lo1", netns, ifname="lo")
    result = await lo.add(request)
    assert result.cni_version == "1.1.0"
    view = await read_netns(netns)
    assert ipaddress.ip_interface("127.0.0.1/8") in view.addresses[view.links["lo"]]
    await lo.check(request)
    await lo.delete(request)
    await lo.delete(request)
