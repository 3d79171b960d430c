"""An on-disk OCI image store: the runc pack's ImageService (cri/v1).

Layout under ``root``::

    blobs/sha256/<hex>            content-addressed blobs: manifests, configs, compressed layers
    layers/sha256/<hex>/fs/       one unpacked layer per diff_id (sha256 of the uncompressed tar),
    layers/sha256/<hex>/meta.json   shared by every image that has it; meta lists its whiteouts
    index.json                    references → {manifest digest, top-level digest, config digest}
    leases/<key>.json             container roots in use (their layers are never collected)
    tmp/                          downloads and unpacks in progress (renamed into place when complete)
    lock                          flock'ed by every index change and collection

An image's id is its config digest, as containerd reports. Layers are unpacked once, at import or
pull. Whiteouts (``.wh.<name>``) and opaque directories (``.wh..wh..opq``) are recorded in the
layer's meta; as root they are also written in overlayfs' format (a 0/0 character device, the
``trusted.overlay.opaque`` xattr) so the layer directories serve directly as overlay lower dirs.
``rootfs`` mounts them (overlayfs, as root) or copies them layer by layer, applying the whiteouts.

Blobs and layers no image and no lease uses are deleted when an image is removed (``gc``).
Limitation: a pull in another process racing with a collection in this one may lose blobs it wrote
but has not registered yet (the pull then fails and can be retried); within one process pulls are
protected.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid, NotFound, Permanent, Unsupported
from microkube_runc import reference as refs

# Media types.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
GZIP_LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
PLAIN_LAYERS = (OCI_LAYER, DOCKER_LAYER, "application/vnd.oci.image.layer.nondistributable.v1.tar")

#: The annotation containerd (and ``docker save`` ≥ 25) puts the full image name in.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20


class DigestMismatch(Permanent):
    """Content did not hash to the digest that named it (corrupt download, wrong archive)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Compact JSON, the encoding the store writes manifests and configs in (deterministic digests)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _hex(digest: str) -> str:
    if not refs.DIGEST.fullmatch(digest):
        raise Invalid.field("digest", f"unsupported or malformed digest {digest!r} (sha256 only)")
    return digest.split(":", 1)[1]


@dataclass(frozen=True)
class ImageRecord:
    """One image present in the store: its id, manifest, config and the references naming it."""

    id: str
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    references: tuple[str, ...]
    #: ``name@digest`` for each named repository (digest of what the registry or archive served).
    repo_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]
    size: int

    @property
    def runtime_config(self) -> dict[str, Any]:
        """The image config's ``config`` section: Env, Entrypoint, Cmd, WorkingDir, User, …"""
        section = self.config.get("config") or {}
        return dict(section)


@dataclass(frozen=True)
class ImportedImage:
    reference: str
    id: str
    manifest_digest: str


@dataclass(frozen=True)
class Rootfs:
    """A prepared container root. ``method`` says how: ``overlay`` (mounted) or ``copy``."""

    path: Path
    method: Literal["overlay", "copy"]
    image_id: str
    #: overlay only: the writable upper and work directories.
    upper: Path | None = None
    work: Path | None = None
    #: Why overlay was not used, when it was not.
    fallback_reason: str = ""


@dataclass
class _Inflight:
    blobs: set[str] = field(default_factory=set)


