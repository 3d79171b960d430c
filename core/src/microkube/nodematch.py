"""Whether a pod may run on a node by its labels and taints: nodeSelector, required node affinity and
taint tolerations. Shared by the DaemonSet controller and (later) the scheduler's filters."""

from __future__ import annotations

from typing import Any

SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")


def _expression(expr: dict[str, Any], value: str | None) -> bool:
    operator = expr.get("operator")
    values = expr.get("values") or []
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and values:
        try:
            number, bound = int(value), int(values[0])
        except ValueError:
            return False
        return number > bound if operator == "Gt" else number < bound
    return False


def _term(term: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not term.get("matchExpressions") and not term.get("matchFields"):
        return False  # an empty term matches nothing
    for expr in term.get("matchExpressions") or []:
        if not _expression(expr, labels.get(expr.get("key", ""))):
            return False
    for expr in term.get("matchFields") or []:
        field = node["metadata"].get("name") if expr.get("key") == "metadata.name" else None
        if not _expression(expr, field):
            return False
    return True


def matches_node_selector(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution node affinity."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    terms = required.get("nodeSelectorTerms")
    return not terms or any(_term(term, node) for term in terms)


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taints(pod_spec: dict[str, Any], node: dict[str, Any],
                       effects: tuple[str, ...] = SCHEDULING_EFFECTS) -> list[dict[str, Any]]:
    tolerations = pod_spec.get("tolerations") or []
    return [taint for taint in (node.get("spec") or {}).get("taints") or []
            if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations)]
