"""cni/1.1: pod networks, following the Container Network Interface specification 1.1.0.

The CNI spec (github.com/containernetworking/cni ``SPEC.md``) defines a plugin as an executable fed
environment variables and a JSON network configuration. microkube keeps the spec's *operations, data
shapes, error codes and idempotency rules* but calls the plugin in-process: the environment becomes an
``AttachmentRequest``, the result is a ``Result`` whose ``to_json()`` is byte-for-byte the spec's JSON, and
an error is a ``CNIError`` whose ``to_json()`` is the spec's error object. An adapter that execs a real
CNI binary (``cni-exec`` pack) implements the same Protocol, so the node agent cannot tell the difference.

Operations (spec section "Execution Protocol"):

- ``add``: attach the container (``container_id``) to the network: create ``ifname`` inside the network
  namespace ``netns`` and return what was configured. The runtime never calls ADD twice for the same
  ``(container_id, ifname)`` without a DEL in between; a plugin that finds the attachment already present
  raises ``CNIError(ErrorCode.ATTACHMENT_EXISTS)``.
- ``delete`` (DEL): detach and release everything ADD allocated. **Idempotent**: DEL of an attachment
  that does not exist, whose netns is gone, or that was already deleted, succeeds. DEL must also succeed
  after a partial or failed ADD.
- ``check`` (CHECK): verify the attachment is still as ADD left it; raise ``CNIError`` when it is not
  (code ``ATTACHMENT_BROKEN`` for a missing interface or address, ``UNKNOWN_CONTAINER`` for a missing
  netns or allocation). CHECK changes nothing.
- ``status`` (STATUS): is the plugin ready for ADD? Raise ``CNIError`` with ``PLUGIN_NOT_AVAILABLE`` (50)
  or ``LIMITED_CONNECTIVITY`` (51) when not. Changes nothing.
- ``gc`` (GC): release every resource (addresses, interfaces, rules) of attachments *not* in the given
  list of valid attachments. **Idempotent**; must not touch valid attachments; may run while nothing else
  runs for this network (the runtime serialises it with ADD/DEL of the same network).
- ``version`` (VERSION): the spec versions this plugin speaks.

Errors carry the spec's reserved codes (``ErrorCode``, 1-99) or plugin-specific codes (100 and above); the
ones microkube's packs share are listed in ``ErrorCode`` too.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from microkube_interfaces.errors import MicrokubeError

INTERFACE = "cni"
VERSION = "1.1"
#: The CNI spec version this interface follows; results default to it.
SPEC_VERSION = "1.1.0"
#: Spec versions whose result and request shapes are identical to 1.1.0's (1.1.0 only added STATUS and GC).
COMPATIBLE_SPEC_VERSIONS: tuple[str, ...] = ("1.0.0", "1.1.0")

#: Interface names: the spec allows at most 15 characters (IFNAMSIZ - 1), not "." or "..", and no "/", ":" or
#: whitespace.
_IFNAME_FORBIDDEN = re.compile(r"[/:\s]")


class ErrorCode(enum.IntEnum):
    """Error codes: 1-99 are reserved by the spec (section "Error"), 100+ are plugin specific."""

    #: Incompatible CNI version.
    INCOMPATIBLE_VERSION = 1
    #: Unsupported field in the network configuration; ``msg`` names the key and value.
    UNSUPPORTED_FIELD = 2
    #: Container unknown or does not exist. For DEL this means nothing needs cleaning up.
    UNKNOWN_CONTAINER = 3
    #: Invalid necessary environment variables (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_IFNAME``, …):
    #: here, an invalid ``AttachmentRequest`` field.
    INVALID_ENVIRONMENT = 4
    #: I/O failure, e.g. failed to read the network config bytes or to write state.
    IO_FAILURE = 5
    #: Failed to decode content (JSON of a config or of a previous result).
    DECODING_FAILURE = 6
    #: Invalid network config: a field has a value the plugin cannot accept.
    INVALID_NETWORK_CONFIG = 7
    #: Try again later: a transient condition (a lock, a resource being created); the caller retries.
    TRY_AGAIN_LATER = 11
    #: STATUS: the plugin is not available (e.g. no free addresses, bridge missing): do not ADD.
    PLUGIN_NOT_AVAILABLE = 50
    #: STATUS: the plugin is available but with limited connectivity; ADD may succeed, pods may not reach all.
    LIMITED_CONNECTIVITY = 51
    # -- plugin-specific codes shared by microkube's network packs (the spec allows 100+) --
    #: ADD found the ``(container_id, ifname)`` attachment (or its interface) already present.
    ATTACHMENT_EXISTS = 100
    #: CHECK found the attachment changed: interface, address or bridge port missing or wrong.
    ATTACHMENT_BROKEN = 101
    #: ADD found no free address in the pool.
    NO_ADDRESSES = 102
    #: Anything else (libcni's skel uses 999 for errors without a specific code).
    INTERNAL = 999


class CNIError(MicrokubeError):
    """A CNI failure: ``code`` (``ErrorCode`` or a plugin-specific int), a short ``msg`` and ``details``."""

    def __init__(self, code: int, msg: str, details: str = "", *, cni_version: str = SPEC_VERSION) -> None:
        super().__init__(f"CNI error {int(code)}: {msg}" + (f" ({details})" if details else ""))
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else int(code)
        self.msg = msg
        self.details = details
        self.cni_version = cni_version

    @property
    def retryable(self) -> bool:
        """True for "try again later" (11): the runtime should retry the same operation."""
        return self.code == ErrorCode.TRY_AGAIN_LATER

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": self.cni_version, "code": int(self.code), "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self) -> str:
        """The spec's error object: ``{"cniVersion", "code", "msg", "details"}``."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> CNIError:
        raw = _load(data)
        try:
            return cls(int(raw["code"]), str(raw.get("msg", "")), str(raw.get("details", "")),
                       cni_version=str(raw.get("cniVersion", SPEC_VERSION)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CNIError(ErrorCode.DECODING_FAILURE, "not a CNI error object", str(exc)) from None


def _load(data: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    try:
        loaded = json.loads(data)
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, "invalid JSON", str(exc)) from None
    if not isinstance(loaded, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "expected a JSON object", type(loaded).__name__)
    return loaded


# ---------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One entry of the ``portMappings`` runtime config (the ``portMappings`` capability)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                               "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PortMapping:
        return cls(int(raw["hostPort"]), int(raw["containerPort"]), str(raw.get("protocol", "tcp")).lower(),
                   str(raw.get("hostIP", "")))


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The ``runtimeConfig`` of the spec: dynamic per-attachment data the runtime passes for capabilities
    the plugin declared. ``extra`` carries capabilities this dataclass does not model (``bandwidth``,
    ``ips``, ``mac``, ``aliases``, …) under their spec names."""

    port_mappings: tuple[PortMapping, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        if self.port_mappings:
            out["portMappings"] = [p.to_dict() for p in self.port_mappings]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RuntimeConfig:
        try:
            ports = tuple(PortMapping.from_dict(p) for p in raw.get("portMappings", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid portMappings", repr(exc)) from None
        return cls(ports, {k: v for k, v in raw.items() if k != "portMappings"})


@dataclass(frozen=True, slots=True)
class AttachmentRequest:
    """ADD, DEL and CHECK input: the spec's ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``,
    ``CNI_ARGS`` (as a mapping) and the ``runtimeConfig``; ``cni_version`` is the config's ``cniVersion``.

    ``netns`` is a path to a network namespace file (``/run/netns/<name>`` or ``/proc/<pid>/ns/net``);
    for DEL it may be empty or no longer exist.
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: Mapping[str, str] = field(default_factory=dict)
    runtime_config: RuntimeConfig = field(default_factory=RuntimeConfig)
    cni_version: str = SPEC_VERSION

    def validate(self, *, need_netns: bool = True) -> None:
        """Raise ``CNIError(INVALID_ENVIRONMENT)`` for a request the spec forbids."""
        if not self.container_id or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", self.container_id):
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid container id",
                           f"{self.container_id!r}: must be alphanumeric, may contain _ . -")
        if (not self.ifname or len(self.ifname) > 15 or self.ifname in (".", "..")
                or _IFNAME_FORBIDDEN.search(self.ifname)):
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid interface name",
                           f"{self.ifname!r}: 1-15 characters, not . or .., no / : or whitespace")
        if need_netns and not self.netns:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "network namespace path required", "CNI_NETNS is empty")
        if self.cni_version not in COMPATIBLE_SPEC_VERSIONS:
            raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, "incompatible CNI version",
                           f"{self.cni_version!r}; supported: {', '.join(COMPATIBLE_SPEC_VERSIONS)}")

    def cni_args(self) -> str:
        """``CNI_ARGS`` as the spec encodes it: ``K1=V1;K2=V2``."""
        return ";".join(f"{k}={v}" for k, v in self.args.items())


