"""A container's environment as the kubelet builds it: ``envFrom``, ``env`` with ``$(VAR)`` expansion over
the variables declared before, ``valueFrom`` sources (ConfigMap and Secret keys, the downward API's field
and resource references) and the docker-link style service variables.

The shared downward-API pieces (field paths, resource values, Go-style label formatting, expansion) live
here too; the volume manager's downwardAPI volumes use them.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from microkube.apiserver.quantity import parse_quantity
from microkube.client import Client, Resource
from microkube_interfaces import cri, errors

Object = dict[str, Any]

CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")

#: Kubernetes' IsEnvVarName: what envFrom keys must look like to be exported (others are skipped).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               '"': '\\"', "\\": "\\\\"}
_LIMIT_DEFAULTS = ("cpu", "memory", "ephemeral-storage")


class EnvError(errors.MicrokubeError):
    """The environment cannot be built; the kubelet reports CreateContainerConfigError with this message."""

    reason = "CreateContainerConfigError"


# -- $(VAR) expansion (Kubernetes' third_party/forked/golang/expansion) ------------------------------


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """Replace ``$(NAME)`` by ``mapping(NAME)``; ``$$`` is a literal ``$``; anything else stays as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    out.append(mapping(text[cursor + 2:close]))
                    advance = close - cursor
            else:
                out.append("$" + following)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """A mapping that looks a name up in each context in turn and leaves unknown references as written."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"

    return lookup


# -- downward API ---------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (what kubelet writes for label and annotation values)."""
    out = ['"']
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """``key="value"`` lines sorted by key, as kubelet's fieldpath.FormatMap."""
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def metadata_field(pod: Object, field_path: str) -> str:
    """The metadata field paths the downward API offers in env and volumes; EnvError when unsupported."""
    meta = pod.get("metadata") or {}
    subscript = _SUBSCRIPT.match(field_path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(field_path.split(".")[1]) or {})
    if field_path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(field_path.split(".")[1], ""))
    raise EnvError(f"unsupported fieldPath: {field_path}")


def _ceil_div(value: Decimal, divisor: Decimal) -> str:
    return str(math.ceil(value / divisor))


def resource_value(container: Object, resource: str, divisor: Any, node_allocatable: Mapping[str, str]) -> str:
    """A resourceFieldRef's value: limits left unset default to the node's allocatable, CPU counts in
    whole divisors rounded up (milli precision), byte quantities in whole divisors rounded up."""
    section, _, name = resource.partition(".")
    if section not in ("limits", "requests") or not (
            name in _LIMIT_DEFAULTS or name.startswith("hugepages-")):
        raise EnvError(f"unsupported container resource : {resource}")
    try:
        divisor_value = parse_quantity(divisor if divisor not in (None, "") else "1")
    except ValueError as exc:
        raise EnvError(f"resourceFieldRef {resource}: divisor: {exc}") from None
    resources = container.get("resources") or {}
    raw = (resources.get(section) or {}).get(name)
    if raw is None and section == "limits" and (name in _LIMIT_DEFAULTS or name.startswith("hugepages-")):
        raw = node_allocatable.get(name)
    try:
        value = parse_quantity(raw) if raw is not None else Decimal(0)
    except ValueError as exc:
        raise EnvError(f"resources.{section}.{name} of container {container.get('name')!r}: {exc}") from None
    if name == "cpu":
        # Quantity.MilliValue() rounds up; a divisor below 1m would divide by zero in kubelet as well
        milli_divisor = math.ceil(divisor_value * 1000)
        if milli_divisor <= 0:
            raise EnvError(f"resourceFieldRef {resource}: divisor {divisor!r} must be at least 1m")
        return _ceil_div(Decimal(math.ceil(value * 1000)), Decimal(milli_divisor))
    byte_divisor = math.ceil(divisor_value)
    if byte_divisor <= 0:
        raise EnvError(f"resourceFieldRef {resource}: divisor {divisor!r} must be positive")
    return _ceil_div(Decimal(math.ceil(value)), Decimal(byte_divisor))


def find_container(pod: Object, name: str) -> Object:
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == name:
            return dict(container)
    raise EnvError(f"container {name} not found")


# -- service links ----------------------------------------------------------------------------------


def _env_name(name: str) -> str:
    return name.replace("-", "_").upper()


def _has_cluster_ip(service: Object) -> bool:
    return ((service.get("spec") or {}).get("clusterIP") or "None") != "None"


