"""The cni/1.1 conformance suite against the bridge pack, on real network namespaces.

Each test gets its own bridge (``mkc<pid><n>``), nft table, /24 of 10.95.0.0/16 and state directory; all are removed
afterwards and ``net.ipv4.ip_forward`` is restored.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from microkube_bridge import BridgeNetwork
from microkube_interfaces.cni import CNIPlugin, NetworkFactory
from microkube_interfaces.conformance.cni import CNIConformance

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces, a bridge and nft rules"),
]

_counter = itertools.count()
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)


class TestBridgeConformance(CNIConformance):
    @pytest.fixture
    async def cni_plugin(self, tmp_path: Path) -> AsyncIterator[CNIPlugin]:
        n = next(_counter)
        network = BridgeNetwork.from_options({
            "podCIDR": f"10.95.{(_WORKER * 64 + n) % 256}.0/24",
            "bridge": f"mkc{os.getpid() % 100000}{n}"[:15],
            "nftTable": f"mkconf_{os.getpid()}_{n}",
            "stateDir": str(tmp_path / "state"),
        })
        try:
            yield network
        finally:
            await network.teardown(restore_ip_forward=True)

    @pytest.fixture
    def cni_factory(self) -> NetworkFactory:
        return BridgeNetwork.from_options

    @pytest.fixture
    def invalid_configs(self) -> Sequence[Mapping[str, Any]]:
        return ({}, {"podCIDR": "10.95.0.0/33"}, {"podCIDR": "not-a-cidr"}, {"podCIDR": "10.95.1.0/24", "bridge": ""})