@dataclass(frozen=True, slots=True)
class Attachment:
    """One valid attachment, as listed in GC's ``cni.dev/valid-attachments``."""

    container_id: str
    ifname: str = "eth0"

    def to_dict(self) -> dict[str, str]:
        return {"containerID": self.container_id, "ifname": self.ifname}


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface the plugin created: ``sandbox`` is the netns path for interfaces inside the container,
    empty for host-side ones (bridge, host veth end)."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu:
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Interface:
        return cls(str(raw["name"]), str(raw.get("mac", "")), str(raw.get("sandbox", "")), int(raw.get("mtu", 0)))


@dataclass(frozen=True, slots=True)
class IPConfig:
    """An address: ``address`` in CIDR form (``10.1.0.5/24``), its ``gateway``, and ``interface``, the index
    into ``Result.interfaces`` of the interface it is on (``None`` when not tied to one)."""

    address: str
    gateway: str = ""
    interface: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address}
        if self.gateway:
            out["gateway"] = self.gateway
        if self.interface is not None:
            out["interface"] = self.interface
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IPConfig:
        index = raw.get("interface")
        return cls(str(raw["address"]), str(raw.get("gateway", "")), None if index is None else int(index))


@dataclass(frozen=True, slots=True)
class Route:
    """A route added inside the container: ``dst`` CIDR, optional ``gw`` (the default gateway when empty),
    and the optional 1.1 fields ``mtu``, ``advmss``, ``priority``, ``table``, ``scope`` (0 = unset)."""

    dst: str
    gw: str = ""
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int = 0
    scope: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        for key in ("mtu", "advmss", "priority", "table", "scope"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Route:
        return cls(str(raw["dst"]), str(raw.get("gw", "")),
                   **{k: int(raw[k]) for k in ("mtu", "advmss", "priority", "table", "scope") if k in raw})


@dataclass(frozen=True, slots=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DNS:
        return cls(tuple(raw.get("nameservers", ())), str(raw.get("domain", "")), tuple(raw.get("search", ())),
                   tuple(raw.get("options", ())))


@dataclass(frozen=True, slots=True)
class Result:
    """The ADD success result (spec section "Success")."""

    cni_version: str = SPEC_VERSION
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": self.cni_version}
        if self.interfaces:
            out["interfaces"] = [i.to_dict() for i in self.interfaces]
        if self.ips:
            out["ips"] = [i.to_dict() for i in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict() for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def to_json(self) -> str:
        """The spec's result JSON (keys in camelCase, empty optional fields left out, ``dns`` always present)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Result:
        raw = _load(data)
        try:
            return cls(
                str(raw["cniVersion"]),
                tuple(Interface.from_dict(i) for i in raw.get("interfaces", ())),
                tuple(IPConfig.from_dict(i) for i in raw.get("ips", ())),
                tuple(Route.from_dict(r) for r in raw.get("routes", ())),
                DNS.from_dict(raw.get("dns", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CNIError(ErrorCode.DECODING_FAILURE, "not a CNI result", repr(exc)) from None

    def addresses(self) -> list[str]:
        """The bare IP addresses (no prefix length), in order: what a Pod's ``status.podIPs`` shows."""
        return [ip.address.split("/")[0] for ip in self.ips]


@dataclass(frozen=True, slots=True)
class VersionResult:
    """The VERSION result: ``{"cniVersion": ..., "supportedVersions": [...]}``."""

    cni_version: str = SPEC_VERSION
    supported_versions: tuple[str, ...] = COMPATIBLE_SPEC_VERSIONS

    def to_dict(self) -> dict[str, Any]:
        return {"cniVersion": self.cni_version, "supportedVersions": list(self.supported_versions)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# -------------------------------------------------------------------------------------------- interfaces


@runtime_checkable
class NetworkAttacher(Protocol):
    """ADD, DEL and CHECK: what the node agent calls per pod sandbox."""

    async def add(self, request: AttachmentRequest) -> Result:
        """Attach ``request.container_id`` to the network as ``request.ifname`` in ``request.netns``.

        Raises ``CNIError``: ``ATTACHMENT_EXISTS`` if the attachment is present, ``UNKNOWN_CONTAINER`` if the
        netns does not exist, ``NO_ADDRESSES`` if the pool is exhausted, ``INVALID_ENVIRONMENT`` for a bad
        request, ``INCOMPATIBLE_VERSION`` for an unsupported ``cni_version``. A failed ADD leaves nothing behind
        that a DEL could not remove.
        """
        ...

    async def delete(self, request: AttachmentRequest) -> None:
        """Detach and release everything ADD allocated. Idempotent: an unknown attachment, an empty or vanished
        netns, a missing interface or address are all fine. Raises only when cleanup truly failed."""
        ...

    async def check(self, request: AttachmentRequest, previous: Result | None = None) -> None:
        """Verify the attachment (against ``previous``, ADD's result, when given). Raises ``CNIError``
        (``ATTACHMENT_BROKEN``, ``UNKNOWN_CONTAINER``) when it is not as ADD left it. Changes nothing."""
        ...


@runtime_checkable
class NetworkHousekeeper(Protocol):
    """STATUS and GC: network-wide, not per pod."""

    async def status(self) -> None:
        """Return when ADD can succeed; raise ``CNIError`` ``PLUGIN_NOT_AVAILABLE`` (50) or
        ``LIMITED_CONNECTIVITY`` (51) otherwise. Changes nothing."""
        ...

    async def gc(self, valid: Sequence[Attachment]) -> None:
        """Release addresses, interfaces and rules of every attachment not in ``valid``. Idempotent; never
        touches a valid attachment."""
        ...


@runtime_checkable
class CNIPlugin(NetworkAttacher, NetworkHousekeeper, Protocol):
    """A pod network (``cni/1.1``): the six CNI operations. Registered by name through
    ``Registrar.networks`` as a ``NetworkFactory``."""

    async def version(self) -> VersionResult:
        """The spec versions this plugin speaks (VERSION)."""
        ...


#: What ``registrar.networks.add(name, factory, ...)`` takes: options (from the node agent's config) → plugin.
NetworkFactory = Callable[[Mapping[str, Any]], CNIPlugin]


__all__ = [
    "COMPATIBLE_SPEC_VERSIONS",
    "DNS",
    "INTERFACE",
    "SPEC_VERSION",
    "VERSION",
    "Attachment",
    "AttachmentRequest",
    "CNIError",
    "CNIPlugin",
    "ErrorCode",
    "IPConfig",
    "Interface",
    "NetworkAttacher",
    "NetworkFactory",
    "NetworkHousekeeper",
    "PortMapping",
    "Result",
    "Route",
    "RuntimeConfig",
    "VersionResult",
]
