"""ptp against microkube's cni/1.1 conformance suite (needs root: it makes network namespaces and veth pairs)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from microkube_interfaces.cni import NetworkFactory
from microkube_interfaces.conformance.cni import CNICapabilities, CNIConformance
from microkube_ptp import PTPNetwork

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the CNI suite needs root (namespaces, veth pairs)")]


class TestPTPConformance(CNIConformance):
    @pytest.fixture
    async def cni_plugin(self, tmp_path: Path) -> AsyncIterator[PTPNetwork]:
        network = PTPNetwork.from_options({"podCIDR": "10.213.0.0/24", "stateDir": str(tmp_path / "state")})
        yield network
        await network.gc([])  # whatever a failed test left behind

    @pytest.fixture
    def capabilities(self) -> CNICapabilities:
        return CNICapabilities(versions=("1.0.0", "1.1.0"))

    @pytest.fixture
    def cni_factory(self) -> NetworkFactory:
        return PTPNetwork.from_options

    @pytest.fixture
    def invalid_configs(self, tmp_path: Path) -> Sequence[Mapping[str, Any]]:
        state = str(tmp_path / "state")
        return [
            {"stateDir": state},
            {"podCIDR": "10.213.0.0/33", "stateDir": state},
            {"podCIDR": "10.213.0.5/24", "stateDir": state},
            {"podCIDR": "fd00:213::/64", "stateDir": state},
            {"podCIDR": "169.254.0.0/24", "stateDir": state},
            {"podCIDR": "10.213.0.0/24"},
            {"podCIDR": "10.213.0.0/24", "stateDir": "relative/dir"},
            {"podCIDR": "10.213.0.0/24", "stateDir": state, "mtu": 20},
            {"podCIDR": "10.213.0.0/24", "stateDir": state, "mtu": "big"},
        ]
