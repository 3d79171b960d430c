"""The cri/v1 conformance suite through ``microkube cri-serve --runtime runc``: the runc pack served over CRI v1
gRPC and cri-serve's streaming server, driven by the containerd pack's client (``tox -e conformance-cri-serve``,
which installs core, runc and this pack).

The proof that the gRPC path is faithful: the suite the runc pack passes directly
(plugins/runc/tests/test_runc_cri_conformance.py) passes through api.proto, the converters, cri-serve, its
streaming server (exec streams, port-forward; attach and terminals when runc declares them) and this client.
The client is told what runc declares (its ``attach`` and ``tty`` options) and that runc networks no pods
(``networks_pods=false``). cri-serve's streaming server speaks ``v5.channel.k8s.io``, so closing stdin is
end of input, and closing an exec's stream kills the exec (runc's stream is closed with it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from containerd_testenv import BUSYBOX_IMAGE, cri_serve_runc_options, remove_all_and_close, sandbox_factory

from microkube_interfaces import cri
from microkube_interfaces.conformance.cri import CRICapabilities, CRIConformance, SandboxConfigFactory

pytestmark = [pytest.mark.root, pytest.mark.slow]


class TestCriServeRuncCRIConformance(CRIConformance):
    @pytest.fixture
    async def cri_runtime(self, cri_serve_runc: Path) -> AsyncIterator[Any]:
        from microkube_containerd.runtime import create_runtime

        pack = create_runtime(cri_serve_runc_options(cri_serve_runc))
        yield pack
        await remove_all_and_close(pack)

    @pytest.fixture
    def cri_capabilities(self, cri_runtime: Any) -> CRICapabilities:
        return CRICapabilities.from_runtime(cri_runtime.capabilities, port_mappings=False, pull=False)

    @pytest.fixture
    def test_image(self) -> str:
        return BUSYBOX_IMAGE

    @pytest.fixture
    async def prepare_image(self, cri_runtime: Any, test_image: str) -> None:
        assert await cri_runtime.images.image_status(cri.ImageSpec(test_image)) is not None

    @pytest.fixture
    def sandbox_config_factory(self, tmp_path: Path) -> SandboxConfigFactory:
        return sandbox_factory(tmp_path)
