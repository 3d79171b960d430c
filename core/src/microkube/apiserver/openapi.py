"""/openapi/v3: one document per group-version, built from the 1.32 definitions and the served kinds.

kubectl reads these for ``explain``, for its query-parameter check (is ``fieldValidation`` supported,
then it leaves unknown-field checks to the server) and for patch metadata. Documents are built
lazily, cached as bytes, and keyed by a content hash that kubectl uses as its HTTP cache key.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from microkube.apiserver.definitions import KUBERNETES_VERSION, load_definitions, ref_name
from microkube_interfaces.resources import ResourceType

V3_PREFIX = "#/components/schemas/"
PATCH_MEDIA = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": True}}


WRITE_PARAMETERS = [
    _query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All"),
    _query("fieldManager", "fieldManager is a name associated with the actor or entity that is making changes."),
    _query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request "
                              "containing unknown or duplicate fields. Valid values: Ignore, Warn, Strict."),
]
LIST_PARAMETERS = [
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _query("continue", "The continue option should be set when retrieving more results from the server."),
    _query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be "
                              "served from."),
    _query("watch", "Watch for changes to the described resources.", "boolean"),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type BOOKMARK.", "boolean"),
]


def to_v3(node: Any, refs: set[str]) -> Any:
    """A kubernetes-validate (draft 2020-12) node in OpenAPI 3.0 form, collecting referenced names."""
    if isinstance(node, list):
        return [to_v3(item, refs) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            name = ref_name(value)
            refs.add(name)
            out["$ref"] = V3_PREFIX + name
        elif key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds[0] if kinds else "object"
        elif key == "oneOf" and isinstance(value, list) and all(
            isinstance(v, dict) and set(v) <= {"type"} for v in value
        ):
            continue  # Quantity / IntOrString unions: OpenAPI 3.0 v2-style schemas carry a format instead
        elif key == "enum" and node.get("type") in (["string", "null"], "string") and len(value) == 1:
            continue  # apiVersion/kind enums injected by the data package, not part of the upstream spec
        elif key in ("properties", "$defs", "patternProperties"):
            out[key] = {k: to_v3(v, refs) for k, v in value.items()}
        else:
            out[key] = to_v3(value, refs)
    if "$ref" in out and len(out) > 1:
        # OpenAPI 3.0 ignores a $ref's siblings: wrap it, as the upstream v3 documents do.
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _closure(names: Iterable[str]) -> dict[str, Any]:
    definitions = load_definitions()
    pending = list(names)
    done: dict[str, Any] = {}
    while pending:
        name = pending.pop()
        if name in done or name not in definitions:
            continue
        refs: set[str] = set()
        converted = to_v3(definitions[name], refs)
        if name.endswith("IntOrString"):
            converted = {"type": "string", "format": "int-or-string", "description": converted.get("description",
                                                                                                   "")}
        elif name.endswith("resource.Quantity"):
            converted = {"type": "string", "description": converted.get("description", "")}
        done[name] = converted
        pending.extend(refs - done.keys())
    return done


def _group_version_path(resource: ResourceType) -> str:
    return f"apis/{resource.group}/{resource.version}" if resource.group else f"api/{resource.version}"


def _custom_component(resource: ResourceType) -> tuple[str, dict[str, Any]]:
    reversed_group = ".".join(reversed(resource.group.split(".")))
    name = f"{reversed_group}.{resource.version}.{resource.kind}"
    schema = copy.deepcopy(dict(resource.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}))
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines the versioned schema "
                                         "of this representation of an object."})
    properties.setdefault("kind", {"type": "string", "description": "Kind is a string value representing the REST "
                                   "resource this object represents."})
    properties["metadata"] = {"allOf": [{"$ref": V3_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
                              "description": "Standard object's metadata."}
    schema["x-kubernetes-group-version-kind"] = [{"group": resource.group, "version": resource.version,
                                                  "kind": resource.kind}]
    return name, schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": V3_PREFIX + name}


def _response(name: str) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": _ref(name)},
                                             "application/yaml": {"schema": _ref(name)}}}


def _paths(resource: ResourceType, component: str) -> dict[str, Any]:
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    base = "/" + _group_version_path(resource)
    if resource.namespaced:
        base += "/namespaces/{namespace}"
    collection = f"{base}/{resource.plural}"
    item = f"{collection}/{{name}}"
    body = {"content": {"*/*": {"schema": _ref(component)}}, "required": True}
    verbs = set(resource.verbs)

    def op(action: str, operation_id: str, **extra: Any) -> dict[str, Any]:
        return {"operationId": f"{operation_id}{resource.kind}", "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk, "responses": {"200": _response(component)}, **extra}

    paths: dict[str, Any] = {collection: {}, item: {}}
    if "list" in verbs:
        paths[collection]["get"] = op("list", "list", parameters=LIST_PARAMETERS)
    if "create" in verbs:
        paths[collection]["post"] = op("post", "create", parameters=WRITE_PARAMETERS, requestBody=body)
    if "get" in verbs:
        paths[item]["get"] = op("get", "read")
    if "update" in verbs:
        paths[item]["put"] = op("put", "replace", parameters=WRITE_PARAMETERS, requestBody=body)
    if "patch" in verbs:
        patch_body = {"content": {media: {"schema": _ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}
                                  for media in PATCH_MEDIA}, "required": True}
        paths[item]["patch"] = op("patch", "patch", parameters=[
            *WRITE_PARAMETERS, _query("force", "Force is going to \"force\" Apply requests.", "boolean")],
            requestBody=patch_body)
    if "delete" in verbs:
        paths[item]["delete"] = op("delete", "delete", requestBody={
            "content": {"*/*": {"schema": _ref(DELETE_OPTIONS)}}})
    shared = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if resource.namespaced:
        ns = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
        paths[collection]["parameters"] = [ns]
        shared.append(ns)
    paths[item]["parameters"] = shared
    for sub in resource.subresources:
        if sub in ("status", "scale"):
            sub_component = component if sub == "status" else "io.k8s.api.autoscaling.v1.Scale"
            sub_gvk = gvk if sub == "status" else {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            paths[f"{item}/{sub}"] = {
                "get": {"operationId": f"read{resource.kind}{sub.title()}", "x-kubernetes-action": "get",
                        "x-kubernetes-group-version-kind": sub_gvk, "responses": {"200": _response(sub_component)}},
                "parameters": shared,
            }
    return {path: value for path, value in paths.items() if value}


class OpenAPIDocuments:
    def __init__(self, resources: Iterable[ResourceType]) -> None:
        self._resources: list[ResourceType] = []
        self._cache: dict[str, tuple[bytes, str]] = {}
        self.update(resources)

    def update(self, resources: Iterable[ResourceType]) -> None:
        self._resources = list(resources)
        self._cache.clear()

    def _group_versions(self) -> dict[str, list[ResourceType]]:
        out: dict[str, list[ResourceType]] = {}
        for resource in self._resources:
            out.setdefault(_group_version_path(resource), []).append(resource)
        return out

    def _build(self, path: str) -> tuple[bytes, str] | None:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        resources = self._group_versions().get(path)
        if not resources:
            return None
        paths: dict[str, Any] = {}
        names = {STATUS, DELETE_OPTIONS, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
        custom: dict[str, Any] = {}
        for resource in resources:
            if resource.definition:
                component = resource.definition
                names.add(component)
            else:
                component, schema = _custom_component(resource)
                refs: set[str] = set()
                custom[component] = to_v3(schema, refs)
                names |= refs | {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
            if "scale" in resource.subresources:
                names.add("io.k8s.api.autoscaling.v1.Scale")
            paths.update(_paths(resource, component))
        schemas = _closure(names)
        schemas.update(custom)
        document = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
                    "paths": paths, "components": {"schemas": dict(sorted(schemas.items()))}}
        body = orjson.dumps(document)
        digest = hashlib.sha512(body).hexdigest()[:128].upper()
        self._cache[path] = (body, digest)
        return body, digest

    def index(self) -> dict[str, Any]:
        paths = {}
        for path in sorted(self._group_versions()):
            built = self._build(path)
            if built is not None:
                paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={built[1]}"}
        return {"paths": paths}

    def document(self, path: str) -> bytes | None:
        built = self._build(path.strip("/"))
        return built[0] if built else None
