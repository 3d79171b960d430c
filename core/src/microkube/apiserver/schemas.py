"""Checking request bodies against schemas: unknown fields (fieldValidation), JSON types, and the
structural schemas of custom resources (validation, pruning, defaults are in crds.py)."""

from __future__ import annotations

import functools
import re
from typing import Any

from microkube.apiserver.definitions import load_definitions, ref_name
from microkube_interfaces.errors import FieldError

#: Kinds whose value may be anything JSON (RawExtension, JSON, JSONSchemaProps' free-form members).
FREE_FORM = frozenset({
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
})
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
TIME = frozenset({"io.k8s.apimachinery.pkg.apis.meta.v1.Time", "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _types(node: dict[str, Any]) -> set[str]:
    value = node.get("type")
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def resolve_schema(node: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(definition name or "", schema node) with ``$ref`` / single ``allOf`` followed."""
    ref = node.get("$ref")
    if ref is not None:
        return _resolve_ref(ref)
    if "allOf" in node and len(node["allOf"]) == 1:
        return resolve_schema(node["allOf"][0])
    return "", node


def child_schema(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The schema of member ``key`` of an object schema (a property, or the map's value schema)."""
    if schema is None:
        return None
    _, node = resolve_schema(schema)
    properties = node.get("properties") or {}
    if key in properties:
        child: dict[str, Any] = properties[key]
        return child
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def item_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of a list schema's items."""
    if schema is None:
        return None
    _, node = resolve_schema(schema)
    items = node.get("items")
    return items if isinstance(items, dict) else None


@functools.lru_cache(maxsize=4096)
def _resolve_ref(ref: str) -> tuple[str, dict[str, Any]]:
    name = ref_name(ref)
    target_name, node = resolve_schema(load_definitions()[name])
    return target_name or name, node


def _free(name: str, node: dict[str, Any]) -> bool:
    return name in FREE_FORM or bool(node.get("x-kubernetes-preserve-unknown-fields"))


_JSON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
               "object": (dict,)}


def _type_ok(value: Any, wanted: set[str]) -> bool:
    if value is None or not wanted:
        return True
    for kind in wanted - {"null"}:
        classes = _JSON_TYPES.get(kind, ())
        if isinstance(value, bool) and kind in ("integer", "number"):
            continue
        if isinstance(value, classes):
            return True
    return "null" in wanted and value is None


def _describe(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def inspect_fields(obj: Any, root_schema: dict[str, Any]) -> tuple[list[str], list[FieldError]]:
    """In one walk: the JSON paths of fields the schema does not define (for fieldValidation Strict
    and Warn), and the values of the wrong JSON type (a string where an integer belongs, …)."""
    unknown: list[str] = []
    wrong: list[FieldError] = []
    _inspect(obj, root_schema, "", unknown, wrong)
    return unknown, wrong


def _inspect(value: Any, schema: dict[str, Any], path: str, unknown: list[str], found: list[FieldError]) -> None:
    name, node = resolve_schema(schema)
    if _free(name, node) or value is None or name in TIME:
        return
    if name == INT_OR_STRING:
        if not isinstance(value, str | int) or isinstance(value, bool):
            found.append(FieldError(path, f"Invalid value: {_describe(value)}: must be an integer or a string"))
        return
    if name == QUANTITY:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            found.append(FieldError(path, f"Invalid value: {_describe(value)}: must be a quantity string such "
                                          'as "100m" or "1Gi"'))
        return
    wanted = _types(node)
    if not _type_ok(value, wanted):
        expected = " or ".join(sorted(wanted - {"null"}))
        found.append(FieldError(path or "<root>", f"Invalid value: \"{_describe(value)}\": {path or 'body'} in "
                                f"body must be of type {expected}: \"{_describe(value)}\"", "FieldValueTypeInvalid"))
        return
    if isinstance(value, dict):
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                _inspect(item, properties[key], _join(path, key), unknown, found)
            elif isinstance(extra, dict):
                _inspect(item, extra, _join(path, key), unknown, found)
            elif extra is True:
                continue
            elif properties is not None or "object" in _types(node):
                unknown.append(_join(path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            _inspect(item, node["items"], f"{path}[{index}]", unknown, found)


# -- custom resources ------------------------------------------------------------------------------

ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def prune(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Remove fields a structural schema does not define (in place); the removed paths."""
    removed: list[str] = []
    for key in list(obj):
        if key in ROOT_FIELDS:
            continue
        properties = schema.get("properties") or {}
        if key in properties:
            _prune(obj[key], properties[key], key, removed)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            del obj[key]
            removed.append(key)
    return removed


def _prune(value: Any, node: dict[str, Any], path: str, removed: list[str]) -> None:
    if node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
        return
    if node.get("x-kubernetes-embedded-resource") and isinstance(value, dict):
        for key in list(value):
            if key in ROOT_FIELDS:
                continue
            _prune_member(value, key, node, path, removed)
        return
    if isinstance(value, dict):
        for key in list(value):
            _prune_member(value, key, node, path, removed)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            _prune(item, node["items"], f"{path}[{index}]", removed)


def _prune_member(value: dict[str, Any], key: str, node: dict[str, Any], path: str, removed: list[str]) -> None:
    properties = node.get("properties") or {}
    extra = node.get("additionalProperties")
    if key in properties:
        _prune(value[key], properties[key], _join(path, key), removed)
    elif isinstance(extra, dict):
        _prune(value[key], extra, _join(path, key), removed)
    elif extra is True or node.get("x-kubernetes-preserve-unknown-fields"):
        return
    else:
        del value[key]
        removed.append(_join(path, key))


def validate_custom(obj: dict[str, Any], schema: dict[str, Any]) -> list[FieldError]:
    """Validate a custom object against its CRD's structural schema (metadata is the server's)."""
    found: list[FieldError] = []
    body = {k: v for k, v in obj.items() if k not in ROOT_FIELDS}
    node = {**schema, "properties": {k: v for k, v in (schema.get("properties") or {}).items()
                                     if k not in ROOT_FIELDS}}
    node["required"] = [r for r in schema.get("required") or [] if r not in ROOT_FIELDS]
    _validate(body, node, "", found)
    return found


def _validate(value: Any, node: dict[str, Any], path: str, found: list[FieldError]) -> None:
    shown = path or "<root>"
    if value is None:
        if not node.get("nullable") and node.get("type"):
            found.append(FieldError(shown, f"Invalid value: \"null\": {shown} in body must be of type "
                                    f"{node.get('type')}: \"null\"", "FieldValueTypeInvalid"))
        return
    if node.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            found.append(FieldError(shown, f"Invalid value: \"{_describe(value)}\": {shown} in body must be "
                                    "of type integer or string", "FieldValueTypeInvalid"))
            return
    elif node.get("type") and not _type_ok(value, {node["type"]}):
        found.append(FieldError(shown, f"Invalid value: \"{_describe(value)}\": {shown} in body must be of type "
                                f"{node['type']}: \"{_describe(value)}\"", "FieldValueTypeInvalid"))
        return
    if "enum" in node and value not in node["enum"]:
        allowed = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in node["enum"])
        found.append(FieldError(shown, f"Unsupported value: {_quote(value)}: supported values: {allowed}",
                                "FieldValueNotSupported"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and (value < node["minimum"] or (node.get("exclusiveMinimum") and
                                                              value == node["minimum"])):
            found.append(FieldError(shown, f"Invalid value: {value}: {shown} in body should be greater than or "
                                    f"equal to {node['minimum']}"))
        if "maximum" in node and (value > node["maximum"] or (node.get("exclusiveMaximum") and
                                                              value == node["maximum"])):
            found.append(FieldError(shown, f"Invalid value: {value}: {shown} in body should be less than or "
                                    f"equal to {node['maximum']}"))
        if node.get("multipleOf") and value % node["multipleOf"]:
            found.append(FieldError(shown, f"Invalid value: {value}: {shown} in body should be a multiple of "
                                    f"{node['multipleOf']}"))
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            found.append(FieldError(shown, f"Invalid value: {_quote(value)}: {shown} in body should be at least "
                                    f"{node['minLength']} chars long"))
        if "maxLength" in node and len(value) > node["maxLength"]:
            found.append(FieldError(shown, f"Too long: may not be more than {node['maxLength']} bytes",
                                    "FieldValueTooLong"))
        if "pattern" in node and not _matches(node["pattern"], value):
            found.append(FieldError(shown, f"Invalid value: {_quote(value)}: {shown} in body should match "
                                    f"'{node['pattern']}'"))
    if isinstance(value, list):
        if "minItems" in node and len(value) < node["minItems"]:
            found.append(FieldError(shown, f"Invalid value: {len(value)}: {shown} in body should have at least "
                                    f"{node['minItems']} items"))
        if "maxItems" in node and len(value) > node["maxItems"]:
            found.append(FieldError(shown, f"Too many: {len(value)}: must have at most {node['maxItems']} items",
                                    "FieldValueTooMany"))
        if isinstance(node.get("items"), dict):
            for index, item in enumerate(value):
                _validate(item, node["items"], f"{path}[{index}]", found)
    if isinstance(value, dict):
        for required in node.get("required") or []:
            if required not in value:
                found.append(FieldError(_join(path, required), "Required value", "FieldValueRequired"))
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                _validate(item, properties[key], _join(path, key), found)
            elif isinstance(extra, dict):
                _validate(item, extra, _join(path, key), found)
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            found.append(FieldError(shown, f"Too many: {len(value)}: must have at most {node['maxProperties']} "
                                    "items", "FieldValueTooMany"))


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _matches(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return compiled is None or compiled.search(value) is not None


def check_structural(schema: dict[str, Any]) -> list[FieldError]:
    """Why a CRD schema is not structural (kube-apiserver refuses such CRDs), as field errors."""
    found: list[FieldError] = []
    if schema.get("type") != "object":
        found.append(FieldError("type", 'Required value: must be "object" at the root', "FieldValueRequired"))
    _structural(schema, "", found, root=True)
    metadata = (schema.get("properties") or {}).get("metadata")
    if isinstance(metadata, dict):
        extra = set(metadata.get("properties") or {}) - {"name", "generateName"}
        if extra:
            found.append(FieldError("properties[metadata]", "Forbidden: must not specify anything other than name "
                                    "and generateName, but metadata is implicitly specified", "FieldValueForbidden"))
    return found


def _structural(node: dict[str, Any], path: str, found: list[FieldError], root: bool = False) -> None:
    if "$ref" in node:
        found.append(FieldError(_join(path, "$ref"), "Forbidden: $ref is not allowed", "FieldValueForbidden"))
    if not node.get("type") and not node.get("x-kubernetes-int-or-string") and not node.get(
        "x-kubernetes-preserve-unknown-fields"
    ) and not root:
        found.append(FieldError(_join(path, "type"), "Required value: must not be empty for specified object "
                                "fields", "FieldValueRequired"))
    for key, child in (node.get("properties") or {}).items():
        if isinstance(child, dict):
            _structural(child, _join(path, f"properties[{key}]"), found)
    if isinstance(node.get("items"), dict):
        _structural(node["items"], _join(path, "items"), found)
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], _join(path, "additionalProperties"), found)
