"""Label and field selectors: parsed once, matched fast."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microkube_interfaces import errors

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[A-Za-z0-9]?(?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # = != in notin exists !
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        present = self.key in labels
        if op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()
    #: A selector that matches nothing (a LabelSelector dict with an unknown operator, or nil-vs-empty cases).
    nothing: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.requirements and not self.nothing

    def matches(self, labels: dict[str, str]) -> bool:
        if self.nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str) -> LabelSelector:
    if not text.strip():
        return LabelSelector()
    requirements = []
    for part in _split_top_level(text):
        if not part.strip():
            raise errors.Invalid(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        if match := _SET.match(part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQ.match(part):
            operator = "!=" if match.group(2) == "!=" else "="
            requirements.append(Requirement(match.group(1), operator, frozenset({match.group(3)})))
        elif match := _EXISTS.match(part):
            requirements.append(Requirement(match.group(2), "!" if match.group(1) else "exists"))
        else:
            raise errors.Invalid(f"unable to parse requirement: {part.strip()!r} in label selector {text!r}; "
                                 "use key=value, key!=value, key in (a,b), key notin (a,b), key or !key")
    return LabelSelector(tuple(requirements))


def label_selector_from_dict(selector: dict[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector; an empty one matches everything, a missing one nothing."""
    if selector is None:
        return LabelSelector(nothing=True)
    requirements = [Requirement(k, "=", frozenset({str(v)})) for k, v in (selector.get("matchLabels") or {}).items()]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        operator = operators.get(expr.get("operator", ""))
        if operator is None:
            return LabelSelector(nothing=True)
        requirements.append(Requirement(expr.get("key", ""), operator, frozenset(expr.get("values") or ())))
    return LabelSelector(tuple(requirements))


# -- field selectors -----------------------------------------------------------------------------

def _path(*parts: str) -> Callable[[dict[str, Any]], str]:
    def get(obj: dict[str, Any]) -> str:
        node: Any = obj
        for part in parts:
            if not isinstance(node, dict):
                return ""
            node = node.get(part)
        if node is None:
            return ""
        if isinstance(node, bool):
            return "true" if node else "false"
        return str(node)
    return get


_COMMON = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace")}
_FIELDS: dict[tuple[str, str], dict[str, Callable[[dict[str, Any]], str]]] = {
    ("", "Pod"): {
        "spec.nodeName": _path("spec", "nodeName"), "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: "true" if (o.get("spec") or {}).get("hostNetwork") else "false",
        "status.phase": _path("status", "phase"), "status.podIP": _path("status", "podIP"),
        "status.podIPs": lambda o: ",".join(p.get("ip", "") for p in (o.get("status") or {}).get("podIPs") or []),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    ("", "Event"): {
        **{f"involvedObject.{f}": _path("involvedObject", f) for f in
           ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _path("reason"), "reportingComponent": _path("reportingComponent"),
        "source": lambda o: (o.get("source") or {}).get("component", "") or o.get("reportingComponent", ""),
        "type": _path("type"),
    },
    ("events.k8s.io", "Event"): {
        **{f"regarding.{f}": _path("regarding", f) for f in
           ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _path("reason"), "reportingController": _path("reportingController"), "type": _path("type"),
    },
    ("", "Secret"): {"type": _path("type")},
    ("", "Namespace"): {"status.phase": _path("status", "phase")},
    ("", "Node"): {"spec.unschedulable": lambda o: "true" if (o.get("spec") or {}).get("unschedulable") else "false"},
    ("batch", "Job"): {"status.successful": _path("status", "succeeded")},
    ("apps", "ReplicaSet"): {"status.replicas": _path("status", "replicas")},
    ("", "ReplicationController"): {"status.replicas": _path("status", "replicas")},
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str
    getter: Callable[[dict[str, Any]], str]

    def matches(self, obj: dict[str, Any]) -> bool:
        return (self.getter(obj) == self.value) == self.equal


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: dict[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def exact(self, field: str) -> str | None:
        """The value ``field`` must equal, when the selector pins it (for indexed lookups)."""
        for requirement in self.requirements:
            if requirement.field == field and requirement.equal:
                return requirement.value
        return None


def supported_fields(group: str, kind: str, extra: tuple[str, ...] = ()) -> dict[str, Callable[[dict[str, Any]], str]]:
    fields = {**_COMMON, **_FIELDS.get((group, kind), {})}
    for path in extra:  # CRD selectableFields: ".spec.color"
        fields[path.lstrip(".")] = _path(*path.lstrip(".").split("."))
    return fields


def parse_field_selector(text: str, group: str, kind: str, extra: tuple[str, ...] = ()) -> FieldSelector:
    if not text.strip():
        return FieldSelector()
    fields = supported_fields(group, kind, extra)
    requirements = []
    for part in text.split(","):
        part = part.strip()
        for operator in ("!=", "==", "="):
            if operator in part:
                name, _, value = part.partition(operator)
                break
        else:
            raise errors.Invalid(f"invalid field selector: {part!r}: expected field=value, field==value or "
                                 "field!=value")
        name, value = name.strip(), value.strip()
        getter = fields.get(name)
        if getter is None:
            raise errors.Invalid(f'field label not supported: {name}')
        requirements.append(FieldRequirement(name, operator != "!=", value, getter))
    return FieldSelector(tuple(requirements))