def service_env(services: list[Object], namespace: str, enable_service_links: bool) -> dict[str, str]:
    """The docker-link style variables of the namespace's services (when links are enabled) and of the
    ``kubernetes`` service in ``default`` (always), as kubelet's getServiceEnvVarMap and FromServices."""
    chosen: dict[str, Object] = {}
    for service in services:
        meta = service.get("metadata") or {}
        if not _has_cluster_ip(service):
            continue
        name = meta.get("name", "")
        if meta.get("namespace") == "default" and name == "kubernetes":
            chosen.setdefault(name, service)
        elif meta.get("namespace") == namespace and enable_service_links:
            chosen[name] = service
    result: dict[str, str] = {}
    for name in sorted(chosen):
        spec = chosen[name].get("spec") or {}
        ports = spec.get("ports") or []
        if not ports:
            continue
        ip = spec["clusterIP"]
        prefix = _env_name(name)
        result[f"{prefix}_SERVICE_HOST"] = ip
        result[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for port in ports:
            if port.get("name"):
                result[f"{prefix}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port.get("port"))
        host = f"[{ip}]" if isinstance(_ip(ip), ipaddress.IPv6Address) else ip
        for index, port in enumerate(ports):
            protocol = port.get("protocol") or "TCP"
            url = f"{protocol.lower()}://{host}:{port.get('port')}"
            if index == 0:
                result[f"{prefix}_PORT"] = url
            port_prefix = f"{prefix}_PORT_{port.get('port')}_{protocol.upper()}"
            result[port_prefix] = url
            result[f"{port_prefix}_PROTO"] = protocol.lower()
            result[f"{port_prefix}_PORT"] = str(port.get("port"))
            result[f"{port_prefix}_ADDR"] = ip
    return result


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# -- the environment --------------------------------------------------------------------------------


class _Sources:
    """ConfigMaps and Secrets of one namespace, each fetched at most once per environment."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._seen: dict[tuple[str, str], Object | None] = {}

    async def get(self, kind: str, name: str) -> Object | None:
        """The object's string data, or None when it does not exist."""
        key = (kind, name)
        if key not in self._seen:
            resource = CONFIGMAPS if kind == "configmap" else SECRETS
            try:
                obj = await self.client.get(resource, name, self.namespace)
            except errors.NotFound:
                self._seen[key] = None
            except errors.MicrokubeError as exc:
                raise EnvError(f"couldn't get {kind} {self.namespace}/{name}: {exc}") from None
            else:
                if kind == "configmap":
                    self._seen[key] = dict(obj.get("data") or {})
                else:
                    self._seen[key] = {k: base64.b64decode(v).decode(errors="replace")
                                       for k, v in (obj.get("data") or {}).items()}
        return self._seen[key]


def _pod_field(pod: Object, field_path: str, host_ips: list[str], pod_ip: str, pod_ips: list[str]) -> str:
    spec = pod.get("spec") or {}
    if field_path == "spec.nodeName":
        return str(spec.get("nodeName", ""))
    if field_path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName", ""))
    if field_path == "status.hostIP":
        return host_ips[0] if host_ips else ""
    if field_path == "status.hostIPs":
        return ",".join(host_ips)
    if field_path == "status.podIP":
        return pod_ip
    if field_path == "status.podIPs":
        return ",".join(pod_ips)
    return metadata_field(pod, field_path)


async def container_env(client: Client, pod: Object, container: Object, *, host_ip: str, pod_ip: str,
                        pod_ips: list[str], node_allocatable: dict[str, str],
                        services: list[Object] | None = None,
                        on_warning: Callable[[str], None] | None = None) -> list[cri.KeyValue]:
    """The container's environment in kubelet's order of precedence: envFrom, then env (in order, each
    value expanded over the variables before it and the service variables), then the service variables
    that no explicit variable overrides. EnvError carries kubelet's message for a missing source.

    ``on_warning`` receives what kubelet would report as an InvalidEnvironmentVariableNames event."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    sources = _Sources(client, namespace)
    links = service_env(services or [], namespace, spec.get("enableServiceLinks") is not False)
    status_host_ips = [entry.get("ip", "") for entry in (pod.get("status") or {}).get("hostIPs") or []]
    host_ips = [ip for ip in status_host_ips if ip] or ([host_ip] if host_ip else [])
    env: dict[str, str] = {}

    for index, env_from in enumerate(container.get("envFrom") or []):
        prefix = env_from.get("prefix") or ""
        for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = env_from.get(field)
            if ref is None:
                continue
            name = ref.get("name", "")
            data = await sources.get(kind, name)
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind} "{name}" not found')
            invalid = []
            for key, value in data.items():
                if not _ENV_NAME.match(prefix + key):
                    invalid.append(prefix + key)
                    continue
                env[prefix + key] = value
            if invalid and on_warning is not None:
                label = "configMap" if kind == "configmap" else "secret"
                on_warning(f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {label} {namespace}/{name} "
                           f"were skipped since they are considered invalid environment variable names "
                           f"(container {container.get('name')!r}, envFrom[{index}])")

    lookup = mapping_for(env, links)
    for var in container.get("env") or []:
        name = var.get("name", "")
        value = var.get("value") or ""
        source = var.get("valueFrom")
        if value:
            value = expand(value, lookup)
        elif source:
            if "fieldRef" in source:
                value = _pod_field(pod, (source["fieldRef"] or {}).get("fieldPath", ""), host_ips, pod_ip, pod_ips)
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"] or {}
                target = find_container(pod, ref["containerName"]) if ref.get("containerName") else container
                value = resource_value(target, ref.get("resource", ""), ref.get("divisor"), node_allocatable)
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind, ref = (("configmap", source["configMapKeyRef"]) if "configMapKeyRef" in source
                             else ("secret", source["secretKeyRef"]))
                ref = ref or {}
                source_name, key = ref.get("name", ""), ref.get("key", "")
                data = await sources.get(kind, source_name)
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f'{kind} "{source_name}" not found')
                if key not in data:
                    if ref.get("optional"):
                        continue
                    label = "ConfigMap" if kind == "configmap" else "Secret"
                    raise EnvError(f"couldn't find key {key} in {label} {namespace}/{source_name}")
                value = data[key]
        env[name] = value

    result = [cri.KeyValue(key, value) for key, value in env.items()]
    result.extend(cri.KeyValue(key, value) for key, value in links.items() if key not in env)
    return result


__all__ = ["EnvError", "container_env", "expand", "format_map", "mapping_for", "metadata_field",
           "resource_value", "service_env"]
