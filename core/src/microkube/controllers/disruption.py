"""The disruption controller: PodDisruptionBudget status (how many pods may be disrupted now), which
the eviction subresource checks before it lets a pod go."""

from __future__ import annotations

import math
from typing import Any

from microkube.client import Resource
from microkube.controllers.replicaset import PODS, is_ready
from microkube.timestamps import format_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

PDBS = ResourceRef("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
MANAGER = "disruption-controller"


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or (
                op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _count(value: Any, total: int) -> int:
    """An int-or-percent of ``total``, rounded up as the disruption controller does."""
    if isinstance(value, int):
        return value
    text = str(value)
    return math.ceil(int(text[:-1]) * total / 100) if text.endswith("%") else int(text)


class DisruptionController:
    name = "disruption"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.context = context
        self.budgets = context.cache(PDBS)
        self.pods = context.cache(PODS)
        self.resource = Resource("policy", "v1", "poddisruptionbudgets")
        self.pods.add_handler(self._pod_changed)

    def _pod_changed(self, event: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        namespace = pod["metadata"].get("namespace", "")
        labels = [pod["metadata"].get("labels") or {}]
        if old is not None:
            labels.append(old["metadata"].get("labels") or {})
        for budget in self.budgets.items(namespace):
            if any(_selects((budget.get("spec") or {}).get("selector"), set_) for set_ in labels):
                self.context.enqueue(f"{namespace}/{budget['metadata']['name']}")

    async def reconcile(self, key: str) -> Outcome:
        budget = self.budgets.get(key)
        if budget is None:
            return Outcome.done()
        namespace = budget["metadata"]["namespace"]
        spec = budget.get("spec") or {}
        pods = [p for p in self.pods.items(namespace)
                if _selects(spec.get("selector"), p["metadata"].get("labels") or {})
                and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        expected = len(pods)
        healthy = sum(1 for p in pods if is_ready(p))
        if "minAvailable" in spec:
            desired = _count(spec["minAvailable"], expected)
        else:
            desired = max(0, expected - _count(spec.get("maxUnavailable", 0), expected))
        allowed = max(0, healthy - desired)
        current = budget.get("status") or {}
        previous: dict[str, Any] = next(
            (c for c in current.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
        state = "True" if allowed > 0 else "False"
        condition = {"type": "DisruptionAllowed", "status": state,
                     "reason": "SufficientPods" if allowed > 0 else "InsufficientPods", "message": "",
                     "observedGeneration": budget["metadata"].get("generation", 1),
                     "lastTransitionTime": previous.get("lastTransitionTime") if previous.get("status") == state
                     else format_time(utcnow())}
        status = {"observedGeneration": budget["metadata"].get("generation", 1), "expectedPods": expected,
                  "currentHealthy": healthy, "desiredHealthy": desired, "disruptionsAllowed": allowed,
                  "conditions": [condition]}
        if {k: current.get(k) for k in status if k != "conditions"} == {
                k: v for k, v in status.items() if k != "conditions"} and previous.get("status") == state:
            return Outcome.done()
        try:
            await self.client.patch(self.resource, budget["metadata"]["name"], {"status": status}, namespace,
                                    subresource="status", field_manager=MANAGER)
        except errors.NotFound:
            pass
        return Outcome.done()
