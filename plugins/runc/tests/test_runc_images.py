"""The runc pack's image store: busybox build, archive import, roots, whiteouts, removal and GC."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid, NotFound
from microkube_runc import busybox, images, reference
from microkube_runc.images import ImageStore, canonical_json, sha256_digest

pytestmark = pytest.mark.skipif(not os.path.exists(busybox.BUSYBOX), reason="needs busybox-static")
IS_ROOT = os.geteuid() == 0


def test_reference_normalisation() -> None:
    assert reference.normalize("busybox") == "docker.io/library/busybox:latest"
    assert reference.normalize("busybox:1.36") == "docker.io/library/busybox:1.36"
    assert reference.normalize("me/app") == "docker.io/me/app:latest"
    assert reference.normalize("localhost:5000/a/b:v1") == "localhost:5000/a/b:v1"
    assert reference.normalize("microkube.local/busybox") == "microkube.local/busybox:latest"
    digest = "sha256:" + "a" * 64
    assert reference.normalize(f"busybox:1@{digest}") == f"docker.io/library/busybox@{digest}"
    assert reference.parse("127.0.0.1:5000/x").registry == "127.0.0.1:5000"
    for bad in ("Busybox", "busybox@sha256:zz", "a//b", ""):
        with pytest.raises(Invalid):
            reference.parse(bad)


def test_busybox_image_is_deterministic() -> None:
    first, second = busybox.build_busybox_image(), busybox.build_busybox_image()
    assert first.manifest_digest == second.manifest_digest
    assert first.blobs == second.blobs
    assert busybox.oci_layout_archive(first) == busybox.oci_layout_archive(second)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first.blobs[first.layer_digest]))) as layer:
        names = set(layer.getnames())
        assert {"bin/busybox", "bin/sh", "etc/passwd", "tmp"} <= names
        assert layer.getmember("tmp").mode == 0o1777
        assert all(m.mtime == 0 for m in layer.getmembers())


async def test_import_busybox_and_resolve_like_docker(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image_id = await busybox.import_busybox(store)
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "microkube.local/busybox",
                 image_id, image_id.split(":")[1]):
        status = await store.image_status(cri.ImageSpec(name))
        assert status is not None and status.id == image_id, name
    status = await store.image_status(cri.ImageSpec("busybox"))
    assert status is not None
    assert set(status.repo_tags) == {"docker.io/library/busybox:latest", "microkube.local/busybox:latest"}
    assert status.size > 900_000
    record = await store.resolve("busybox")
    assert record.runtime_config["Cmd"] == ["sh"]
    assert await store.image_status(cri.ImageSpec("nothere:v1")) is None
    with pytest.raises(NotFound, match="nothere:v1"):
        await store.resolve("nothere:v1")
    with pytest.raises(Invalid):
        await store.image_status(cri.ImageSpec("Bad Name"))
    info = await store.image_fs_info()
    assert info.image_filesystems[0].used_bytes > 0


def _docker_save_from(image: busybox.OciImage, tags: list[str]) -> bytes:
    """A ``docker save`` archive (manifest.json + <id>/layer.tar, uncompressed) of an OCI image."""
    layer = gzip.decompress(image.blobs[image.layer_digest])
    config_name = image.config_digest.split(":")[1] + ".json"
    layer_name = image.diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": tags, "Layers": [layer_name]}]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in ((config_name, image.config), (layer_name, layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_import_oci_layout_and_docker_save(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    archive = busybox.write_busybox_archive(tmp_path / "bb-oci.tar", "localhost/microkube/busybox:v1")
    imported = await store.import_archive(archive)
    assert [i.reference for i in imported] == ["localhost/microkube/busybox:v1"]
    image = busybox.build_busybox_image()
    assert imported[0].id == image.config_digest and imported[0].manifest_digest == image.manifest_digest

    saved = tmp_path / "bb-docker.tar"
    saved.write_bytes(_docker_save_from(image, ["example.com/me/bb:v2"]))
    from_docker = await store.import_archive(saved)
    assert [i.reference for i in from_docker] == ["example.com/me/bb:v2"]
    assert from_docker[0].id == image.config_digest  # same config: same image id
    assert from_docker[0].manifest_digest != image.manifest_digest  # uncompressed layer, another manifest
    # The layer is unpacked once, shared by both manifests.
    assert len(list((tmp_path / "store" / "layers" / "sha256").iterdir())) == 1
    listed = await store.list_images()
    assert len(listed) == 1
    assert set(listed[0].repo_tags) == {"localhost/microkube/busybox:v1", "example.com/me/bb:v2"}

    # A tag-only ref.name plus a repository from the caller.
    index_only_tag = tmp_path / "tagonly.tar"
    with tarfile.open(archive) as src, tarfile.open(index_only_tag, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "index.json" and data is not None:
                index = json.loads(data)
                del index["manifests"][0]["annotations"][images.ANNOTATION_IMAGE_NAME]
                data = json.dumps(index).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(Invalid, match="no image name"):
        await store.import_archive(index_only_tag)
    assert [i.reference for i in await store.import_archive(index_only_tag, "registry.local/bb")] == [
        "registry.local/bb:v1"]

    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(_docker_save_from(image, ["x/y:z"]).replace(b'"Layers"', b'"Nothing"'))
    with pytest.raises(Invalid):
        await store.import_archive(corrupt)


@pytest.mark.parametrize("method", ["copy", "overlay"])
async def test_rootfs_has_busybox_and_applets(tmp_path: Path, method: str) -> None:
    if method == "overlay" and not IS_ROOT:
        pytest.skip("overlayfs needs root")
    store = ImageStore(tmp_path / "store")
    await busybox.import_busybox(store)
    root = await store.rootfs("busybox", tmp_path / "c1" / "rootfs", method=method)  # type: ignore[arg-type]
    try:
        assert root.method == method
        assert (root.path / "bin" / "busybox").is_file()
        assert os.readlink(root.path / "bin" / "sh") == "busybox"
        assert {"ls", "sleep", "wget"} <= {p.name for p in (root.path / "bin").iterdir()}
        assert (root.path / "tmp").stat().st_mode & 0o7777 == 0o1777
        proc = await asyncio.create_subprocess_exec(str(root.path / "bin" / "sh"), "-c", "echo hello",
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out == b"hello\n"
        (root.path / "etc" / "written").write_text("x")  # writable root
        # Layers in use survive a removal of the image.
        await store.remove_image(cri.ImageSpec("busybox"))
        await store.remove_image(cri.ImageSpec("microkube.local/busybox"))
        assert await store.list_images() == []
        assert len(list((tmp_path / "store" / "layers" / "sha256").iterdir())) == 1
    finally:
        await store.release_rootfs(root.path)
    assert not root.path.exists()
    await store.release_rootfs(root.path)  # idempotent
    await store.gc()
    assert list((tmp_path / "store" / "layers" / "sha256").iterdir()) == []


def _layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _add_image(store: ImageStore, name: str, layers: list[bytes]) -> str:
    descriptors, diff_ids = [], []
    for layer in layers:
        blob = gzip.compress(layer, mtime=0)
        descriptors.append({"mediaType": images.OCI_LAYER_GZIP, "digest": store.write_blob(blob), "size": len(blob)})
        diff_ids.append(sha256_digest(layer))
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST,
                               "config": {"mediaType": images.OCI_CONFIG, "digest": store.write_blob(config),
                                          "size": len(config)}, "layers": descriptors})
    return store.register([name], store.write_blob(manifest))


@pytest.mark.parametrize("method", ["copy", "overlay"])
async def test_whiteouts_and_opaque_directories(tmp_path: Path, method: str) -> None:
    if method == "overlay" and not IS_ROOT:
        pytest.skip("overlayfs needs root")
    store = ImageStore(tmp_path / "store")
    lower = _layer([("a", None), ("a/keep", b"1"), ("a/gone", b"2"), ("d", None), ("d/x", b"3"), ("d/y", b"4"),
                    ("gonedir", None), ("gonedir/f", b"5")])
    upper = _layer([("a/.wh.gone", b""), ("d/.wh..wh..opq", b""), ("d/new", b"6"), (".wh.gonedir", b"")])
    _add_image(store, "local/wh:v1", [lower, upper])
    root = await store.rootfs("local/wh:v1", tmp_path / "c" / "rootfs", method=method)  # type: ignore[arg-type]
    try:
        assert sorted(p.name for p in (root.path / "a").iterdir()) == ["keep"]
        assert sorted(p.name for p in (root.path / "d").iterdir()) == ["new"]
        assert not (root.path / "gonedir").exists()
        assert (root.path / "d" / "new").read_bytes() == b"6"
    finally:
        await store.release_rootfs(root.path)


async def test_unsafe_layer_paths_are_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    evil = _layer([("../escape", b"x")])
    with pytest.raises(Invalid):
        _add_image(store, "local/evil:v1", [evil])
    assert not (tmp_path / "store" / "layers" / "escape").exists()


async def test_wrong_diff_id_is_a_clear_error(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    layer = _layer([("f", b"1")])
    blob = gzip.compress(layer, mtime=0)
    config = canonical_json({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    manifest = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST,
                               "config": {"mediaType": images.OCI_CONFIG, "digest": store.write_blob(config),
                                          "size": len(config)},
                               "layers": [{"mediaType": images.OCI_LAYER_GZIP, "digest": store.write_blob(blob),
                                           "size": len(blob)}]})
    with pytest.raises(images.DigestMismatch, match="diff_id"):
        store.register(["local/bad:v1"], store.write_blob(manifest))
    with pytest.raises(images.DigestMismatch, match="expected"):
        store.write_blob(b"abc", "sha256:" + "1" * 64)


async def test_remove_image_is_idempotent_and_collects_unused_content(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    busybox_id = await busybox.import_busybox(store)
    shared = _layer([("shared", b"s")])
    one = _add_image(store, "local/one:v1", [shared, _layer([("one", b"1")])])
    _add_image(store, "local/two:v1", [shared, _layer([("two", b"2")])])
    layers = tmp_path / "store" / "layers" / "sha256"
    blobs = tmp_path / "store" / "blobs" / "sha256"
    assert len(list(layers.iterdir())) == 4  # busybox, shared, one, two

    await store.remove_image(cri.ImageSpec(one))  # by id
    assert {i.repo_tags for i in await store.list_images()} == {
        ("docker.io/local/two:v1",), ("docker.io/library/busybox:latest", "microkube.local/busybox:latest")}
    assert len(list(layers.iterdir())) == 3  # the shared layer stays
    await store.remove_image(cri.ImageSpec(one))  # idempotent
    await store.remove_image(cri.ImageSpec("local/one:v1"))

    await store.remove_image(cri.ImageSpec("busybox"))  # by reference: that tag only
    status = await store.image_status(cri.ImageSpec("microkube.local/busybox"))
    assert status is not None and status.repo_tags == ("microkube.local/busybox:latest",)
    await store.remove_image(cri.ImageSpec(busybox_id))
    await store.remove_image(cri.ImageSpec("local/two:v1"))
    assert await store.list_images() == []
    assert list(layers.iterdir()) == [] and list(blobs.iterdir()) == []


async def test_pinned_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", pinned=["microkube.local/busybox"])
    await busybox.import_busybox(store)
    status = await store.image_status(cri.ImageSpec("busybox"))
    assert status is not None and status.pinned
