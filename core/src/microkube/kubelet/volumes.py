"""Pod volumes on this node: each volume of a pod gets a host path under
``<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`` (kubelet's layout) or, for hostPath, the
host path itself; container volumeMounts become CRI mounts.

API-backed contents (configMap, secret, downwardAPI, projected incl. service-account tokens) are written
by an atomic writer with kubelet's layout: the files live in a ``..<timestamp>`` directory, ``..data`` is
a symlink to it, and the names users see are symlinks through ``..data``; an update writes a new
timestamped directory and swaps ``..data`` with one rename, so a reader never sees a mix of versions.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microkube.apiserver.quantity import parse_quantity
from microkube.client import Client, Resource
from microkube.kubelet import envvars
from microkube_interfaces import cri, errors

Object = dict[str, Any]

SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts")
NODES = Resource("", "v1", "nodes", namespaced=False)

PLUGIN_DIRS = {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
               "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
               "projected": "kubernetes.io~projected"}
SUPPORTED = ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected")
#: Volume types whose contents come from the API: always mounted read-only (kubelet's ReadOnly attribute).
API_BACKED = frozenset({"configMap", "secret", "downwardAPI", "projected"})
DEFAULT_MODE = 0o644
DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"
#: A token is re-requested once this share of its lifetime has passed, or after 24 h (kubelet's token manager).
TOKEN_REFRESH_AFTER = 0.8
TOKEN_MAX_AGE = 24 * 3600
DEFAULT_TOKEN_SECONDS = 3600
PROPAGATION = {None: cri.MountPropagation.PROPAGATION_PRIVATE, "None": cri.MountPropagation.PROPAGATION_PRIVATE,
               "HostToContainer": cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
               "Bidirectional": cri.MountPropagation.PROPAGATION_BIDIRECTIONAL}

_MNT_DETACH = 2
_libc: ctypes.CDLL | None = None


class VolumeError(errors.MicrokubeError):
    """A volume cannot be set up or mounted. ``reason`` is the event reason kubelet uses: FailedMount for
    setup, CreateContainerConfigError for a container's volumeMounts that cannot be honoured."""

    def __init__(self, message: str, *, volume: str = "", reason: str = "FailedMount") -> None:
        super().__init__(message)
        self.volume = volume
        self.reason = reason


class _Failed(Exception):
    """A volume plugin's own failure, wrapped with the volume's name by the manager."""


@dataclass
class _Token:
    token: str
    issued: float
    expires: float


def _volume_type(volume: Object) -> str:
    kinds = [key for key in volume if key != "name"]
    return kinds[0] if kinds else "emptyDir"


