"""CNIExec: the cni/1.1 operations carried out by executing CNI plugin binaries (CNI spec 1.1.0, sections 2 and 3).

- **Configuration** (section 1): a network configuration list (``plugins``) or a single plugin configuration,
  from a file or a mapping. ``cniVersion``/``cniVersions`` name the versions the list supports.
- **Version selection** (section 1, "Version considerations"): each plugin binary is asked VERSION once; the
  version sent to every plugin is the highest one the list supports *and* every plugin speaks. Within major
  version 1 the formats are compatible, so a list written for 1.1.0 also runs plugins that stop at 1.0.0
  (Debian's containernetworking-plugins 1.1.1): they then get 1.0.0, and STATUS and GC degrade (below).
- **Execution** (section 2): ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``,
  ``CNI_PATH`` in the environment (plus ``PATH``, which plugins need for iptables), the derived request
  configuration on stdin (section 3: ``cniVersion``, ``name``, ``runtimeConfig`` from the declared
  ``capabilities``, ``prevResult``; ``capabilities`` removed), the result or the error object on stdout. A
  non-zero exit is decoded into ``CNIError`` with the plugin's code.
- **ADD** runs the list in order, each plugin getting the previous one's result; the final result is stored in
  the result cache (``<cacheDir>/results/<network>-<container>-<ifname>``, libcni's layout and ``cniCacheV1``
  record). **DEL** runs the list in reverse with the cached result as ``prevResult`` and removes the cache entry;
  **CHECK** runs the list in order with the cached result (``disableCheck`` skips it).
- **STATUS** checks that every binary is present, then, when the selected version is 1.1.0 or later, runs STATUS
  on each plugin; older plugins know no STATUS, so it succeeds after the binary check (as libcni does).
- **GC** with 1.1 plugins sends ``cni.dev/valid-attachments`` to every plugin (continuing past errors, reporting
  them all) and drops stale cache entries; with older plugins it runs DEL for every cached attachment not in the
  valid list (what a runtime would have done), best effort. ``disableGC`` skips it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from microkube_interfaces.cni import (
    COMPATIBLE_SPEC_VERSIONS,
    Attachment,
    AttachmentRequest,
    CNIError,
    ErrorCode,
    Result,
    VersionResult,
)

DEFAULT_BIN_DIR = "/usr/lib/cni"
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_TIMEOUT = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What a plugin that cannot answer VERSION speaks (spec 0.1.0 had no VERSION command).
_LEGACY_VERSIONS = ("0.1.0",)


def _vkey(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def _invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, msg, details)


@dataclass(frozen=True)
class NetworkConfigList:
    """A network configuration list (spec section 1)."""

    name: str
    cni_version: str
    cni_versions: tuple[str, ...]
    plugins: tuple[Mapping[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    #: The configuration as given (stored base64-encoded in the result cache, as libcni does).
    raw: bytes = b""

    @classmethod
    def load(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> NetworkConfigList:
        """Parse a ``.conflist`` (or a single-plugin ``.conf``) from a path or a mapping; raise
        ``CNIError`` 7 (invalid network config) or 6 (not JSON) or 5 (unreadable file)."""
        if isinstance(source, Mapping):
            data: Any = dict(source)
            raw = json.dumps(data, sort_keys=True).encode()
        else:
            try:
                raw = Path(source).read_bytes()
            except OSError as exc:
                raise CNIError(ErrorCode.IO_FAILURE, "cannot read the network configuration", str(exc)) from None
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise CNIError(ErrorCode.DECODING_FAILURE, "network configuration is not JSON", str(exc)) from None
        if not isinstance(data, dict):
            raise _invalid("network configuration must be a JSON object")
        if "plugins" not in data and "type" in data:  # a single plugin configuration (.conf)
            plugin = {k: v for k, v in data.items() if k not in ("cniVersion", "name")}
            data = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name", ""), "plugins": [plugin]}
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or "/" in name:
            raise _invalid("invalid network name", f"name={name!r}: alphanumeric first, then alphanumerics, _ . -")
        version = data.get("cniVersion")
        if not isinstance(version, str) or _vkey(version) == (-1,):
            raise _invalid("invalid cniVersion", f"cniVersion={version!r}")
        versions = data.get("cniVersions", [])
        if not isinstance(versions, list) or not all(isinstance(v, str) and _vkey(v) != (-1,) for v in versions):
            raise _invalid("invalid cniVersions", f"cniVersions={versions!r}")
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise _invalid("no plugins", f"plugins={plugins!r}: a non-empty list of plugin configurations")
        for index, plugin in enumerate(plugins):
            if not isinstance(plugin, dict):
                raise _invalid("invalid plugin configuration", f"plugins[{index}] is not an object")
            kind = plugin.get("type")
            if not isinstance(kind, str) or not kind or "/" in kind or "\\" in kind or kind in (".", ".."):
                raise _invalid("invalid plugin type", f"plugins[{index}].type={kind!r}")
            caps = plugin.get("capabilities", {})
            if not isinstance(caps, dict):
                raise _invalid("invalid capabilities", f"plugins[{index}].capabilities={caps!r}")
            reserved = sorted(k for k in plugin if k in ("runtimeConfig", "args", "prevResult")
                              or k.startswith("cni.dev/"))
            if reserved:
                raise _invalid("reserved keys in a plugin configuration", f"plugins[{index}]: {', '.join(reserved)}")
        return cls(
            name=name,
            cni_version=version,
            cni_versions=tuple(versions),
            plugins=tuple(plugins),
            disable_check=bool(data.get("disableCheck", False)),
            disable_gc=bool(data.get("disableGC", False)),
            raw=raw,
        )

    def versions(self) -> list[str]:
        """Versions the list supports, highest first: ``cniVersion``, ``cniVersions`` and, since the format is
        compatible within a major version, every lower 1.x version microkube knows."""
        listed = {self.cni_version, *self.cni_versions}
        top = max(listed, key=_vkey)
        implied = {v for v in COMPATIBLE_SPEC_VERSIONS if _vkey(v)[0] == _vkey(top)[0] and _vkey(v) <= _vkey(top)}
        return sorted(listed | implied, key=_vkey, reverse=True)


@dataclass(frozen=True)
class _Negotiated:
    version: str
    #: plugin type → the versions its VERSION reported
    supported: Mapping[str, tuple[str, ...]]

    @property
    def has_status_and_gc(self) -> bool:
        return _vkey(self.version) >= (1, 1, 0)


class CNIExec:
    """The ``cni-exec`` pod network (cni/1.1 ``CNIPlugin``) over standard CNI plugin binaries."""

    def __init__(self, config: NetworkConfigList, *, bin_dirs: Sequence[str] = (DEFAULT_BIN_DIR,),
                 cache_dir: str = DEFAULT_CACHE_DIR, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.bin_dirs = tuple(bin_dirs)
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._negotiated: _Negotiated | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CNIExec:
        """The registered factory. Options: ``conflist`` (path or mapping; required), ``binDir`` (a directory,
        a ``:``-separated list or a list; default /usr/lib/cni), ``cacheDir`` (default /var/lib/cni),
        ``timeout`` (seconds per plugin execution). What the node agent passes to every network is accepted:
        ``stateDir`` (the default cache dir then lives there) and ``podCIDR`` (the conflist's IPAM decides the
        addresses; a conflist for a node names its range itself)."""
        known = {"conflist", "binDir", "bin_dir", "cacheDir", "cache_dir", "timeout", "stateDir", "podCIDR"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CNIError(ErrorCode.UNSUPPORTED_FIELD, "unsupported option",
                           ", ".join(f"{k}={options[k]!r}" for k in unknown))
        source = options.get("conflist")
        if not source:
            raise _invalid("conflist is required", "a path to a .conflist or the list as a mapping")
        bins: Any = options.get("binDir", options.get("bin_dir", DEFAULT_BIN_DIR))
        bin_dirs = tuple(bins.split(os.pathsep)) if isinstance(bins, str) else tuple(str(b) for b in bins)
        return cls(NetworkConfigList.load(source), bin_dirs=bin_dirs,
                   cache_dir=str(options.get("cacheDir", options.get("cache_dir", options.get("stateDir",
                                                                                      DEFAULT_CACHE_DIR)))),
                   timeout=float(options.get("timeout", DEFAULT_TIMEOUT)))

    # ------------------------------------------------------------------------------ executing

    def find(self, kind: str) -> str:
        """The plugin binary for ``type`` (searched in the bin dirs, in order)."""
        for directory in self.bin_dirs:
            path = os.path.join(directory, kind)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "plugin binary not found",
                       f"{kind!r} in {os.pathsep.join(self.bin_dirs)}")

    async def execute(self, kind: str, command: str, conf: Mapping[str, Any],
                      request: AttachmentRequest | None = None) -> dict[str, Any] | None:
        """Run one plugin once; its stdout JSON object (None when empty), or ``CNIError`` decoded from it."""
        path = self.find(kind)
        env = {"CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(self.bin_dirs),
               "PATH": os.environ.get("PATH", _DEFAULT_PATH)}
        if request is not None:
            env.update(CNI_CONTAINERID=request.container_id, CNI_NETNS=request.netns, CNI_IFNAME=request.ifname,
                       CNI_ARGS=request.cni_args())
        proc = await asyncio.create_subprocess_exec(
            path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, cwd="/")
        try:
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(conf).encode()), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"{kind} {command} timed out",
                           f"no answer within {self.timeout:g}s") from None
        where = f"plugin {kind}, {command}"
        if proc.returncode != 0:
            try:
                error = CNIError.from_json(out)
            except CNIError:
                text = (out or err).decode(errors="replace").strip()
                raise CNIError(ErrorCode.INTERNAL, f"{kind} {command} failed with exit status {proc.returncode}",
                               f"{text} [{where}]") from None
            stderr = err.decode(errors="replace").strip()
            details = "; ".join(p for p in (error.details, stderr) if p)
            raise CNIError(error.code, error.msg, f"{details} [{where}]" if details else f"[{where}]",
                           cni_version=error.cni_version)
        if not out.strip():
            return None
        try:
            loaded = json.loads(out)
        except ValueError as exc:
            raise CNIError(ErrorCode.DECODING_FAILURE, f"{kind} {command}: output is not JSON",
                           f"{exc} [{where}]") from None
        if not isinstance(loaded, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, f"{kind} {command}: output is not a JSON object", where)
        return loaded

    async def negotiate(self) -> _Negotiated:
        """VERSION of every plugin (once); the highest version the list and all plugins share."""
        async with self._lock:
            if self._negotiated is not None:
                return self._negotiated
            wanted = self.config.versions()
            supported: dict[str, tuple[str, ...]] = {}
            for kind in dict.fromkeys(p["type"] for p in self.config.plugins):
                try:
                    answer = await self.execute(kind, "VERSION", {"cniVersion": wanted[0]})
                except CNIError as exc:
                    if exc.code == ErrorCode.PLUGIN_NOT_AVAILABLE:
                        raise
                    answer = None
                versions = (answer or {}).get("supportedVersions") or _LEGACY_VERSIONS
                supported[kind] = tuple(str(v) for v in versions)
            common = [v for v in wanted if all(v in s for s in supported.values())]
            usable = [v for v in common if _vkey(v) >= (1, 0, 0)]
            if not usable:
                raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, "no CNI version shared by the list and its plugins",
                               f"list {', '.join(wanted)}; " + "; ".join(f"{k}: {', '.join(v)}"
                                                                         for k, v in supported.items())
                               + " (1.0.0 or later needed)")
            self._negotiated = _Negotiated(usable[0], supported)
            return self._negotiated

    def request_config(self, index: int, version: str, request: AttachmentRequest | None = None,
                       prev: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Section 3 "Deriving request configuration": the plugin's configuration with ``cniVersion``,
        ``name``, ``runtimeConfig`` (declared capabilities the runtime provides) and ``prevResult``."""
        plugin = dict(self.config.plugins[index])
        declared = plugin.pop("capabilities", None) or {}
        conf: dict[str, Any] = {**plugin, "cniVersion": version, "name": self.config.name}
        if request is not None:
            offered = request.runtime_config.to_dict()
            runtime = {k: v for k, v in offered.items() if declared.get(k)}
            if runtime:
                conf["runtimeConfig"] = runtime
            if prev is not None:
                conf["prevResult"] = prev
        conf.update(extra or {})
        return conf

    def _check_capabilities(self, request: AttachmentRequest) -> None:
        declared = {k for p in self.config.plugins for k, v in (p.get("capabilities") or {}).items() if v}
        missing = sorted(set(request.runtime_config.to_dict()) - declared)
        if missing:
            raise CNIError(ErrorCode.UNSUPPORTED_FIELD, "capability not offered by any plugin of the network",
                           f"{', '.join(missing)} (network {self.config.name})")

    # ---------------------------------------------------------------------------------- cache

    def cache_path(self, container_id: str, ifname: str) -> Path:
        return self.cache_dir / "results" / f"{self.config.name}-{container_id}-{ifname}"

    def _cache_read(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.cache_path(container_id, ifname).read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _cache_write(self, request: AttachmentRequest, result: Mapping[str, Any]) -> None:
        path = self.cache_path(request.container_id, request.ifname)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {
            "kind": "cniCacheV1",
            "containerId": request.container_id,
            "config": base64.b64encode(self.config.raw).decode(),
            "ifName": request.ifname,
            "networkName": self.config.name,
            "netns": request.netns,
            "cniArgs": [[k, v] for k, v in request.args.items()],
            "capabilityArgs": request.runtime_config.to_dict(),
            "result": dict(result),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def _cache_remove(self, container_id: str, ifname: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.cache_path(container_id, ifname).unlink()

    def _cache_entries(self) -> list[dict[str, Any]]:
        directory = self.cache_dir / "results"
        if not directory.is_dir():
            return []
        entries = []
        for path in sorted(directory.glob(f"{self.config.name}-*")):
            try:
                data = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("networkName") == self.config.name:
                entries.append(data)
        return entries

    # ------------------------------------------------------------------------------ operations

    async def add(self, request: AttachmentRequest) -> Result:
        """ADD: the list in order, each plugin given the previous result; the final result is cached."""
        request.validate()
        self._check_capabilities(request)
        if not await asyncio.to_thread(os.path.exists, request.netns):
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "network namespace not found", request.netns)
        negotiated = await self.negotiate()
        if await asyncio.to_thread(self._cache_read, request.container_id, request.ifname) is not None:
            raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "attachment exists",
                           f"container {request.container_id} interface {request.ifname} on {self.config.name}; "
                           "DEL it first")
        prev: dict[str, Any] | None = None
        for index, plugin in enumerate(self.config.plugins):
            conf = self.request_config(index, negotiated.version, request, prev)
            out = await self.execute(plugin["type"], "ADD", conf, request)
            if out is None:
                raise CNIError(ErrorCode.DECODING_FAILURE, f"{plugin['type']} ADD printed no result")
            prev = out
        assert prev is not None
        result = Result.from_json(prev)
        await asyncio.to_thread(self._cache_write, request, prev)
        return replace(result, cni_version=request.cni_version)

    async def delete(self, request: AttachmentRequest) -> None:
        """DEL: the list in reverse with the cached result as ``prevResult``; then the cache entry goes."""
        request.validate(need_netns=False)
        negotiated = await self.negotiate()
        cached = await asyncio.to_thread(self._cache_read, request.container_id, request.ifname)
        await self._delete(request, negotiated, cached.get("result") if cached else None)

    async def _delete(self, request: AttachmentRequest, negotiated: _Negotiated,
                      prev: Mapping[str, Any] | None) -> None:
        for index in reversed(range(len(self.config.plugins))):
            conf = self.request_config(index, negotiated.version, request, prev)
            await self.execute(self.config.plugins[index]["type"], "DEL", conf, request)
        await asyncio.to_thread(self._cache_remove, request.container_id, request.ifname)

    async def check(self, request: AttachmentRequest, previous: Result | None = None) -> None:
        """CHECK: the list in order with the cached ADD result (or ``previous`` when nothing is cached)."""
        request.validate()
        if self.config.disable_check:
            return
        negotiated = await self.negotiate()
        cached = await asyncio.to_thread(self._cache_read, request.container_id, request.ifname)
        prev: Mapping[str, Any] | None = cached.get("result") if cached else None
        if prev is None and previous is not None:
            prev = {**previous.to_dict(), "cniVersion": negotiated.version}
        if prev is None:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "no such attachment",
                           f"no cached result for container {request.container_id} interface {request.ifname}")
        for index, plugin in enumerate(self.config.plugins):
            conf = self.request_config(index, negotiated.version, request, prev)
            await self.execute(plugin["type"], "CHECK", conf, request)

    async def status(self) -> None:
        """STATUS: every binary present; STATUS of every plugin when they speak 1.1."""
        try:
            for plugin in self.config.plugins:
                self.find(plugin["type"])
            negotiated = await self.negotiate()
        except CNIError as exc:
            if exc.code in (ErrorCode.PLUGIN_NOT_AVAILABLE, ErrorCode.LIMITED_CONNECTIVITY):
                raise
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, exc.msg, exc.details) from exc
        if not negotiated.has_status_and_gc:
            return
        for index, plugin in enumerate(self.config.plugins):
            await self.execute(plugin["type"], "STATUS", self.request_config(index, negotiated.version))

    async def gc(self, valid: Sequence[Attachment]) -> None:
        """GC: with 1.1 plugins, GC with ``cni.dev/valid-attachments`` on every plugin; with older ones, DEL of
        every cached attachment not in ``valid``. Stale cache entries are removed either way."""
        if self.config.disable_gc:
            return
        negotiated = await self.negotiate()
        keep = {(a.container_id, a.ifname) for a in valid}
        stale = [e for e in await asyncio.to_thread(self._cache_entries)
                 if (e.get("containerId"), e.get("ifName")) not in keep]
        failures: list[CNIError] = []
        if negotiated.has_status_and_gc:
            attachments = [a.to_dict() for a in valid]
            for index, plugin in enumerate(self.config.plugins):
                conf = self.request_config(index, negotiated.version,
                                           extra={"cni.dev/valid-attachments": attachments})
                try:
                    await self.execute(plugin["type"], "GC", conf)
                except CNIError as exc:
                    failures.append(exc)
            for entry in stale:
                await asyncio.to_thread(self._cache_remove, str(entry["containerId"]), str(entry["ifName"]))
        else:
            for entry in stale:
                request = AttachmentRequest(str(entry["containerId"]), str(entry.get("netns", "")),
                                            str(entry["ifName"]),
                                            args={str(k): str(v) for k, v in entry.get("cniArgs") or ()})
                try:
                    await self._delete(request, negotiated, entry.get("result"))
                except CNIError as exc:
                    failures.append(exc)
        if failures:
            first = failures[0]
            raise CNIError(first.code, first.msg, "; ".join(f"{e.msg}: {e.details}" for e in failures),
                           cni_version=first.cni_version)

    async def version(self) -> VersionResult:
        """VERSION: the versions of the cni/1.1 interface this adapter speaks to its caller (results are converted
        from whatever version the plugins were run with; see ``negotiate``)."""
        return VersionResult(supported_versions=COMPATIBLE_SPEC_VERSIONS)
