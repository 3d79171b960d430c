"""Server-side apply and field ownership (metadata.managedFields, FieldsV1).

An object's fields are a set of paths. Path elements: ``f:<name>`` (a struct or map member),
``k:<json>`` (an item of an associative list, by its keys), ``v:<json>`` (an item of a set) and
``i:<n>`` (an item of an atomic list is never addressed; the list is one field). List semantics come
from the schema: ``x-kubernetes-list-type`` (atomic, set, map + list-map-keys), else a patch merge key
makes a map keyed by it, else the list is atomic; maps are granular unless ``x-kubernetes-map-type``
is atomic.

Apply: the manager owns exactly the fields of its applied configuration. A field another manager
owns with a different value is a conflict (409) unless forced, which takes ownership. Fields the
manager applied before but no longer does are removed unless someone else owns them.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from microkube.apiserver.codec import json_copy
from microkube.apiserver.schemas import child_schema, item_schema, resolve_schema
from microkube_interfaces import errors

Path = tuple[str, ...]
#: Never owned through apply: identity, bookkeeping and the server's own fields.
IGNORED = {("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name"), ("f:metadata", "f:namespace"),
           ("f:metadata", "f:uid"), ("f:metadata", "f:resourceVersion"), ("f:metadata", "f:generation"),
           ("f:metadata", "f:creationTimestamp"), ("f:metadata", "f:managedFields"),
           ("f:metadata", "f:deletionTimestamp"), ("f:metadata", "f:deletionGracePeriodSeconds"),
           ("f:metadata", "f:selfLink")}
#: Keys of associative lists that may be left out and default (kube-openapi's defaults).
KEY_DEFAULTS = {"protocol": "TCP"}


class ApplyConflict(errors.Conflict):
    def __init__(self, conflicts: list[tuple[str, str]], api_version: str) -> None:
        self.conflicts = conflicts
        count = len(conflicts)
        listed = "\n".join(f'- conflict with "{manager}" using {api_version}: {path}' for manager, path in conflicts)
        if count == 1:
            manager, path = conflicts[0]
            message = f'Apply failed with 1 conflict: conflict with "{manager}" using {api_version}: {path}'
        else:
            message = f"Apply failed with {count} conflicts: {listed}"
        super().__init__(message)


def _list_semantics(schema: dict[str, Any] | None) -> tuple[str, list[str]]:
    """("atomic" | "set" | "map", keys) of a list field's schema node (before resolving items)."""
    if schema is None:
        return "atomic", []
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        return "map", list(schema.get("x-kubernetes-list-map-keys") or [])
    if list_type in ("set", "atomic"):
        return list_type, []
    strategy = schema.get("x-kubernetes-patch-strategy", "")
    merge_key = schema.get("x-kubernetes-patch-merge-key")
    if "merge" in strategy.split(",") and merge_key:
        return "map", [merge_key]
    if "merge" in strategy.split(","):
        return "set", []
    return "atomic", []




def _atomic_map(schema: dict[str, Any] | None) -> bool:
    if schema is None:
        return False
    if schema.get("x-kubernetes-map-type") == "atomic":
        return True
    name, node = resolve_schema(schema)
    return node.get("x-kubernetes-map-type") == "atomic" or name.endswith(("FieldsV1", "RawExtension"))


def _item_key(item: Any, keys: list[str]) -> str:
    if not isinstance(item, dict):
        return orjson.dumps(item).decode()
    return orjson.dumps({k: item.get(k, KEY_DEFAULTS.get(k, "")) for k in keys},
                        option=orjson.OPT_SORT_KEYS).decode()


