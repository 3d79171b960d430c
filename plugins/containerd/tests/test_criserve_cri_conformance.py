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
from containerd_testenv import BusyboxOverGrpc, cri_serve_runc_options, remove_all_and_close

from microkube_interfaces.conformance.cri import CRICapabilities, CRIConformance

pytestmark = [pytest.mark.root, pytest.mark.slow]


class TestCriServeRuncCRIConformance(BusyboxOverGrpc, CRIConformance):
    @pytest.fixture
    async def cri_runtime(self, cri_serve_runc: Path) -> AsyncIterator[Any]:
        from microkube_containerd.runtime import create_runtime

        pack = create_runtime(cri_serve_runc_options(cri_serve_runc))
        yield pack
        await remove_all_and_close(pack)

    @pytest.fixture
    def cri_capabilities(self, cri_runtime: Any) -> CRICapabilities:
        return CRICapabilities.from_runtime(cri_runtime.capabilities, port_mappings=False, pull=False)

