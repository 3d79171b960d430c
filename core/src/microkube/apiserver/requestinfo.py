"""Turning a request path and method into Kubernetes request attributes (verb, group, resource, …)."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiDictProxy

from microkube.apiserver.status import ApiError

_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    is_resource: bool
    path: str
    verb: str
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""


def parse(method: str, path: str, query: MultiDictProxy[str]) -> RequestInfo:
    """Kubernetes' RequestInfoFactory rules, including the legacy /watch/ prefix."""
    parts = [p for p in path.split("/") if p]
    verb = _VERBS.get(method, method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(False, path, verb)
    if parts[0] == "api":
        if len(parts) < 2:
            return RequestInfo(False, path, verb)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return RequestInfo(False, path, verb)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return RequestInfo(False, path, verb, group, version)
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
        verb = "watch"
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        # /namespaces/{name}/status and /finalize are the namespace's own subresources.
        if len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if len(rest) > 3 and subresource != "proxy":
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if resource == "namespaces" and not subresource:
        # Namespaces are cluster-scoped; "namespace" attribute is the object's own name.
        namespace = name
    if not watch_prefix:
        if method == "GET" and _truthy(query.get("watch")) and not subresource:
            verb = "watch"
        elif method == "GET" and not name:
            verb = "list"
        elif method == "DELETE" and not name:
            verb = "deletecollection"
    return RequestInfo(True, path, verb, group, version, namespace, resource, name, subresource)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")