class ImageStore:
    """An OCI image store in ``root``; implements cri.ImageService plus import, tag and rootfs.

    ``pinned`` references (e.g. the sandbox image) are reported with ``Image.pinned``.
    ``insecure_registries`` are hosts pulled from over plain HTTP besides loopback ones.
    """

    def __init__(self, root: str | os.PathLike[str], *, pinned: Iterable[str] = (),
                 insecure_registries: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.pinned = {refs.normalize(r) for r in pinned}
        self.insecure_registries = set(insecure_registries)
        for sub in ("blobs/sha256", "layers/sha256", "leases", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.RLock()
        self._inflight = _Inflight()
        self._is_root = os.geteuid() == 0

    # --- locking and the index ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / "lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {}
        references: dict[str, dict[str, str]] = data.get("references", {})
        return references

    def _write_index(self, references: dict[str, dict[str, str]]) -> None:
        self._atomic_write(self.root / "index.json", json.dumps({"version": 1, "references": references},
                                                                indent=1, sort_keys=True).encode())

    def _atomic_write(self, path: Path, data: bytes) -> None:
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    # --- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the image store") from None

    def temp_path(self) -> Path:
        """A fresh path under the store's tmp directory (same filesystem as the blobs)."""
        return self.root / "tmp" / f"{uuid.uuid4().hex}.part"

    def commit_blob(self, tmp: Path, digest: str) -> None:
        """Move a completely written, already verified temporary file into place as ``digest``."""
        self._inflight.blobs.add(digest)
        os.replace(tmp, self.blob_path(digest))

    def write_blob(self, data: bytes, expected: str | None = None, *, what: str = "blob") -> str:
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{what}: content has digest {digest} ({len(data)} bytes), expected {expected}")
        self._inflight.blobs.add(digest)
        if not self.has_blob(digest):
            tmp = self.temp_path()
            tmp.write_bytes(data)
            os.replace(tmp, self.blob_path(digest))
        return digest

    def write_blob_stream(self, stream: IO[bytes], expected: str, *, size: int = -1, what: str = "blob") -> str:
        """Copy ``stream`` into the store, verifying ``expected`` (and ``size`` when ≥ 0)."""
        self._inflight.blobs.add(expected)
        if self.has_blob(expected):
            return expected
        tmp = self.temp_path()
        try:
            digest, written = _copy_hashing(stream, tmp)
            if digest != expected or (size >= 0 and written != size):
                raise DigestMismatch(f"{what}: content has digest {digest} ({written} bytes), "
                                     f"expected {expected}" + (f" ({size} bytes)" if size >= 0 else ""))
            os.replace(tmp, self.blob_path(expected))
        finally:
            tmp.unlink(missing_ok=True)
        return expected

    # --- registering images ---------------------------------------------------------------------

    def _load_manifest(self, digest: str) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(self.read_blob(digest))
        media_type = manifest.get("mediaType", OCI_MANIFEST if "config" in manifest else "")
        if media_type not in MANIFEST_TYPES:
            raise Unsupported(f"manifest {digest} has media type {media_type!r}; "
                              f"supported: {', '.join(MANIFEST_TYPES)}")
        return manifest

    def register(self, references: Iterable[str], manifest_digest: str, top_digest: str = "") -> str:
        """Point ``references`` at a manifest whose blobs are all present; unpack its layers.

        ``top_digest`` is the digest the references were resolved to (an index's, for multi-platform
        images); it names the image in ``repo_digests``. Returns the image id.
        """
        manifest = self._load_manifest(manifest_digest)
        config_digest = manifest["config"]["digest"]
        config = json.loads(self.read_blob(config_digest))
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = manifest.get("layers") or []
        if len(diff_ids) != len(layers):
            raise Invalid(f"image {manifest_digest}: config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
        for descriptor, diff_id in zip(layers, diff_ids, strict=True):
            self._ensure_layer(descriptor, diff_id)
        names = [refs.normalize(r) for r in references]
        with self._locked():
            index = self._read_index()
            for name in names:
                index[name] = {"manifest": manifest_digest, "digest": top_digest or manifest_digest,
                               "config": config_digest}
            self._write_index(index)
            self._inflight.blobs.difference_update({manifest_digest, config_digest, top_digest,
                                                    *(d["digest"] for d in layers)})
        return str(config_digest)

    def _ensure_layer(self, descriptor: dict[str, Any], diff_id: str) -> Path:
        final = self.root / "layers" / "sha256" / _hex(diff_id)
        if (final / "meta.json").exists():
            return final
        media_type = descriptor.get("mediaType", OCI_LAYER_GZIP)
        blob = self.blob_path(descriptor["digest"])
        if not blob.exists():
            raise NotFound(f"layer blob {descriptor['digest']} is not in the image store")
        if media_type == OCI_LAYER_ZSTD:
            raise Unsupported(f"layer {descriptor['digest']}: zstd-compressed layers are not supported")
        work = self.root / "tmp" / f"layer-{uuid.uuid4().hex}"
        (work / "fs").mkdir(parents=True)
        try:
            with open(blob, "rb") as raw:
                gzipped = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                if media_type not in GZIP_LAYERS + PLAIN_LAYERS:
                    raise Unsupported(f"layer {descriptor['digest']} has unsupported media type {media_type!r}")
                source: Any = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
                hashing = _HashingReader(source)
                meta = unpack_layer(hashing, work / "fs", overlay_format=self._is_root)
                hashing.drain()
            actual = "sha256:" + hashing.hasher.hexdigest()
            if actual != diff_id:
                raise DigestMismatch(f"layer {descriptor['digest']}: uncompressed content has digest {actual}, "
                                     f"the image config says diff_id {diff_id}")
            (work / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(work, final)
            except OSError as exc:  # another unpack of the same layer won
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        finally:
            if work.exists():
                _rmtree(work)
        return final

    def tag_sync(self, source: str, target: str) -> None:
        record = self.resolve_sync(source)
        with self._locked():
            index = self._read_index()
            index[refs.normalize(target)] = {"manifest": record.manifest_digest, "digest": record.manifest_digest,
                                             "config": record.id}
            self._write_index(index)

    # --- resolving ------------------------------------------------------------------------------

    def _entries_for(self, image: str, index: dict[str, dict[str, str]]) -> list[str]:
        """The index keys ``image`` names: a reference, ``name@digest``, an image id or a bare id."""
        text = image.strip()
        if refs.DIGEST.fullmatch(text) or (len(text) == 64 and all(c in "0123456789abcdef" for c in text)):
            digest = text if text.startswith("sha256:") else f"sha256:{text}"
            by_id = [k for k, v in index.items() if v["config"] == digest]
            return by_id or [k for k, v in index.items() if digest in (v["manifest"], v["digest"])]
        ref = refs.parse(text)
        if ref.digest:
            return [k for k, v in index.items()
                    if k == str(ref) or (refs.parse(k).name == ref.name and ref.digest in (v["manifest"], v["digest"]))]
        key = str(ref)
        return [key] if key in index else []

    def resolve_sync(self, image: str) -> ImageRecord:
        index = self._read_index()
        keys = self._entries_for(image, index)
        if not keys:
            raise NotFound(f"image {image!r} not found in the image store"
                           + (f" (as {refs.normalize(image)})" if _is_reference(image) else ""))
        return self._record(index[keys[0]]["config"], index, preferred=index[keys[0]]["manifest"])

    def _record(self, image_id: str, index: dict[str, dict[str, str]], preferred: str = "") -> ImageRecord:
        entries = {k: v for k, v in index.items() if v["config"] == image_id}
        manifest_digest = preferred or next(iter(entries.values()))["manifest"]
        manifest = self._load_manifest(manifest_digest)
        config = json.loads(self.read_blob(image_id))
        references = tuple(sorted(k for k in entries if "@" not in k))
        repo_digests = tuple(sorted({f"{refs.parse(k).name}@{v['digest']}" for k, v in entries.items()}))
        size = sum(_size(self.blob_path(d)) for d in
                   {manifest_digest, image_id, *(layer["digest"] for layer in manifest.get("layers") or [])})
        return ImageRecord(
            id=image_id, manifest_digest=manifest_digest, manifest=manifest, config=config,
            references=references, repo_digests=repo_digests,
            diff_ids=tuple((config.get("rootfs") or {}).get("diff_ids") or []), size=size)

    def records_sync(self) -> list[ImageRecord]:
        index = self._read_index()
        return [self._record(image_id, index) for image_id in sorted({v["config"] for v in index.values()})]

    def _to_cri(self, record: ImageRecord) -> cri.Image:
        user = str(record.runtime_config.get("User") or "")
        uid: int | None = None
        username = ""
        name = user.split(":", 1)[0]
        if name.isdigit():
            uid = int(name)
        elif name:
            username = name
        return cri.Image(
            id=record.id, repo_tags=record.references, repo_digests=record.repo_digests, size=record.size,
            uid=uid, username=username, spec=cri.ImageSpec(record.id),
            pinned=any(r in self.pinned for r in record.references))

    # --- removal and collection -----------------------------------------------------------------

    def remove_sync(self, image: str) -> bool:
        """Remove ``image``; returns False when it was not present. By id or digest: every reference
        of it; by reference: that reference only. Then collects unused content."""
        with self._locked():
            index = self._read_index()
            keys = self._entries_for(image, index)
            if not keys:
                return False
            if not _is_reference(image):  # an id: every name of the image
                ids = {index[k]["config"] for k in keys}
                keys = [k for k, v in index.items() if v["config"] in ids]
            for key in keys:
                index.pop(key, None)
            self._write_index(index)
            self._gc_locked(index)
        return True

    def gc_sync(self) -> int:
        """Delete blobs and layers no image or lease uses; returns the bytes freed."""
        with self._locked():
            return self._gc_locked(self._read_index())

    def _gc_locked(self, index: dict[str, dict[str, str]]) -> int:
        keep_blobs: set[str] = set(self._inflight.blobs)
        keep_layers: set[str] = set()
        for entry in index.values():
            keep_blobs.update({entry["manifest"], entry["digest"], entry["config"]})
            try:
                manifest = self._load_manifest(entry["manifest"])
                config = json.loads(self.read_blob(entry["config"]))
            except (NotFound, Unsupported, ValueError):
                continue
            keep_blobs.update(layer["digest"] for layer in manifest.get("layers") or [])
            keep_layers.update((config.get("rootfs") or {}).get("diff_ids") or [])
        for lease in (self.root / "leases").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                keep_layers.update(json.loads(lease.read_bytes()).get("diff_ids", []))
        freed = 0
        for blob in (self.root / "blobs" / "sha256").iterdir():
            if f"sha256:{blob.name}" not in keep_blobs:
                freed += _size(blob)
                blob.unlink(missing_ok=True)
        for layer in (self.root / "layers" / "sha256").iterdir():
            if f"sha256:{layer.name}" not in keep_layers:
                freed += _tree_size(layer)[0]
                _rmtree(layer)
        return freed

    # --- import ---------------------------------------------------------------------------------

    def import_archive_sync(self, path: str | os.PathLike[str], reference: str | None = None) -> list[ImportedImage]:
        """Import an OCI image-layout tarball or a ``docker save`` tarball (gzip'd or not).

        Names come from the archive (``io.containerd.image.name``, a full
        ``org.opencontainers.image.ref.name``, docker's ``RepoTags``); ``reference`` names a single
        image (or supplies the repository for a tag-only ``ref.name``). An image without any name is
        refused with Invalid.
        """
        try:
            with tarfile.open(path, "r:*") as archive:
                members = {_member_name(m.name): m for m in archive.getmembers()}
                if "index.json" in members:
                    return self._import_oci(archive, members, reference, str(path))
                if "manifest.json" in members:
                    return self._import_docker(archive, members, reference, str(path))
        except (ValueError, KeyError, TypeError, tarfile.TarError) as exc:
            raise Invalid.field("archive", f"{path}: malformed image archive: {type(exc).__name__}: {exc}") from exc
        raise Invalid.field("archive", f"{path}: neither an OCI image layout (index.json) nor a docker save "
                            "archive (manifest.json)")

    def _archive_blob(self, archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str,
                      expected: str, size: int, source: str) -> None:
        member = members.get(name)
        if member is None:
            raise Invalid.field("archive", f"{source}: {name} is missing")
        handle = archive.extractfile(member)
        if handle is None:
            raise Invalid.field("archive", f"{source}: {name} is not a regular file")
        with handle:
            self.write_blob_stream(handle, expected, size=size, what=f"{source}: {name}")

    def _import_oci(self, archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], reference: str | None,
                    source: str) -> list[ImportedImage]:
        def read_json(name: str) -> Any:
            member = members.get(name)
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise Invalid.field("archive", f"{source}: {name} is missing")
            with handle:
                return json.loads(handle.read())

        def blob_name(digest: str) -> str:
            return f"blobs/sha256/{_hex(digest)}"

        index = read_json("index.json")
        descriptors = index.get("manifests") or []
        imported: list[ImportedImage] = []
        for descriptor in descriptors:
            annotations = descriptor.get("annotations") or {}
            names = _names_from_annotations(annotations, reference if len(descriptors) == 1 else None)
            if not names:
                raise Invalid.field("archive", f"{source}: manifest {descriptor.get('digest')} has no image name; "
                                    "pass a reference to name it")
            top = descriptor["digest"]
            self._archive_blob(archive, members, blob_name(top), top, descriptor.get("size", -1), source)
            manifest_digest = top
            if descriptor.get("mediaType") in INDEX_TYPES:
                chosen = choose_platform(json.loads(self.read_blob(top)), f"{source}: {top}")
                manifest_digest = chosen["digest"]
                self._archive_blob(archive, members, blob_name(manifest_digest), manifest_digest,
                                   chosen.get("size", -1), source)
            manifest = self._load_manifest(manifest_digest)
            for item in [manifest["config"], *(manifest.get("layers") or [])]:
                self._archive_blob(archive, members, blob_name(item["digest"]), item["digest"],
                                   item.get("size", -1), source)
            image_id = self.register(names, manifest_digest, top)
            imported += [ImportedImage(refs.normalize(n), image_id, manifest_digest) for n in names]
        return imported

    def _import_docker(self, archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], reference: str | None,
                       source: str) -> list[ImportedImage]:
        def open_member(name: str) -> IO[bytes]:
            member = members.get(_member_name(name))
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise Invalid.field("archive", f"{source}: {name} is missing")
            return handle

        with open_member("manifest.json") as handle:
            entries = json.loads(handle.read())
        imported: list[ImportedImage] = []
        for entry in entries:
            names = list(entry.get("RepoTags") or [])
            if reference is not None and len(entries) == 1:
                names = [reference]
            if not names:
                raise Invalid.field("archive", f"{source}: image {entry.get('Config')} has no RepoTags; "
                                    "pass a reference to name it")
            with open_member(entry["Config"]) as handle:
                config_bytes = handle.read()
            config_digest = self.write_blob(config_bytes, what=f"{source}: {entry['Config']}")
            layers = []
            for layer_name in entry.get("Layers") or []:
                with open_member(layer_name) as handle:
                    gzipped = handle.read(2) == b"\x1f\x8b"
                with open_member(layer_name) as handle:
                    digest, size = self._write_unverified(handle)
                layers.append({"mediaType": OCI_LAYER_GZIP if gzipped else OCI_LAYER, "digest": digest, "size": size})
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                        "layers": layers}
            manifest_digest = self.write_blob(canonical_json(manifest))
            image_id = self.register(names, manifest_digest)
            imported += [ImportedImage(refs.normalize(n), image_id, manifest_digest) for n in names]
        return imported

    def _write_unverified(self, stream: IO[bytes]) -> tuple[str, int]:
        tmp = self.temp_path()
        try:
            digest, size = _copy_hashing(stream, tmp)
            self._inflight.blobs.add(digest)
            if not self.has_blob(digest):
                os.replace(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    # --- container roots ------------------------------------------------------------------------

    def _lease_path(self, target: Path) -> Path:
        return self.root / "leases" / (hashlib.sha256(str(target).encode()).hexdigest()[:32] + ".json")

    def rootfs_sync(self, image: str, target: str | os.PathLike[str], *,
                    method: Literal["auto", "overlay", "copy"] = "auto",
                    scratch: str | os.PathLike[str] | None = None) -> Rootfs:
        """Prepare ``target`` as a container root of ``image``.

        ``auto`` mounts overlayfs (lower dirs = the image's layer directories, upper and work dirs in
        ``scratch``, default ``<target's parent>/.<target name>-overlay``) when running as root and the
        mount succeeds, else copies the layers. The layers stay protected from collection until
        ``release_rootfs``. Raises NotFound naming the image when it is not present.
        """
        record = self.resolve_sync(image)
        target = Path(target).absolute()
        scratch_dir = Path(scratch).absolute() if scratch is not None else target.parent / f".{target.name}-overlay"
        layer_dirs = [self.root / "layers" / "sha256" / _hex(d) for d in record.diff_ids]
        lease = self._lease_path(target)
        with self._locked():
            for d in layer_dirs:
                if not (d / "meta.json").exists():
                    raise NotFound(f"image {image!r}: layer {d.name} is not unpacked (re-import or re-pull it)")
            self._atomic_write(lease, json.dumps({
                "target": str(target), "scratch": str(scratch_dir), "image": record.id,
                "diff_ids": list(record.diff_ids)}).encode())
        target.mkdir(parents=True, exist_ok=True)
        reason = ""
        try:
            if method in ("auto", "overlay"):
                reason = _overlay_unavailable(self._is_root, layer_dirs)
                if not reason:
                    upper, work = scratch_dir / "upper", scratch_dir / "work"
                    upper.mkdir(parents=True, exist_ok=True)
                    work.mkdir(parents=True, exist_ok=True)
                    lowers = ":".join(str(d / "fs") for d in reversed(layer_dirs)) if layer_dirs else ""
                    if len(layer_dirs) == 0:
                        empty = scratch_dir / "empty"
                        empty.mkdir(exist_ok=True)
                        lowers = str(empty)
                    reason = _mount_overlay(lowers, upper, work, target)
                    if not reason:
                        self._update_lease(lease, method="overlay")
                        return Rootfs(target, "overlay", record.id, upper, work)
                if method == "overlay":
                    raise Unsupported(f"overlayfs is not available: {reason}")
            for d in layer_dirs:
                meta = json.loads((d / "meta.json").read_text())
                apply_layer(d / "fs", meta, target, is_root=self._is_root)
            self._update_lease(lease, method="copy")
            return Rootfs(target, "copy", record.id, fallback_reason=reason)
        except BaseException:
            lease.unlink(missing_ok=True)
            raise

    def _update_lease(self, lease: Path, **values: str) -> None:
        data = json.loads(lease.read_bytes())
        data.update(values)
        self._atomic_write(lease, json.dumps(data).encode())

    def release_rootfs_sync(self, target: str | os.PathLike[str]) -> None:
        """Unmount (overlay) and delete a root made by ``rootfs``, its scratch dirs and its lease. Idempotent."""
        target = Path(target).absolute()
        lease = self._lease_path(target)
        scratch: Path | None = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            data = json.loads(lease.read_bytes())
            scratch = Path(data["scratch"])
            if data.get("method") == "overlay":
                _umount(target)
        if target.exists():
            if _is_mountpoint(target):
                _umount(target)
            _rmtree(target)
        if scratch is not None and scratch.exists():
            _rmtree(scratch)
        lease.unlink(missing_ok=True)

    # --- async API (cri.ImageService and the rest) ----------------------------------------------

    async def list_images(self, filter: cri.ImageFilter | None = None) -> list[cri.Image]:
        if filter is not None and filter.image is not None and filter.image.image:
            image = await self.image_status(filter.image)
            return [image] if image is not None else []
        records = await asyncio.to_thread(self.records_sync)
        return [self._to_cri(r) for r in records]

    async def image_status(self, image: cri.ImageSpec, verbose: bool = False) -> cri.Image | None:
        try:
            record = await asyncio.to_thread(self.resolve_sync, image.image)
        except NotFound:
            return None
        return self._to_cri(record)

    async def pull_image(self, image: cri.ImageSpec, auth: cri.AuthConfig | None = None,
                         sandbox_config: cri.PodSandboxConfig | None = None) -> str:
        from microkube_runc.registry import RegistryClient  # registry needs aiohttp; import it when used

        async with RegistryClient(insecure=self.insecure_registries) as client:
            return await client.pull(self, image.image, auth)

    async def remove_image(self, image: cri.ImageSpec) -> None:
        await asyncio.to_thread(self.remove_sync, image.image)

    async def image_fs_info(self) -> cri.ImageFsInfo:
        def usage() -> cri.FilesystemUsage:
            used, inodes = _tree_size(self.root)
            return cri.FilesystemUsage(timestamp=time.time_ns(), mountpoint=str(self.root),
                                       used_bytes=used, inodes_used=inodes)

        return cri.ImageFsInfo(image_filesystems=(await asyncio.to_thread(usage),))

    async def resolve(self, image: str) -> ImageRecord:
        """The image ``image`` names; raises NotFound naming it."""
        return await asyncio.to_thread(self.resolve_sync, image)

    async def import_archive(self, path: str | os.PathLike[str], reference: str | None = None) -> list[ImportedImage]:
        return await asyncio.to_thread(self.import_archive_sync, path, reference)

    async def tag(self, source: str, target: str) -> None:
        await asyncio.to_thread(self.tag_sync, source, target)

    async def gc(self) -> int:
        return await asyncio.to_thread(self.gc_sync)

    async def rootfs(self, image: str, target: str | os.PathLike[str], *,
                     method: Literal["auto", "overlay", "copy"] = "auto",
                     scratch: str | os.PathLike[str] | None = None) -> Rootfs:
        return await asyncio.to_thread(self.rootfs_sync, image, target, method=method, scratch=scratch)

    async def release_rootfs(self, target: str | os.PathLike[str]) -> None:
        await asyncio.to_thread(self.release_rootfs_sync, target)


# --- helpers ------------------------------------------------------------------------------------


def choose_platform(index: dict[str, Any], what: str, os_name: str = "linux",
                    architecture: str = "amd64") -> dict[str, Any]:
    """The descriptor for ``os_name``/``architecture`` in an OCI index or Docker manifest list."""
    manifests: list[dict[str, Any]] = index.get("manifests") or []
    for descriptor in manifests:
        platform = descriptor.get("platform") or {}
        if platform.get("os") == os_name and platform.get("architecture") == architecture:
            return descriptor
    offered = ", ".join(f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                        for d in manifests)
    raise NotFound(f"{what}: no manifest for {os_name}/{architecture} (offered: {offered or 'none'})")


def _names_from_annotations(annotations: dict[str, str], reference: str | None) -> list[str]:
    if reference is not None:
        ref_name = annotations.get(ANNOTATION_REF_NAME, "")
        if ref_name and ":" not in reference.rsplit("/", 1)[-1] and "@" not in reference and _is_tag(ref_name):
            return [f"{reference}:{ref_name}"]
        return [reference]
    full = annotations.get(ANNOTATION_IMAGE_NAME)
    if full:
        return [full]
    ref_name = annotations.get(ANNOTATION_REF_NAME, "")
    if ref_name and not _is_tag(ref_name):
        return [ref_name]
    return []


def _is_tag(text: str) -> bool:
    return "/" not in text and ":" not in text and "@" not in text and bool(refs._TAG.fullmatch(text))


def _is_reference(image: str) -> bool:
    text = image.strip()
    return not (refs.DIGEST.fullmatch(text) or (len(text) == 64 and all(c in "0123456789abcdef" for c in text)))


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tree_size(path: Path) -> tuple[int, int]:
    used = inodes = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                used += st.st_blocks * 512
                inodes += 1
    return used, inodes


def _rmtree(path: Path) -> None:
    def onerror(func: Any, name: str, exc_info: Any) -> None:
        # Read-only directories from images: make them writable and retry once.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            func(name)

    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path, onerror=onerror)


class _HashingReader:
    """A read-only file object that hashes what passes through it (for tarfile's stream mode)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _copy_hashing(stream: IO[bytes], target: Path) -> tuple[str, int]:
    """Copy ``stream`` into ``target``; its sha256 digest and size."""
    hasher = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _safe_parent(root: Path, rel: str, *, create: bool = False) -> Path | None:
    """``root/rel`` when every parent component inside ``root`` is a real directory (missing ones are
    made when ``create``, else the answer is None)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return None
    return current / parts[-1]


def _make_parents(root: Path, rel: str) -> Path | None:
    return _safe_parent(root, rel, create=True)


def unpack_layer(stream: Any, dest: Path, *, overlay_format: bool) -> dict[str, Any]:
    """Extract one layer tar (a readable stream) into ``dest``; returns its meta.

    Whiteout entries are not extracted as files: ``meta["whiteouts"]`` lists the paths they delete and
    ``meta["opaque"]`` the directories whose lower content they hide. With ``overlay_format`` (as
    root) they are also written as overlayfs expects. Paths escaping ``dest`` are refused.
    """
    whiteouts: list[str] = []
    opaque: list[str] = []
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    is_root = os.geteuid() == 0
    dest_str = str(dest)

    def member_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        checked = tarfile.tar_filter(member, path)  # refuses absolute and escaping paths
        if member.islnk():
            target = os.path.normpath(_member_name(member.linkname))
            if target.startswith("..") or os.path.isabs(target):
                raise tarfile.LinkOutsideDestinationError(member, target)
        return checked.replace(mode=member.mode, deep=False)

    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = _member_name(os.path.normpath(member.name) if member.name not in ("", ".", "./") else "")
            if name in ("", "."):
                continue
            if name.startswith("..") or "/../" in f"/{name}/":
                raise Invalid.field("layer", f"layer entry {member.name!r} escapes the layer")
            base = os.path.basename(name)
            parent = os.path.dirname(name)
            if base == OPAQUE_MARKER:
                opaque.append(parent)
                continue
            if base.startswith(WHITEOUT_PREFIX):
                whiteouts.append(os.path.join(parent, base[len(WHITEOUT_PREFIX):]))
                continue
            member.name = name
            existing = dest / name
            if existing.is_symlink() or (existing.exists() and not existing.is_dir()):
                existing.unlink()
            if (member.ischr() or member.isblk()) and not is_root:
                continue  # cannot mknod without root; images rarely carry devices
            try:
                archive.extract(member, dest_str, set_attrs=not member.isdir(), numeric_owner=True,
                                filter=member_filter)
            except tarfile.FilterError as exc:
                raise Invalid.field("layer", f"unsafe layer entry {member.name!r}: {exc}") from None
            if member.isdir():
                os.chmod(dest / name, 0o755 | stat.S_IWUSR | stat.S_IXUSR)
                directories.append((dest / name, member))
    for path, member in reversed(directories):
        if is_root:
            os.chown(path, member.uid, member.gid)
        os.chmod(path, member.mode)
        os.utime(path, (member.mtime, member.mtime))
    if overlay_format:
        for rel in whiteouts:
            device = _make_parents(dest, rel)
            if device is None:
                continue  # a parent inside the layer is not a directory: nothing to hide below it
            if device.is_symlink() or device.exists():
                _rmtree(device)
            os.mknod(device, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        for rel in opaque:
            directory = _make_parents(dest, rel) if rel else dest
            if directory is None or directory.is_symlink():
                continue
            directory.mkdir(exist_ok=True)
            os.setxattr(directory, "trusted.overlay.opaque", b"y")
    return {"whiteouts": sorted(set(whiteouts)), "opaque": sorted(set(opaque)), "overlay_format": overlay_format}


def _remove_path(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        _rmtree(path)
    else:
        path.unlink()


def apply_layer(fs: Path, meta: dict[str, Any], target: Path, *, is_root: bool) -> None:
    """Copy one unpacked layer onto ``target`` as overlayfs would merge it: opaque directories and
    whiteouts delete lower content first, then the layer's entries replace what they name. Symlinks
    already in ``target`` are never followed."""
    for rel in meta.get("opaque", []):
        directory = _safe_parent(target, rel) if rel else target
        if directory is not None and directory.is_dir() and not directory.is_symlink():
            for child in list(directory.iterdir()):
                _remove_path(child)
    for rel in meta.get("whiteouts", []):
        path = _safe_parent(target, rel)
        if path is not None:
            _remove_path(path)
    skip = set(meta.get("whiteouts", [])) if meta.get("overlay_format") else set()
    _copy_tree(fs, target, "", skip, is_root)


def _copy_tree(src: Path, dst: Path, rel: str, skip: set[str], is_root: bool) -> None:
    with os.scandir(src) as entries:
        for entry in entries:
            entry_rel = rel + entry.name
            if entry_rel in skip:
                continue
            st = entry.stat(follow_symlinks=False)
            out = dst / entry.name
            if stat.S_ISDIR(st.st_mode):
                try:
                    existing = os.lstat(out)
                except FileNotFoundError:
                    existing = None
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    out.unlink()
                    existing = None
                if existing is None:
                    os.mkdir(out, 0o700)
                else:
                    os.chmod(out, 0o700 | existing.st_mode)
                _copy_tree(Path(entry.path), out, entry_rel + "/", skip, is_root)
                os.chmod(out, stat.S_IMODE(st.st_mode))
                if is_root:
                    os.chown(out, st.st_uid, st.st_gid)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                continue
            _remove_path(out)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(entry.path), out)
            elif stat.S_ISREG(st.st_mode):
                shutil.copy2(entry.path, out, follow_symlinks=False)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if not is_root:
                    continue
                os.mknod(out, st.st_mode, st.st_rdev)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(out, stat.S_IMODE(st.st_mode))
            else:
                continue
            if is_root:
                os.lchown(out, st.st_uid, st.st_gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# --- overlayfs ----------------------------------------------------------------------------------

_MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _overlay_unavailable(is_root: bool, layer_dirs: list[Path]) -> str:
    if not is_root:
        return "not running as root"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        return "the kernel has no overlay filesystem"
    options = sum(len(str(d)) + 4 for d in layer_dirs)
    if options > 3500:
        return f"{len(layer_dirs)} layers make overlay mount options too long"
    if any(c in str(d) for d in layer_dirs for c in ":,"):
        return "a layer path contains ':' or ','"
    return ""


def _mount_overlay(lowers: str, upper: Path, work: Path, target: Path) -> str:
    """Mount overlayfs at ``target``; returns "" on success, else why it failed."""
    options = f"lowerdir={lowers},upperdir={upper},workdir={work}"
    result = _libc().mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode())
    if result != 0:
        code = ctypes.get_errno()
        return f"mount overlay failed: {os.strerror(code)}"
    return ""


def _umount(target: Path) -> None:
    if _libc().umount2(str(target).encode(), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"umount {target}: {os.strerror(code)}")


def _is_mountpoint(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False
