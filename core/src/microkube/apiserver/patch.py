"""The three PATCH formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch.

All functions are pure: inputs are never modified. Strategic merge patch reads list semantics from the
schema (``x-kubernetes-patch-strategy``, ``x-kubernetes-patch-merge-key``) and honours the directives
``$patch`` (replace, delete, merge), ``$setElementOrder/<list>``, ``$retainKeys`` and
``$deleteFromPrimitiveList/<list>``.
"""

from __future__ import annotations

import copy
from typing import Any

from microkube.apiserver.codec import json_copy
from microkube.apiserver.schemas import child_schema, item_schema
from microkube_interfaces import errors

# -- JSON patch ----------------------------------------------------------------------------------


def _pointer(path: str, index: int) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise errors.Invalid(f"operation {index}: path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], index: int, path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise errors.Invalid(f"operation {index}: path {path!r} does not exist")
    return node, parts[-1]


def _list_index(container: list[Any], key: str, index: int, path: str, *, insert: bool) -> int:
    if insert and key == "-":
        return len(container)
    if not key.isdigit() or (key != "0" and key.startswith("0")):
        raise errors.Invalid(f"operation {index}: {key!r} in path {path!r} is not a valid array index")
    position = int(key)
    if position > len(container) or (not insert and position == len(container)):
        raise errors.Invalid(f"operation {index}: index {position} in path {path!r} is out of bounds")
    return position


def _get(doc: Any, path: str, index: int) -> Any:
    node = doc
    for part in _pointer(path, index):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list):
            node = node[_list_index(node, part, index, path, insert=False)]
        else:
            raise errors.Invalid(f"operation {index}: path {path!r} does not exist")
    return node


def _add(doc: Any, path: str, value: Any, index: int) -> Any:
    parts = _pointer(path, index)
    if not parts:
        return value
    parent, key = _parent(doc, parts, index, path)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, key, index, path, insert=True), value)
    else:
        raise errors.Invalid(f"operation {index}: cannot add to path {path!r}: parent is not a container")
    return doc


def _remove(doc: Any, path: str, index: int) -> Any:
    parts = _pointer(path, index)
    if not parts:
        raise errors.Invalid(f"operation {index}: cannot remove the whole document")
    parent, key = _parent(doc, parts, index, path)
    if isinstance(parent, dict):
        if key not in parent:
            raise errors.Invalid(f"operation {index}: unable to remove nonexistent key {key!r} (path {path!r})")
        return parent.pop(key)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, key, index, path, insert=False))
    raise errors.Invalid(f"operation {index}: path {path!r} does not exist")


