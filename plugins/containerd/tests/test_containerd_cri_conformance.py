"""The cri/v1 conformance suite through CRI v1 gRPC: the containerd pack against a real containerd 1.6.

As a vendor runs it (``tox -e conformance-containerd``): wheels of microkube-interfaces[conformance,grpc] and of
this pack only, no core and no other pack; the images are built by containerd_testenv. The same client against
``microkube cri-serve`` is test_criserve_cri_conformance.py.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from containerd_testenv import CTR, BusyboxOverGrpc, Daemon, busybox_archive, remove_all_and_close

from microkube_interfaces.conformance.cri import CRICapabilities, CRIConformance

pytestmark = [pytest.mark.root, pytest.mark.slow]

_counter = itertools.count()


class TestContainerdCRIConformance(BusyboxOverGrpc, CRIConformance):
    @pytest.fixture
    async def cri_runtime(self, containerd_daemon: Daemon) -> AsyncIterator[Any]:
        from microkube_containerd.runtime import create_runtime

        pack = create_runtime({"endpoint": containerd_daemon.endpoint, "ctr": CTR})
        yield pack
        await remove_all_and_close(pack)

    @pytest.fixture
    def cri_capabilities(self, cri_runtime: Any) -> CRICapabilities:
        # containerd's CNI bridge gives pod IPs; host ports would need the portmap plugin (not configured).
        # containerd 1.6's streaming server speaks remote-command v4 over WebSocket, which has no way to half-close
        # stdin (v5.channel.k8s.io added it in Kubernetes 1.30), so close_stdin raises Unsupported; and it runs
        # an exec detached from the streaming connection, so closing the stream leaves the process running.
        return CRICapabilities.from_runtime(cri_runtime.capabilities, port_mappings=False, pull=False,
                                            stdin_close=False, exec_close_kills=False)


    @pytest.fixture
    async def removable_image(self, cri_runtime: Any, tmp_path: Path) -> str:
        reference = f"microkube.local/conformance-removable:{os.getpid()}-{next(_counter)}"
        archive = tmp_path / "removable.tar"
        archive.write_bytes(busybox_archive(reference, ("true",)))
        await cri_runtime.images.import_archive(str(archive))
        return reference
