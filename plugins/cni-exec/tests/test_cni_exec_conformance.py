"""The cni/1.1 conformance suite against cni-exec driving Debian's reference plugins (/usr/lib/cni).

The network is a conflist of ``bridge`` (host-local IPAM) + ``portmap`` on a private bridge (``mkx<pid><n>``), a
private /24 of 10.98.0.0/16, ``ipMasq: false`` (no iptables rules of ours), host-local state and the result cache
under the test's tmp_path. Afterwards the bridge is deleted and ``net.ipv4.ip_forward`` restored; the suite's
cleanup test checks no per-pod interface is left.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from microkube_cni import CNIExec
from microkube_interfaces.cni import CNIPlugin, NetworkFactory
from microkube_interfaces.conformance.cni import CNICapabilities, CNIConformance

BIN_DIR = "/usr/lib/cni"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces and a bridge"),
    pytest.mark.skipif(not all(os.access(f"{BIN_DIR}/{p}", os.X_OK) for p in ("bridge", "host-local", "portmap")),
                       reason="the reference CNI plugins are not installed (containernetworking-plugins)"),
]

_counter = itertools.count()
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)


def conflist(n: int, tmp: Path, version: str = "1.0.0", **bridge: Any) -> dict[str, Any]:
    subnet = f"10.98.{(_WORKER * 64 + n) % 256}.0/24"
    return {
        "cniVersion": version,
        "name": f"mkcni{os.getpid() % 100000}x{n}",
        "plugins": [
            {"type": "bridge", "bridge": f"mkx{os.getpid() % 100000}{n}"[:15], "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(tmp / "ipam")},
             **bridge},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


async def delete_bridge(name: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", "link", "del", name, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


@pytest.fixture(autouse=True, scope="module")
def _restore_ip_forward() -> Iterator[None]:
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text()
    yield
    path.write_text(before)


class TestCNIExecConformance(CNIConformance):
    @pytest.fixture
    async def cni_plugin(self, tmp_path: Path) -> AsyncIterator[CNIPlugin]:
        config = conflist(next(_counter), tmp_path)
        network = CNIExec.from_options({"conflist": config, "binDir": BIN_DIR, "cacheDir": str(tmp_path / "cache")})
        try:
            yield network
        finally:
            await delete_bridge(config["plugins"][0]["bridge"])

    @pytest.fixture
    def capabilities(self) -> CNICapabilities:
        return CNICapabilities(versions=("1.0.0", "1.1.0"))

    @pytest.fixture
    def cni_factory(self) -> NetworkFactory:
        return CNIExec.from_options

    @pytest.fixture
    def invalid_configs(self, tmp_path: Path) -> Sequence[Mapping[str, Any]]:
        good = conflist(200, tmp_path)
        return (
            {},
            {"conflist": {**good, "name": ""}},
            {"conflist": {**good, "plugins": []}},
            {"conflist": {**good, "plugins": [{"bridge": "x"}]}},
            {"conflist": {**good, "plugins": [{"type": "../bridge"}]}},
            {"conflist": {**good, "cniVersion": "one"}},
            {"conflist": {**good, "plugins": [{"type": "bridge", "runtimeConfig": {}}]}},
        )


class TestCNIExecConformanceList11(TestCNIExecConformance):
    """The same network written as a 1.1.0 list: cni-exec runs the 1.0.0 reference plugins at 1.0.0."""

    @pytest.fixture
    async def cni_plugin(self, tmp_path: Path) -> AsyncIterator[CNIPlugin]:
        config = conflist(next(_counter), tmp_path, version="1.1.0")
        network = CNIExec.from_options({"conflist": config, "binDir": BIN_DIR, "cacheDir": str(tmp_path / "cache")})
        try:
            yield network
        finally:
            await delete_bridge(config["plugins"][0]["bridge"])