def json_patch(doc: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    result: Any = copy.deepcopy(doc)
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise errors.Invalid(f"operation {index} is not an object")
        op, path = operation.get("op"), operation.get("path")
        if not isinstance(path, str):
            raise errors.Invalid(f"operation {index}: missing or non-string path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise errors.Invalid(f"operation {index} ({op} {path}): missing value")
        if op == "add":
            result = _add(result, path, copy.deepcopy(operation["value"]), index)
        elif op == "remove":
            _remove(result, path, index)
        elif op == "replace":
            _get(result, path, index)
            if _pointer(path, index):
                _remove(result, path, index)
            result = _add(result, path, copy.deepcopy(operation["value"]), index)
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise errors.Invalid(f"operation {index} ({op}): missing 'from'")
            value = copy.deepcopy(_get(result, source, index))
            if op == "move":
                if path.startswith(source + "/"):
                    raise errors.Invalid(f"operation {index}: cannot move {source!r} into its own child {path!r}")
                _remove(result, source, index)
            result = _add(result, path, value, index)
        elif op == "test":
            if _get(result, path, index) != operation["value"]:
                raise errors.Invalid(f"operation {index}: test failed: the value at {path!r} is not the expected "
                                     "value")
        else:
            raise errors.Invalid(f"operation {index}: unknown op {op!r}; use add, remove, replace, move, copy or "
                                 "test")
    if not isinstance(result, dict):
        raise errors.Invalid("the patched document is not an object")
    return result


# -- JSON merge patch ----------------------------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: the document is copied once, then the patch is merged into the copy."""
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = json_copy(doc) if isinstance(doc, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            _merge_into(child, value)
        else:
            target[key] = json_copy(value) if isinstance(value, list) else value


# -- strategic merge patch -----------------------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"




def _strategy(schema: dict[str, Any] | None) -> tuple[set[str], str]:
    if schema is None:
        return set(), ""
    strategy = schema.get("x-kubernetes-patch-strategy", "")
    return set(strategy.split(",")) if strategy else set(), schema.get("x-kubernetes-patch-merge-key", "")


def strategic_merge_patch(doc: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        raise errors.Unsupported("strategic merge patch needs the kind's schema; use a JSON merge patch")
    result = _merge_map(copy.deepcopy(doc), patch, schema)
    if result is None:
        raise errors.Invalid("the patch deleted the whole object")
    return result


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any] | None:
    directive = patch.get(DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != DIRECTIVE}
    if directive not in (None, "merge"):
        raise errors.Invalid(f"unknown patch directive {directive!r}; use replace, delete or merge")
    retain_keys = patch.get(RETAIN_KEYS)
    if retain_keys is not None and not isinstance(retain_keys, list):
        raise errors.Invalid(f"{RETAIN_KEYS} must be a list of field names")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (DIRECTIVE, RETAIN_KEYS):
            continue
        if key.startswith(SET_ORDER):
            orders[key[len(SET_ORDER):]] = value if isinstance(value, list) else []
            continue
        if key.startswith(DELETE_PRIMITIVE):
            field = key[len(DELETE_PRIMITIVE):]
            current = original.get(field)
            if isinstance(current, list) and isinstance(value, list):
                original[field] = [item for item in current if item not in value]
            continue
        if key.startswith("$"):
            raise errors.Invalid(f"unknown patch directive {key!r}")
        if value is None:
            original.pop(key, None)
            continue
        child = child_schema(schema, key)
        current = original.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, child)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _merge_list(current if isinstance(current, list) else [], value, child)
        else:
            original[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(original.get(field), list):
            original[field] = _reorder(original[field], order, _strategy(child_schema(schema, field))[1])
    if retain_keys is not None:
        keep = set(retain_keys)
        for key in list(original):
            if key not in keep:
                del original[key]
    return original


def _merge_list(original: list[Any], patch: list[Any], schema: dict[str, Any] | None) -> list[Any]:
    strategies, merge_key = _strategy(schema)
    if "merge" not in strategies:
        return [_strip(copy.deepcopy(item)) for item in patch if not _is_directive(item)]
    if any(isinstance(item, dict) and item.get(DIRECTIVE) == "replace" and len(item) == 1 for item in patch):
        return [copy.deepcopy(item) for item in patch if not _is_directive(item)]
    if not merge_key:  # a set of primitives
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    items = item_schema(schema)
    result = list(original)
    for item in patch:
        if not isinstance(item, dict):
            raise errors.Invalid(f"list items must be objects with the merge key {merge_key!r}")
        if merge_key not in item:
            raise errors.Invalid(f"an item of a list merged on {merge_key!r} lacks that key")
        position = next((i for i, existing in enumerate(result)
                         if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]), None)
        if item.get(DIRECTIVE) == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            merged = _merge_map({}, item, items)
            if merged is not None:
                result.append(merged)
        else:
            merged = _merge_map(result[position], item, items)
            if merged is None:
                result.pop(position)
            else:
                result[position] = merged
    return result


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {DIRECTIVE}


def _strip(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: _strip(v) for k, v in item.items() if not k.startswith("$")}
    return item


def _reorder(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    def identity(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [identity(o) for o in order]
    ranked = {key: index for index, key in enumerate(wanted)}
    in_order = sorted((i for i in items if identity(i) in ranked), key=lambda i: ranked[identity(i)])
    rest = [i for i in items if identity(i) not in ranked]
    return in_order + rest
