"""A busybox OCI image built from the host's static busybox, with the standard library only.

The recipe of docs' node-runtime notes §4: one layer (PAX tar) with the directories ``bin dev etc proc
sys tmp var root run`` (``tmp`` 1777), ``bin/busybox``, a symlink ``bin/<applet>`` → ``busybox`` per
applet ``busybox --list`` prints, and minimal ``etc/passwd``/``etc/group``; every mtime 0, the gzip
header's too, so every build of the same busybox binary gives the same digests. The config says
linux/amd64, ``Cmd ["sh"]``, a fixed ``created`` (the epoch) and one history entry.

``build_busybox_image()`` returns the blobs; ``write_busybox_archive()`` an OCI image-layout tarball
(``ctr images import`` and ``ImageStore.import_archive`` read it); ``import_busybox()`` puts it into a
store as ``microkube.local/busybox:latest`` and ``docker.io/library/busybox:latest`` (so ``busybox``
resolves to it as Docker would normalise it).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from microkube_interfaces.errors import NotFound
from microkube_runc import images
from microkube_runc.images import ImageStore, canonical_json, sha256_digest

BUSYBOX = "/bin/busybox"
DEFAULT_REFERENCE = "microkube.local/busybox:latest"
DEFAULT_REFERENCES = (DEFAULT_REFERENCE, "docker.io/library/busybox:latest")
DIRECTORIES = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "root", "run")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class OciImage:
    """An image as blobs: ``blobs`` maps digest → bytes (layer, config, manifest)."""

    manifest_digest: str
    config_digest: str
    layer_digest: str
    diff_id: str
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest(self) -> bytes:
        return self.blobs[self.manifest_digest]

    @property
    def config(self) -> bytes:
        return self.blobs[self.config_digest]


def applets(busybox: str = BUSYBOX) -> list[str]:
    if not os.path.exists(busybox):
        raise NotFound(f"{busybox} not found: install busybox-static (apt-get install busybox-static)")
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({name for name in out.split() if name and "/" not in name and name != "busybox"})


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_layer(busybox: str = BUSYBOX) -> bytes:
    """The uncompressed layer tar (deterministic)."""
    names = applets(busybox)
    binary = Path(busybox).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in DIRECTORIES:
            tar.addfile(_info(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for name in names:
            tar.addfile(_info(f"bin/{name}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        tar.addfile(_info("etc/passwd", tarfile.REGTYPE, 0o644, len(PASSWD)), io.BytesIO(PASSWD))
        tar.addfile(_info("etc/group", tarfile.REGTYPE, 0o644, len(GROUP)), io.BytesIO(GROUP))
    return buffer.getvalue()


def build_busybox_image(busybox: str = BUSYBOX, cmd: tuple[str, ...] = ("sh",), *, compress: bool = True) -> OciImage:
    """Build the image's blobs. Identical input gives identical digests."""
    layer = build_layer(busybox)
    diff_id = sha256_digest(layer)
    layer_blob = gzip.compress(layer, compresslevel=6, mtime=0) if compress else layer
    layer_digest = sha256_digest(layer_blob)
    config = canonical_json({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [f"PATH={PATH}"], "Cmd": list(cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "microkube: busybox from " + busybox}],
    })
    config_digest = sha256_digest(config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": images.OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": images.OCI_LAYER_GZIP if compress else images.OCI_LAYER,
                    "digest": layer_digest, "size": len(layer_blob)}],
    })
    manifest_digest = sha256_digest(manifest)
    return OciImage(manifest_digest, config_digest, layer_digest, diff_id,
                    {layer_digest: layer_blob, config_digest: config, manifest_digest: manifest})


def oci_layout_archive(image: OciImage, reference: str = DEFAULT_REFERENCE) -> bytes:
    """An OCI image-layout tarball of ``image``, named ``reference`` (notes §4, steps 5 and 6)."""
    tag = reference.rsplit(":", 1)[-1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": images.OCI_INDEX,
        "manifests": [{
            "mediaType": images.OCI_MANIFEST, "digest": image.manifest_digest, "size": len(image.manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {images.ANNOTATION_IMAGE_NAME: reference, images.ANNOTATION_REF_NAME: tag},
        }],
    })
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None, kind: bytes = tarfile.REGTYPE) -> None:
            info = _info(name, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, len(data or b""))
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", index)
        add("blobs", None, tarfile.DIRTYPE)
        add("blobs/sha256", None, tarfile.DIRTYPE)
        for digest in sorted(image.blobs):
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", image.blobs[digest])
    return buffer.getvalue()


def write_busybox_archive(path: str | os.PathLike[str], reference: str = DEFAULT_REFERENCE,
                          busybox: str = BUSYBOX) -> Path:
    """Write the OCI image-layout tarball of the busybox image to ``path``."""
    target = Path(path)
    target.write_bytes(oci_layout_archive(build_busybox_image(busybox), reference))
    return target


async def import_busybox(store: ImageStore, references: tuple[str, ...] = DEFAULT_REFERENCES,
                         busybox: str = BUSYBOX) -> str:
    """Build the busybox image and put it into ``store`` under ``references``; returns the image id."""

    def build_and_import() -> str:
        image = build_busybox_image(busybox)
        for digest, data in image.blobs.items():
            store.write_blob(data, digest, what="busybox image")
        return store.register(references, image.manifest_digest)

    return await asyncio.to_thread(build_and_import)
