"""The resource catalog: every kind the API server serves, built-in or custom, and its discovery documents."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from microkube_interfaces.errors import AlreadyExists
from microkube_interfaces.resources import ResourceType, Strategy

#: Group order of /apis, as kube-apiserver lists them (others follow alphabetically).
GROUP_ORDER = (
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
    "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io", "policy", "rbac.authorization.k8s.io",
    "storage.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "node.k8s.io", "discovery.k8s.io", "flowcontrol.apiserver.k8s.io",
)

#: Subresource name → (group, version, kind) of the object the subresource speaks, and its verbs.
SUBRESOURCE_KINDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "status": ("", "", "", ("get", "patch", "update")),
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "binding": ("", "v1", "Binding", ("create",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "log": ("", "v1", "Pod", ("get",)),
    "exec": ("", "v1", "PodExecOptions", ("create", "get")),
    "attach": ("", "v1", "PodAttachOptions", ("create", "get")),
    "portforward": ("", "v1", "PodPortForwardOptions", ("create", "get")),
    "proxy": ("", "v1", "", ("create", "delete", "get", "patch", "update")),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "finalize": ("", "v1", "Namespace", ("update",)),
    "ephemeralcontainers": ("", "", "", ("get", "patch", "update")),
    "resize": ("", "", "", ("get", "patch", "update")),
    "approval": ("", "", "", ("get", "patch", "update")),
}


@dataclass
class Served:
    """One served resource: its description, behaviour, schema and where its objects are stored."""

    resource: ResourceType
    strategy: Strategy
    custom: bool = False

    @property
    def key_prefix(self) -> str:
        return f"/registry/{self.resource.group_resource}/"

    def key(self, namespace: str, name: str) -> str:
        if self.resource.namespaced:
            return f"{self.key_prefix}{namespace}/{name}"
        return f"{self.key_prefix}{name}"

    def list_prefix(self, namespace: str) -> str:
        return f"{self.key_prefix}{namespace}/" if self.resource.namespaced and namespace else self.key_prefix

    @property
    def schema(self) -> dict[str, Any] | None:
        if self.resource.schema is not None:
            return dict(self.resource.schema)
        if self.resource.definition:
            return {"$ref": f"#/$defs/{self.resource.definition}"}
        return None

    @property
    def api_version(self) -> str:
        return self.resource.group_version


class ResourceCatalog:
    def __init__(self) -> None:
        self._served: dict[tuple[str, str, str], Served] = {}
        self._by_kind: dict[tuple[str, str, str], Served] = {}
        #: Bumped on every change, so discovery and OpenAPI caches know when to rebuild.
        self.generation = 0

    def add(self, resource: ResourceType, strategy: Strategy, *, custom: bool = False) -> Served:
        key = (resource.group, resource.version, resource.plural)
        if key in self._served:
            raise AlreadyExists(f"resource {resource.plural} in {resource.group_version} is served twice")
        served = Served(resource, strategy, custom)
        self._served[key] = served
        self._by_kind[(resource.group, resource.version, resource.kind)] = served
        self.generation += 1
        return served

    def remove(self, group: str, version: str, plural: str) -> None:
        served = self._served.pop((group, version, plural), None)
        if served is not None:
            self._by_kind.pop((group, version, served.resource.kind), None)
            self.generation += 1

    def get(self, group: str, version: str, plural: str) -> Served | None:
        return self._served.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> Served | None:
        return self._by_kind.get((group, version, kind))

    def __iter__(self) -> Iterator[Served]:
        return iter(self._served.values())

    def storage_prefixes(self) -> dict[str, list[Served]]:
        """Key prefix → every served version stored under it."""
        out: dict[str, list[Served]] = {}
        for served in self._served.values():
            out.setdefault(served.key_prefix, []).append(served)
        return out

    def groups(self) -> dict[str, list[str]]:
        """Group → versions, groups in kube-apiserver's order, versions preferred first."""
        found: dict[str, list[str]] = {}
        for group, version, _ in self._served:
            versions = found.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        for versions in found.values():
            versions.sort(key=_version_priority)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def resources(self, group: str, version: str) -> list[Served]:
        return [s for (g, v, _), s in sorted(self._served.items()) if g == group and v == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA > beta > alpha, then higher numbers first."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major = int(match.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[match.group(2) or ""]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor)