def field_set(obj: Any, schema: dict[str, Any] | None, prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf path of ``obj`` with its value (structs and granular maps are walked)."""
    out: dict[Path, Any] = {}
    _walk(obj, schema, prefix, out)
    for ignored in IGNORED:
        out.pop(ignored, None)
    return out


def _walk(value: Any, schema: dict[str, Any] | None, path: Path, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and not _atomic_map(schema) and value:
        for key, item in value.items():
            _walk(item, child_schema(schema, key), (*path, f"f:{key}"), out)
        return
    if isinstance(value, list) and value:
        kind, keys = _list_semantics(schema)
        if kind == "map" and keys and all(isinstance(i, dict) for i in value):
            items = item_schema(schema)
            for item in value:
                item_path = (*path, f"k:{_item_key(item, keys)}")
                out[(*item_path, ".")] = None
                for key, member in item.items():
                    _walk(member, child_schema(items, key), (*item_path, f"f:{key}"), out)
            return
        if kind == "set":
            for item in value:
                out[(*path, f"v:{orjson.dumps(item).decode()}")] = item
            return
    out[path] = value


def _tree(value: Any, schema: dict[str, Any] | None, node: dict[str, Any]) -> None:
    """The FieldsV1 tree of ``value`` built in one walk (the same shape as _walk's paths)."""
    if isinstance(value, dict) and not _atomic_map(schema) and value:
        for key, item in value.items():
            _tree(item, child_schema(schema, key), node.setdefault(f"f:{key}", {}))
        return
    if isinstance(value, list) and value:
        kind, keys = _list_semantics(schema)
        if kind == "map" and keys and all(isinstance(i, dict) for i in value):
            items = item_schema(schema)
            for item in value:
                item_node = node.setdefault(f"k:{_item_key(item, keys)}", {})
                item_node["."] = {}
                for key, member in item.items():
                    _tree(member, child_schema(items, key), item_node.setdefault(f"f:{key}", {}))
            return
        if kind == "set":
            for item in value:
                node[f"v:{orjson.dumps(item).decode()}"] = {}


def _to_fields_v1(paths: set[Path] | dict[Path, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for element in path:
            node = node.setdefault(element, {})
    return root


def _from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        path = (*prefix, key)
        if key == "." or not child:
            paths.add(path)
        else:
            paths |= _from_fields_v1(child, path)
    return paths


def _managers(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    managed: list[dict[str, Any]] = json_copy(((obj or {}).get("metadata") or {}).get("managedFields") or [])
    return managed


def _entry_paths(entry: dict[str, Any]) -> set[Path]:
    return _from_fields_v1(entry.get("fieldsV1") or {})


def _display(path: Path) -> str:
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if element == ".":
            continue
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            out += f"[{','.join(f'{k}={v}' for k, v in orjson.loads(rest).items())}]"
        elif kind == "v":
            out += f"[{rest}]"
    return out


def _lookup(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for element in path:
        if element == ".":
            return True, None
        kind, _, rest = element.partition(":")
        if kind == "f" and isinstance(node, dict) and rest in node:
            node = node[rest]
        elif kind == "k" and isinstance(node, list):
            wanted = orjson.loads(rest)
            node = next((i for i in node if isinstance(i, dict) and
                         all(i.get(k, KEY_DEFAULTS.get(k, "")) == v for k, v in wanted.items())), _MISSING)
            if node is _MISSING:
                return False, None
        elif kind == "v" and isinstance(node, list):
            return orjson.loads(rest) in node, orjson.loads(rest)
        else:
            return False, None
    return True, node


_MISSING = object()


def _merge(live: Any, applied: Any, schema: dict[str, Any] | None) -> Any:
    """Applied values over live ones, merging structs, granular maps, associative lists and sets."""
    if isinstance(applied, dict) and isinstance(live, dict) and not _atomic_map(schema):
        result = dict(live)
        for key, value in applied.items():
            result[key] = (_merge(live[key], value, child_schema(schema, key)) if key in live
                           else copy.deepcopy(value))
        return result
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = _list_semantics(schema)
        if kind == "map" and keys:
            items = item_schema(schema)
            result_list = list(live)
            for item in applied:
                key = _item_key(item, keys)
                position = next((i for i, existing in enumerate(result_list) if _item_key(existing, keys) == key),
                                None)
                if position is None:
                    result_list.append(copy.deepcopy(item))
                else:
                    result_list[position] = _merge(result_list[position], item, items)
            return result_list
        if kind == "set":
            return list(live) + [copy.deepcopy(i) for i in applied if i not in live]
    return copy.deepcopy(applied)


def _remove(obj: Any, path: Path) -> None:
    parent = obj
    for element in path[:-1]:
        found, parent = _lookup(parent, (element,))
        if not found:
            return
    last = path[-1]
    if last == ".":
        _remove(obj, path[:-1])
        return
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        wanted = orjson.loads(rest)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(
            i.get(k, KEY_DEFAULTS.get(k, "")) == v for k, v in wanted.items()))]
    elif kind == "v" and isinstance(parent, list):
        value = orjson.loads(rest)
        parent[:] = [i for i in parent if i != value]


def _prune_empty(obj: Any, path: Path) -> None:
    """After removing a field, drop the containers it leaves empty (up to the top level)."""
    for depth in range(len(path) - 1, 0, -1):
        found, node = _lookup(obj, path[:depth])
        if not found:
            continue
        if isinstance(node, dict | list) and not node:
            _remove(obj, path[:depth])
        else:
            return


def _owned_by(path: Path, paths: set[Path]) -> bool:
    """Whether ``path`` or something below it is in ``paths`` (then the field is still applied)."""
    return any(p[:len(path)] == path for p in paths)


def apply(live: dict[str, Any] | None, applied: dict[str, Any], *, manager: str, force: bool,
          schema: dict[str, Any] | None, now: str) -> dict[str, Any]:
    api_version = str(applied.get("apiVersion", ""))
    applied_fields = field_set({k: v for k, v in applied.items() if k != "status"}, schema)
    entries = _managers(live)
    conflicts: list[tuple[str, str]] = []
    if live is not None:
        for entry in entries:
            if entry.get("manager") == manager and entry.get("operation") == "Apply":
                continue
            owned = _entry_paths(entry)
            for path, value in applied_fields.items():
                if path not in owned or path[-1] == ".":
                    continue
                found, current = _lookup(live, path)
                if found and current != value:
                    conflicts.append((str(entry.get("manager", "")), _display(path)))
    if conflicts and not force:
        raise ApplyConflict(sorted(set(conflicts)), api_version)
    previous: set[Path] = set()
    for entry in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            previous = _entry_paths(entry)
    new_paths = set(applied_fields)
    result = _merge(copy.deepcopy(live) if live is not None else {}, applied, schema)
    others: set[Path] = set()
    for entry in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            continue
        paths = _entry_paths(entry)
        if force:
            paths -= new_paths
        entry["fieldsV1"] = _to_fields_v1(paths)
        others |= paths
    # Whole list items first (their "." path), then deeper fields before shallower ones.
    for path in sorted(previous - new_paths, key=lambda p: (p[-1] != ".", -len(p))):
        if path in others or _owned_by(path, new_paths):
            continue
        _remove(result, path)
        _prune_empty(result, path)
    kept = [e for e in entries if e.get("fieldsV1") and not (e.get("manager") == manager and
                                                              e.get("operation") == "Apply")]
    own = {"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now,
           "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(new_paths)}
    if live is not None and previous == new_paths:
        old_entry = next((e for e in _managers(live) if e.get("manager") == manager and
                          e.get("operation") == "Apply"), None)
        if old_entry is not None:
            own["time"] = old_entry.get("time", now)
    merged: dict[str, Any] = result
    merged.setdefault("metadata", {})["managedFields"] = [own, *kept]
    return merged


def update_managed_fields(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str, operation: str,
                          schema: dict[str, Any] | None, now: str) -> list[dict[str, Any]]:
    """Ownership after an ordinary write: the writer takes every field it changed."""
    body = {k: v for k, v in new.items() if k != "status"}
    api_version = str(new.get("apiVersion", ""))
    if old is None:  # a create: the writer owns every field
        tree: dict[str, Any] = {}
        _tree({k: v for k, v in body.items() if k not in ("apiVersion", "kind")}, schema, tree)
        metadata = tree.get("f:metadata", {})
        for ignored in IGNORED:
            if len(ignored) == 2:
                metadata.pop(ignored[1], None)
        if not metadata:
            tree.pop("f:metadata", None)
        if not tree:
            return []
        return [{"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
                 "fieldsType": "FieldsV1", "fieldsV1": tree}]
    new_fields = field_set(body, schema)
    old_fields = field_set({k: v for k, v in old.items() if k != "status"}, schema)
    changed = {p for p, v in new_fields.items() if p not in old_fields or old_fields[p] != v}
    entries = _managers(old)
    live = set(new_fields)
    mine: set[Path] = set()
    result = []
    for entry in entries:
        paths = _entry_paths(entry) & live
        if entry.get("manager") == manager and entry.get("operation") == operation:
            mine = paths
            continue
        paths -= changed
        if paths:
            entry["fieldsV1"] = _to_fields_v1(paths)
            result.append(entry)
    mine = (mine | changed) & live
    if mine:
        previous = next((e for e in entries if e.get("manager") == manager and e.get("operation") == operation),
                        None)
        time = now if changed or previous is None else previous.get("time", now)
        result.insert(0, {"manager": manager, "operation": operation, "apiVersion": api_version, "time": time,
                          "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(mine)})
    return result
