"""The cri/v1 conformance suite against the runc pack, with real runc containers of the busybox image, and again with
the pack's other OCI runtime, crun (option ``ociRuntime: crun``; skipped when Debian's ``crun`` is not installed).

Each test gets its own runtime state directory and cgroup parent (under this process's memory cgroup); the image
store is shared by the module's tests (the busybox image is imported once). runc does not network pods (the node
agent's pod network does), has no attach and no terminals: the suite checks that those calls raise Unsupported and
skips their behaviour tests (attach, tty containers and exec, sandbox IP, host port mappings). The pull rules run
against a private Debian ``docker-registry`` on loopback when it is installed (a third busybox image pushed to it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from microkube_interfaces import cri
from microkube_interfaces.conformance.cri import CRICapabilities, CRIConformance, PullSource
from microkube_runc import busybox, cgroups
from microkube_runc.busybox import BUSYBOX, import_busybox
from microkube_runc.images import ImageStore
from microkube_runc.registry import RegistryClient
from microkube_runc.runtime import DEFAULT_CRUN, RuncRuntimePack, create_runtime

RUNC = shutil.which("runc") or "/usr/sbin/runc"
REGISTRY = shutil.which("docker-registry")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: OCI containers, namespaces, cgroups, mounts"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox (Debian package busybox-static)"),
]

_counter = itertools.count()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runc-cri-images")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """host:port of a private docker-registry on 127.0.0.1, or None when the package is not installed."""
    if REGISTRY is None:
        yield None
        return
    directory = tmp_path_factory.mktemp("runc-cri-registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    (directory / "config.yml").write_text("\n".join([
        "version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
        f"    rootdirectory: {directory / 'data'}", "  delete:", "    enabled: true",
        "http:", f"  addr: 127.0.0.1:{port}"]) + "\n")
    process = subprocess.Popen([REGISTRY, "serve", str(directory / "config.yml")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, "docker-registry exited"
            assert time.monotonic() < deadline, "docker-registry did not listen within 10 s"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class _RuncPackCRI(CRIConformance):
    """The suite against the runc pack; subclasses choose the OCI runtime through the pack's options."""

    pack_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    async def cri_runtime(self, tmp_path: Path, image_dir: Path) -> AsyncIterator[RuncRuntimePack]:
        parent = os.path.join(cgroups.own_cgroup("memory"), f"mkcri-{os.getpid()}-{next(_counter)}")
        pack = create_runtime({"root": str(tmp_path / "runc"), "imageDir": str(image_dir), "cgroupParent": parent,
                               **self.pack_options})
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

    @pytest.fixture
    async def pullable_image(self, registry: str | None, tmp_path: Path) -> PullSource | None:
        """A third busybox image (Cmd ``false``) pushed to the private registry."""
        if registry is None:
            return None
        source = ImageStore(tmp_path / "push-source")
        image = busybox.build_busybox_image(cmd=("false",))
        for digest, data in image.blobs.items():
            source.write_blob(data, digest, what="pullable image")
        source.register(("microkube.local/conformance-pull:v1",), image.manifest_digest)
        target = f"{registry}/conformance/busybox:{os.getpid()}-{next(_counter)}"
        async with RegistryClient() as client:
            await client.push(source, "microkube.local/conformance-pull:v1", target)
        return PullSource(target)


@pytest.mark.skipif(not os.path.exists(RUNC), reason="needs runc (Debian package runc)")
class TestRuncCRIConformance(_RuncPackCRI):
    pack_options: ClassVar[dict[str, Any]] = {"runc": RUNC}


@pytest.mark.skipif(not os.path.exists(DEFAULT_CRUN), reason="crun is not installed (Debian package crun)")
class TestCrunCRIConformance(_RuncPackCRI):
    """The same suite with ``ociRuntime: crun`` (through the pack's mount-namespace wrapper on a hybrid host)."""

    pack_options: ClassVar[dict[str, Any]] = {"ociRuntime": "crun"}