def _mode(value: Any, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        raise _Failed(f"mode {value!r} must be an integer between 0 and 0777 (octal), e.g. 420 for 0644")
    return value


# -- low-level helpers (run in a thread) ------------------------------------------------------------


def _libc_handle() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _mount_tmpfs(target: Path, size: int | None) -> None:
    options = f"mode=0777,size={size}" if size else "mode=0777"
    if _libc_handle().mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise _Failed(f"mounting tmpfs on {target} failed: {os.strerror(err)} (memory-backed emptyDir volumes need "
                      f"CAP_SYS_ADMIN; run the node agent as root or use medium \"\")")


def _unmount(target: str) -> None:
    libc = _libc_handle()
    if libc.umount2(os.fsencode(target), 0) != 0 and libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unmounting {target} failed: {os.strerror(err)}")


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` (from /proc/self/mountinfo), deepest first."""
    prefix = os.path.realpath(directory)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _is_mount(path: Path) -> bool:
    return os.path.realpath(path) in _mounts_under(path)


def _validate_payload_path(path: str) -> str:
    if not path:
        raise _Failed("invalid path: must not be empty")
    if os.path.isabs(path):
        raise _Failed(f"invalid path {path!r}: must be relative")
    parts = path.split("/")
    if ".." in parts:
        raise _Failed(f"invalid path {path!r}: must not contain '..'")
    if path.startswith(".."):
        raise _Failed(f"invalid path {path!r}: must not start with '..'")
    return os.path.normpath(path)


def _current_payload(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data = target / DATA_DIR
    if not data.is_symlink():
        return None
    found: dict[str, tuple[bytes, int]] = {}
    base = os.path.realpath(data)
    for directory, _, files in os.walk(base):
        for name in files:
            full = os.path.join(directory, name)
            info = os.lstat(full)
            found[os.path.relpath(full, base)] = (Path(full).read_bytes(), stat.S_IMODE(info.st_mode))
    return found


def write_atomically(target: Path, payload: dict[str, tuple[bytes, int]]) -> bool:
    """Make ``target`` hold exactly ``payload`` (path -> (content, mode)); True when something changed."""
    clean = {_validate_payload_path(path): value for path, value in payload.items()}
    target.mkdir(parents=True, exist_ok=True)
    if _current_payload(target) == clean:
        return False
    old_dir = os.readlink(target / DATA_DIR) if (target / DATA_DIR).is_symlink() else None
    new_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target))
    os.chmod(new_dir, 0o755)
    for path, (content, mode) in clean.items():
        full = new_dir / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content)
        os.chmod(full, mode)
    tmp_link = target / DATA_DIR_TMP
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(new_dir.name, tmp_link)
    os.rename(tmp_link, target / DATA_DIR)
    visible = {path.split("/", 1)[0] for path in clean}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            os.symlink(os.path.join(DATA_DIR, name), link)
    for entry in os.listdir(target):
        if entry.startswith("..") or entry in visible:
            continue
        stale = target / entry
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
        else:
            shutil.rmtree(stale)
    if old_dir and old_dir != new_dir.name:
        shutil.rmtree(target / old_dir, ignore_errors=True)
    return True


def _check_host_path(path: str, kind: str) -> None:
    """kubelet's hostPath type check (and the creation the *OrCreate types ask for)."""
    if not os.path.isabs(path):
        raise _Failed(f"hostPath {path!r} must be an absolute path")
    exists = os.path.lexists(path)
    if kind == "":
        return
    if kind == "DirectoryOrCreate" and not exists:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    if kind == "FileOrCreate" and not exists:
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            raise _Failed(f"hostPath type check failed: cannot create file {path}: its parent directory does not "
                          f"exist (create it, or use a DirectoryOrCreate volume for the parent)") from None
        os.close(fd)
        return
    checks: dict[str, tuple[Callable[[int], bool], str]] = {
        "Directory": (stat.S_ISDIR, "is not a directory"), "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
        "File": (stat.S_ISREG, "is not a file"), "FileOrCreate": (stat.S_ISREG, "is not a file"),
        "Socket": (stat.S_ISSOCK, "is not a socket file"), "CharDevice": (stat.S_ISCHR, "is not a character device"),
        "BlockDevice": (stat.S_ISBLK, "is not a block device"),
    }
    if kind not in checks:
        raise _Failed(f"{kind} is an invalid volume type (hostPath.type must be one of \"\", "
                      f"{', '.join(checks)})")
    check, problem = checks[kind]
    if not exists and kind in ("Directory", "File"):
        raise _Failed(f"hostPath type check failed: {path} does not exist (type {kind})")
    if not exists or not check(os.stat(path).st_mode):
        raise _Failed(f"hostPath type check failed: {path} {problem} (type {kind})")


def _safe_subpath(volume_path: str, sub: str, create: bool) -> str:
    """``volume_path/sub`` resolved, refused when it leaves the volume (through ``..`` or symlinks)."""
    if os.path.isabs(sub):
        raise _Failed(f"error SubPath `{sub}` must not be an absolute path (make it relative to the volume)")
    if ".." in sub.split("/"):
        raise _Failed(f"unable to provision SubPath `{sub}`: must not contain '..'")
    base = os.path.realpath(volume_path)
    joined = os.path.join(base, sub)
    resolved = os.path.realpath(joined)
    if resolved != base and not resolved.startswith(base + "/"):
        raise _Failed(f"subPath `{sub}` resolves to {resolved}, outside the volume: symlinks out of a volume are "
                      f"not followed")
    if create and not os.path.lexists(joined):
        # created with the volume's own mode (not the umask's), as kubelet does, so an emptyDir stays 0777
        perm = stat.S_IMODE(os.stat(base).st_mode)
        current = base
        for part in os.path.normpath(sub).split("/"):
            current = os.path.join(current, part)
            if not os.path.lexists(current):
                os.mkdir(current, perm)
                os.chmod(current, perm)
        resolved = os.path.realpath(joined)
        if not resolved.startswith(base + "/"):
            raise _Failed(f"subPath `{sub}` resolves to {resolved}, outside the volume")
    return resolved


# -- the manager --------------------------------------------------------------------------------------


class VolumeManager:
    """Sets up, refreshes, mounts and tears down the volumes of the pods on one node."""

    def __init__(self, client: Client, root: Path, node_name: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.root = Path(root)
        self.node_name = node_name
        self.clock = clock
        self._tokens: dict[tuple[str, str, str, int], _Token] = {}

    # -- paths ---------------------------------------------------------------------------------------

    def pod_dir(self, pod_uid: str) -> Path:
        return self.root / "pods" / pod_uid

    def volume_dir(self, pod_uid: str, volume: Object) -> Path:
        return self.pod_dir(pod_uid) / "volumes" / PLUGIN_DIRS[_volume_type(volume)] / str(volume["name"])

    # -- setup / refresh -----------------------------------------------------------------------------

    async def setup(self, pod: Object) -> dict[str, str]:
        """Every volume of the pod -> its host path. Idempotent (contents rewritten only when changed).
        On failure the volumes this call created are removed again and VolumeError names the volume."""
        uid = self._uid(pod)
        created: list[tuple[Object, Path]] = []
        paths: dict[str, str] = {}
        context = _Context(self, pod)
        try:
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                paths[volume["name"]] = await self._setup_one(pod, uid, volume, context, created)
        except VolumeError:
            await asyncio.to_thread(self._undo, created)
            raise
        return paths

    async def refresh(self, pod: Object) -> None:
        """Re-project API-backed volumes whose contents changed and rotate tokens due for it. A volume
        whose source is gone keeps its last contents; VolumeError (the first failure) after the others."""
        uid = self._uid(pod)
        context = _Context(self, pod)
        failure: VolumeError | None = None
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            kind = _volume_type(volume)
            if kind not in API_BACKED:
                continue
            target = self.volume_dir(uid, volume)
            if not target.is_dir():
                continue
            try:
                payload = await self._payload(pod, volume, kind, context)
                await asyncio.to_thread(write_atomically, target, payload)
            except (_Failed, envvars.EnvError, OSError) as exc:
                failure = failure or self._error(volume, exc)
        if failure is not None:
            raise failure

    async def _setup_one(self, pod: Object, uid: str, volume: Object, context: _Context,
                         created: list[tuple[Object, Path]]) -> str:
        kind = _volume_type(volume)
        try:
            if kind == "hostPath":
                source = volume.get("hostPath") or {}
                path = source.get("path", "")
                await asyncio.to_thread(_check_host_path, path, source.get("type") or "")
                return str(path)
            if kind not in SUPPORTED:
                if kind == "clusterTrustBundle":
                    raise _Failed("clusterTrustBundle volumes are not supported on this node yet")
                raise _Failed(f"volume type {kind} is not supported on this node yet (supported: "
                              f"{', '.join(SUPPORTED)})")
            target = self.volume_dir(uid, volume)
            fresh = not target.exists()
            if kind == "emptyDir":
                await asyncio.to_thread(self._setup_empty_dir, pod, volume, target, created, fresh)
                return str(target)
            payload = await self._payload(pod, volume, kind, context)
            if fresh:
                created.append((volume, target))
            await asyncio.to_thread(write_atomically, target, payload)
            return str(target)
        except (_Failed, envvars.EnvError, OSError) as exc:
            raise self._error(volume, exc) from None

    def _setup_empty_dir(self, pod: Object, volume: Object, target: Path, created: list[tuple[Object, Path]],
                         fresh: bool) -> None:
        source = volume.get("emptyDir") or {}
        medium = source.get("medium") or ""
        if medium not in ("", "Memory"):
            raise _Failed(f"emptyDir medium {medium!r} is not supported on this node (use \"\" or \"Memory\")")
        target.mkdir(parents=True, exist_ok=True)
        if fresh:
            created.append((volume, target))
        if medium == "Memory" and not _is_mount(target):
            _mount_tmpfs(target, self._tmpfs_size(pod, source))
        os.chmod(target, 0o777)

    @staticmethod
    def _tmpfs_size(pod: Object, source: Object) -> int | None:
        """sizeLimit, else the pod's memory limit when every container has one (kubelet's rule)."""
        if source.get("sizeLimit") not in (None, ""):
            try:
                return int(parse_quantity(source["sizeLimit"]))
            except ValueError as exc:
                raise _Failed(f"emptyDir.sizeLimit: {exc}") from None
        total = 0
        for container in (pod.get("spec") or {}).get("containers") or []:
            limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            if limit is None:
                return None
            total += int(parse_quantity(limit))
        return total or None

    def _undo(self, created: list[tuple[Object, Path]]) -> None:
        for _, target in reversed(created):
            for point in _mounts_under(target):
                try:
                    _unmount(point)
                except OSError:
                    pass
            if not _mounts_under(target):
                shutil.rmtree(target, ignore_errors=True)
            # and the plugin, volumes and pod directories this left empty
            for parent in (target.parent, target.parent.parent, target.parent.parent.parent):
                try:
                    parent.rmdir()
                except OSError:
                    break

    @staticmethod
    def _error(volume: Object, exc: BaseException) -> VolumeError:
        name = volume.get("name", "")
        return VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {exc}', volume=name)

    @staticmethod
    def _uid(pod: Object) -> str:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid or "/" in uid or uid.startswith("."):
            raise VolumeError(f"pod {(pod.get('metadata') or {}).get('name')!r} has no usable metadata.uid ({uid!r})")
        return str(uid)

    # -- payloads ------------------------------------------------------------------------------------

    async def _payload(self, pod: Object, volume: Object, kind: str,
                       context: _Context) -> dict[str, tuple[bytes, int]]:
        source = volume.get(kind) or {}
        default = _mode(source.get("defaultMode"), DEFAULT_MODE)
        if kind in ("configMap", "secret"):
            return await context.keyed(kind, source, default)
        if kind == "downwardAPI":
            return await context.downward(source.get("items") or [], default)
        payload: dict[str, tuple[bytes, int]] = {}
        for index, projection in enumerate(source.get("sources") or []):
            if "configMap" in projection:
                payload.update(await context.keyed("configMap", projection["configMap"] or {}, default))
            elif "secret" in projection:
                payload.update(await context.keyed("secret", projection["secret"] or {}, default))
            elif "downwardAPI" in projection:
                payload.update(await context.downward((projection["downwardAPI"] or {}).get("items") or [], default))
            elif "serviceAccountToken" in projection:
                token_source = projection["serviceAccountToken"] or {}
                token = await self._token(pod, token_source)
                payload[token_source.get("path") or "token"] = (token.encode(), default)
            elif "clusterTrustBundle" in projection:
                raise _Failed(f"projected sources[{index}]: clusterTrustBundle projections are not supported on "
                              f"this node yet")
            else:
                raise _Failed(f"projected sources[{index}] has no known source (configMap, secret, downwardAPI, "
                              f"serviceAccountToken)")
        return payload

    async def _token(self, pod: Object, source: Object) -> str:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        audience = source.get("audience") or ""
        seconds = int(source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        key = (meta.get("uid", ""), account, audience, seconds)
        now = self.clock()
        cached = self._tokens.get(key)
        if cached is not None and now < cached.issued + min(
                TOKEN_REFRESH_AFTER * (cached.expires - cached.issued), TOKEN_MAX_AGE):
            return cached.token
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                                            "uid": meta.get("uid", "")}}}
        try:
            answer = await self.client.request("POST", SERVICEACCOUNTS.path(namespace, account, "token"), body=body)
        except errors.NotFound:
            raise _Failed(f'failed to fetch token: serviceaccount "{account}" not found in namespace '
                          f'{namespace}') from None
        except errors.MicrokubeError as exc:
            raise _Failed(f"failed to fetch token: {exc}") from None
        status = answer.get("status") or {}
        lifetime = int((answer.get("spec") or {}).get("expirationSeconds") or seconds)
        self._tokens[key] = _Token(status.get("token", ""), now, now + lifetime)
        return str(status.get("token", ""))

    # -- container mounts ----------------------------------------------------------------------------

    def mounts(self, pod: Object, container: Object, paths: dict[str, str], *,
               env: Sequence[cri.KeyValue] | None = None) -> list[cri.Mount]:
        """The container's volumeMounts as CRI mounts. ``env`` (the container's built environment) feeds
        subPathExpr; without it the literal ``env`` values of the container are used. VolumeError with
        reason CreateContainerConfigError for an unknown volume, an unsafe subPath or a refused propagation."""
        volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
        container_name = container.get("name", "")
        result = []
        for index, mount in enumerate(container.get("volumeMounts") or []):
            name = mount.get("name", "")
            where = f"container {container_name!r} volumeMounts[{index}]"
            if name not in volumes:
                raise VolumeError(f'cannot find volume "{name}" to mount into container "{container_name}" '
                                  f"({where}: add it to spec.volumes or fix the name)", volume=name,
                                  reason="CreateContainerConfigError")
            if name not in paths:
                raise VolumeError(f'volume "{name}" is not set up for container "{container_name}" ({where})',
                                  volume=name, reason="CreateContainerConfigError")
            host = paths[name]
            sub = mount.get("subPath") or ""
            if mount.get("subPathExpr"):
                sub = self._expand_subpath(mount["subPathExpr"], container, env, where, name)
            if sub:
                try:
                    host = _safe_subpath(host, sub, create=True)
                except (_Failed, OSError) as exc:
                    raise VolumeError(f"failed to prepare subPath for volumeMount \"{name}\" of container "
                                      f"\"{container_name}\": {exc}", volume=name,
                                      reason="CreateContainerConfigError") from None
            propagation_name = mount.get("mountPropagation")
            if propagation_name not in PROPAGATION:
                raise VolumeError(f"{where}.mountPropagation {propagation_name!r} is not one of None, "
                                  f"HostToContainer, Bidirectional", volume=name, reason="CreateContainerConfigError")
            if propagation_name == "Bidirectional" and not (container.get("securityContext") or {}).get("privileged"):
                raise VolumeError(f"{where}: Bidirectional mount propagation is available only to privileged "
                                  f"containers", volume=name, reason="CreateContainerConfigError")
            read_only = bool(mount.get("readOnly")) or _volume_type(volumes[name]) in API_BACKED
            result.append(cri.Mount(container_path=mount.get("mountPath", ""), host_path=host, readonly=read_only,
                                    propagation=PROPAGATION[propagation_name]))
        return result

    @staticmethod
    def _expand_subpath(expression: str, container: Object, env: Sequence[cri.KeyValue] | None, where: str,
                        volume: str) -> str:
        if env is not None:
            values = {kv.key: kv.value for kv in env}
        else:
            values = {}
            for var in container.get("env") or []:
                values[var.get("name", "")] = envvars.expand(var.get("value") or "", envvars.mapping_for(values))
        missing: set[str] = set()

        def lookup(key: str) -> str:
            if not values.get(key):
                missing.add(key)
            return values.get(key, "")

        expanded = envvars.expand(expression, lookup)
        if missing:
            raise VolumeError(f"{where}: subPathExpr {expression!r}: missing value for {', '.join(sorted(missing))}",
                              volume=volume, reason="CreateContainerConfigError")
        return expanded

    # -- teardown ------------------------------------------------------------------------------------

    async def teardown(self, pod_uid: str) -> None:
        """Unmount what is mounted under the pod's directory and remove it. Idempotent."""
        if not pod_uid or "/" in pod_uid or pod_uid.startswith("."):
            raise VolumeError(f"teardown needs a pod uid, not {pod_uid!r}")
        await asyncio.to_thread(self._teardown, self.pod_dir(pod_uid))
        for key in [k for k in self._tokens if k[0] == pod_uid]:
            del self._tokens[key]

    @staticmethod
    def _teardown(directory: Path) -> None:
        if not directory.exists():
            return
        for point in _mounts_under(directory):
            try:
                _unmount(point)
            except OSError as exc:
                raise VolumeError(f"UnmountVolume.TearDown failed: {exc}; the pod directory {directory} is kept",
                                  reason="FailedUnmount") from None
        left = _mounts_under(directory)
        if left:
            raise VolumeError(f"UnmountVolume.TearDown failed: {', '.join(left)} still mounted; the pod directory "
                              f"{directory} is kept", reason="FailedUnmount")
        shutil.rmtree(directory)

    async def cleanup_orphans(self, keep: set[str]) -> list[str]:
        """Tear down the pod directories whose uid is not in ``keep``; the uids removed."""
        pods = self.root / "pods"
        if not pods.is_dir():
            return []
        removed = []
        for entry in sorted(os.listdir(pods)):
            if entry not in keep and (pods / entry).is_dir() and not entry.startswith("."):
                await self.teardown(entry)
                removed.append(entry)
        return removed


class _Context:
    """What one setup or refresh call reads: each ConfigMap/Secret and the node at most once."""

    def __init__(self, manager: VolumeManager, pod: Object) -> None:
        self.manager = manager
        self.pod = pod
        self.namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        self._objects: dict[tuple[str, str], Object | None] = {}
        self._allocatable: dict[str, str] | None = None

    async def get(self, kind: str, name: str) -> Object | None:
        key = (kind, name)
        if key not in self._objects:
            resource = envvars.CONFIGMAPS if kind == "configMap" else envvars.SECRETS
            try:
                self._objects[key] = await self.manager.client.get(resource, name, self.namespace)
            except errors.NotFound:
                self._objects[key] = None
            except errors.MicrokubeError as exc:
                raise _Failed(f"couldn't get {kind.lower()} {self.namespace}/{name}: {exc}") from None
        return self._objects[key]

    async def keyed(self, kind: str, source: Object, default: int) -> dict[str, tuple[bytes, int]]:
        """A configMap or secret source: every key, or the listed items (key -> path, mode)."""
        # a secret volume names its secret in secretName, a projected secret source in name
        name = source.get("secretName") or source.get("name") or ""
        label = "configmap" if kind == "configMap" else "secret"
        obj = await self.get(kind, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise _Failed(f'{label} "{name}" not found')
        data: dict[str, bytes] = {}
        try:
            if kind == "configMap":
                data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
                data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            else:
                data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        except ValueError as exc:
            raise _Failed(f"{label} {self.namespace}/{name} holds data that is not base64: {exc}") from None
        items = source.get("items")
        if not items:
            return {key: (value, default) for key, value in data.items()}
        payload: dict[str, tuple[bytes, int]] = {}
        for item in items:
            key = item.get("key", "")
            if key not in data:
                if source.get("optional"):
                    continue
                what = "configmap references non-existent config key" if kind == "configMap" \
                    else "references non-existent secret key"
                raise _Failed(f"{what}: {key}")
            payload[item.get("path") or key] = (data[key], _mode(item.get("mode"), default))
        return payload

    async def downward(self, items: list[Object], default: int) -> dict[str, tuple[bytes, int]]:
        payload: dict[str, tuple[bytes, int]] = {}
        for item in items:
            path = item.get("path", "")
            mode = _mode(item.get("mode"), default)
            if item.get("fieldRef"):
                value = envvars.metadata_field(self.pod, item["fieldRef"].get("fieldPath", ""))
            elif item.get("resourceFieldRef"):
                ref = item["resourceFieldRef"]
                container = envvars.find_container(self.pod, ref.get("containerName", ""))
                value = envvars.resource_value(container, ref.get("resource", ""), ref.get("divisor"),
                                               await self.allocatable())
            else:
                raise _Failed(f"downwardAPI item {path!r} needs fieldRef or resourceFieldRef")
            payload[path] = (value.encode(), mode)
        return payload

    async def allocatable(self) -> dict[str, str]:
        if self._allocatable is None:
            try:
                node = await self.manager.client.get(NODES, self.manager.node_name)
            except errors.NotFound:
                node = {}
            except errors.MicrokubeError as exc:
                raise _Failed(f"couldn't get node {self.manager.node_name}: {exc}") from None
            self._allocatable = dict((node.get("status") or {}).get("allocatable") or {})
        return self._allocatable


__all__ = ["VolumeError", "VolumeManager", "write_atomically"]
