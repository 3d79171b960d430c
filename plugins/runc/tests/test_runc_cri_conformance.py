"""The cri/v1 conformance suite against the runc pack, with real runc containers of the busybox image.

Each test gets its own runtime state directory and cgroup parent (under this process's memory cgroup); the image
store is shared by the module's tests (the busybox image is imported once). runc does not network pods (the node
agent's pod network does), has no attach and no terminals: the suite checks that those calls raise Unsupported and
skips their behaviour tests (attach, tty containers and exec, sandbox IP, host port mappings).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microkube_interfaces import cri
from microkube_interfaces.conformance.cri import CRICapabilities, CRIConformance
from microkube_runc import busybox, cgroups
from microkube_runc.busybox import BUSYBOX, import_busybox
from microkube_runc.runtime import RuncRuntimePack, create_runtime

RUNC = shutil.which("runc") or "/usr/sbin/runc"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runc containers, namespaces, cgroups, mounts"),
    pytest.mark.skipif(not os.path.exists(RUNC) or not os.path.exists(BUSYBOX), reason="needs runc and busybox"),
]

_counter = itertools.count()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runc-cri-images")


class TestRuncCRIConformance(CRIConformance):
    @pytest.fixture
    async def cri_runtime(self, tmp_path: Path, image_dir: Path) -> AsyncIterator[RuncRuntimePack]:
        parent = os.path.join(cgroups.own_cgroup("memory"), f"mkcri-{os.getpid()}-{next(_counter)}")
        pack = create_runtime({"root": str(tmp_path / "runc"), "imageDir": str(image_dir), "cgroupParent": parent,
                               "runc": RUNC})
        try:
            yield pack
        finally:
            for sandbox in await pack.runtime.list_pod_sandbox():
                await pack.runtime.remove_pod_sandbox(sandbox.id)
            await pack.runtime.close()
            cgroups.remove_tree(parent)

    @pytest.fixture
    def cri_capabilities(self, cri_runtime: RuncRuntimePack) -> CRICapabilities:
        # tty follows attach (both off); runc networks no pods, so no sandbox IP and no host ports.
        return CRICapabilities.from_runtime(cri_runtime.capabilities)

    @pytest.fixture
    async def prepare_image(self, cri_runtime: RuncRuntimePack, test_image: str) -> None:
        if await cri_runtime.images.image_status(cri.ImageSpec(test_image)) is None:
            await import_busybox(cri_runtime.images)

    @pytest.fixture
    async def removable_image(self, cri_runtime: RuncRuntimePack) -> str:
        """Another busybox image (a different Cmd, so a different id) under its own name."""
        reference = f"microkube.local/conformance-removable:{os.getpid()}-{next(_counter)}"
        image = busybox.build_busybox_image(cmd=("true",))
        store = cri_runtime.images
        for digest, data in image.blobs.items():
            store.write_blob(data, digest, what="removable image")
        store.register((reference,), image.manifest_digest)
        return reference
