"""The Deployment controller: revisions as ReplicaSets, RollingUpdate and Recreate, status and conditions.

Each distinct pod template gets a ReplicaSet named ``<deployment>-<pod-template-hash>``; the hash label
keeps the sets' pods apart. Reconcile is level-triggered: from the current sets and their status it
computes the next step of the rollout within maxSurge/maxUnavailable, writes it, and updates the
Deployment's status and conditions (what ``kubectl rollout status`` waits on). ``kubectl rollout undo``
works client-side by restoring an old template, which simply makes that revision the new one again.
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

import orjson

from microkube.client import Resource
from microkube.controllers.manager import CONTROLLER_UID
from microkube.controllers.replicaset import REPLICASETS
from microkube.timestamps import format_time, parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, ResourceRef

DEPLOYMENTS = ResourceRef("apps", "v1", "deployments", "Deployment")
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MANAGER = "deployment-controller"


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """A stable, label-safe hash of a pod template (without its own hash label)."""
    clean = copy.deepcopy(template)
    (clean.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    digest = hashlib.sha256(orjson.dumps(clean, option=orjson.OPT_SORT_KEYS) + str(collisions).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        number, index = divmod(number, len(SAFE_ALPHABET))
        out.append(SAFE_ALPHABET[index])
    return "".join(out)


def resolve(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent (maxSurge / maxUnavailable) as a pod count."""
    if isinstance(value, int):
        return value
    text = str(value or "0")
    if text.endswith("%"):
        fraction = int(text[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _same_template(rs: dict[str, Any], template: dict[str, Any]) -> bool:
    mine = copy.deepcopy(((rs.get("spec") or {}).get("template")) or {})
    (mine.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    theirs = copy.deepcopy(template)
    (theirs.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    for side in (mine, theirs):
        if not (side.get("metadata") or {}).get("labels"):
            (side.get("metadata") or {}).pop("labels", None)
        side.setdefault("metadata", {}).pop("creationTimestamp", None)
    return mine == theirs


class DeploymentController:
    name = "deployment"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.context = context
        self.deployments = context.cache(DEPLOYMENTS)
        self.sets = context.cache(REPLICASETS)
        self.rs_resource = Resource("apps", "v1", "replicasets")
        self.resource = Resource("apps", "v1", "deployments")

    async def reconcile(self, key: str) -> Outcome:
        deployment = self.deployments.get(key)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return Outcome.done()
        spec = deployment.get("spec") or {}
        owned = self.sets.by_index(CONTROLLER_UID, deployment["metadata"]["uid"])
        template = spec.get("template") or {}
        new = next((rs for rs in owned if _same_template(rs, template)), None)
        old = [rs for rs in owned if rs is not new]
        if spec.get("paused"):
            await self._write_status(deployment, new, old)
            return Outcome.done()
        if new is None:
            new = await self._create_new(deployment, owned)
            if new is None:
                return Outcome.after(0.5)
        else:
            newest_old = max((_revision(rs) for rs in old), default=0)
            if _revision(new) <= newest_old:  # a rollback made an old revision current again
                await self._set_revision(new, newest_old + 1)
        replicas = int(spec.get("replicas", 1))
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            await self._recreate(deployment, new, old, replicas)
        else:
            await self._rolling(deployment, new, old, replicas)
        await self._cleanup(deployment, old)
        deadline_in = await self._write_status(deployment, new, old)
        return Outcome.after(deadline_in) if deadline_in is not None else Outcome.done()

    # -- revisions -------------------------------------------------------------------------------

    async def _create_new(self, deployment: dict[str, Any], owned: list[dict[str, Any]]) -> dict[str, Any] | None:
        meta = deployment["metadata"]
        spec = deployment.get("spec") or {}
        collisions = int((deployment.get("status") or {}).get("collisionCount", 0))
        pod_hash = template_hash(spec.get("template") or {}, collisions)
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        revision = max((_revision(rs) for rs in owned), default=0) + 1
        replicas = int(spec.get("replicas", 1))
        is_first = not owned
        name = f"{meta['name']}-{pod_hash}"
        rs: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": name, "namespace": meta["namespace"],
                           "labels": {**(template["metadata"].get("labels") or {})},
                           "annotations": {REVISION: str(revision), DESIRED: str(replicas),
                                           MAX_REPLICAS: str(replicas + self._surge(deployment))},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                "uid": meta["uid"], "controller": True,
                                                "blockOwnerDeletion": True}]},
              # The first revision starts at full size; later ones grow as the rollout allows.
              "spec": {"replicas": replicas if is_first else 0,
                       "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                       "selector": selector, "template": template}}
        try:
            created: dict[str, Any] = await self.client.create(self.rs_resource, rs, meta["namespace"],
                                                               field_manager=MANAGER)
            return created
        except errors.AlreadyExists:
            existing: dict[str, Any] = await self.client.get(self.rs_resource, name, meta["namespace"])
            if _same_template(existing, spec.get("template") or {}):
                return existing
            await self.client.patch(self.resource, meta["name"], {"status": {"collisionCount": collisions + 1}},
                                    meta["namespace"], subresource="status", field_manager=MANAGER)
            return None

    async def _set_revision(self, rs: dict[str, Any], revision: int) -> None:
        await self.client.patch(self.rs_resource, rs["metadata"]["name"],
                                {"metadata": {"annotations": {REVISION: str(revision)}}},
                                rs["metadata"]["namespace"], field_manager=MANAGER)

    def _surge(self, deployment: dict[str, Any]) -> int:
        spec = deployment.get("spec") or {}
        rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
        return resolve(rolling.get("maxSurge", "25%"), int(spec.get("replicas", 1)), round_up=True)

    async def _scale(self, rs: dict[str, Any], replicas: int, deployment: dict[str, Any]) -> None:
        before = int((rs.get("spec") or {}).get("replicas", 0))
        if before == replicas:
            return
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        await self.client.patch(self.rs_resource, rs["metadata"]["name"],
                                {"metadata": {"annotations": {DESIRED: str(desired)}},
                                 "spec": {"replicas": replicas}},
                                rs["metadata"]["namespace"], field_manager=MANAGER)
        rs.setdefault("spec", {})["replicas"] = replicas
        direction = "up" if replicas > before else "down"
        await self.context.record_event(deployment, "Normal", "ScalingReplicaSet",
                                        f"Scaled {direction} replica set {rs['metadata']['name']} from {before} "
                                        f"to {replicas}")

    # -- strategies ------------------------------------------------------------------------------

    async def _recreate(self, deployment: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]],
                        replicas: int) -> None:
        for rs in old:
            await self._scale(rs, 0, deployment)
        if all(int((rs.get("status") or {}).get("replicas", 0)) == 0 for rs in old):
            await self._scale(new, replicas, deployment)

    async def _rolling(self, deployment: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]],
                       replicas: int) -> None:
        spec = deployment.get("spec") or {}
        rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
        surge = resolve(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_replicas = int((new.get("spec") or {}).get("replicas", 0))
        if not old:  # nothing to replace: just follow spec.replicas (scaling)
            await self._scale(new, replicas, deployment)
            return
        total = new_replicas + sum(int((rs.get("spec") or {}).get("replicas", 0)) for rs in old)
        if new_replicas < replicas:
            room = replicas + surge - total
            if room > 0:
                await self._scale(new, min(replicas, new_replicas + room), deployment)
        elif new_replicas > replicas:
            await self._scale(new, replicas, deployment)
        available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in [new, *old])
        can_remove = available - (replicas - unavailable)
        for rs in sorted(old, key=_revision):
            if can_remove <= 0:
                break
            current = int((rs.get("spec") or {}).get("replicas", 0))
            if current == 0:
                continue
            cut = min(current, can_remove)
            await self._scale(rs, current - cut, deployment)
            can_remove -= cut

    async def _cleanup(self, deployment: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = sorted((rs for rs in old if int((rs.get("spec") or {}).get("replicas", 0)) == 0
                       and int((rs.get("status") or {}).get("replicas", 0)) == 0), key=_revision)
        for rs in idle[:max(0, len(idle) - limit)]:
            try:
                await self.client.delete(self.rs_resource, rs["metadata"]["name"], rs["metadata"]["namespace"])
            except errors.NotFound:
                continue

    # -- status ----------------------------------------------------------------------------------

    async def _write_status(self, deployment: dict[str, Any], new: dict[str, Any] | None,
                            old: list[dict[str, Any]]) -> float | None:
        """Write the status; returns the seconds left before the progress deadline, if it is running."""
        spec = deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        sets = [rs for rs in [new, *old] if rs is not None]

        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in sets)

        updated = int(((new or {}).get("status") or {}).get("replicas", 0))
        available = total("availableReplicas")
        rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
        max_unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False) \
            if (spec.get("strategy") or {}).get("type") != "Recreate" else 0
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": total("replicas"), "updatedReplicas": updated, "readyReplicas": total("readyReplicas"),
            "availableReplicas": available,
        }
        unavailable = max(0, status["replicas"] - available)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        current = deployment.get("status") or {}
        if current.get("collisionCount"):
            status["collisionCount"] = current["collisionCount"]
        conditions = {c.get("type"): c for c in current.get("conditions") or []}
        now = format_time(utcnow())

        def condition(kind: str, value: bool, reason: str, message: str, progressed: bool = False) -> None:
            previous = conditions.get(kind) or {}
            state = "True" if value else "False"
            changed = previous.get("status") != state
            conditions[kind] = {"type": kind, "status": state, "reason": reason, "message": message,
                                "lastUpdateTime": now if changed or progressed or previous.get("reason") != reason
                                or previous.get("message") != message else previous.get("lastUpdateTime", now),
                                "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now)}

        minimum = available >= replicas - max_unavailable
        condition("Available", minimum, "MinimumReplicasAvailable" if minimum else "MinimumReplicasUnavailable",
                  "Deployment has minimum availability." if minimum else
                  "Deployment does not have minimum availability.")
        name = (new or {}).get("metadata", {}).get("name", "")
        complete = new is not None and updated == replicas and status["replicas"] == replicas and available >= replicas
        deadline_in: float | None = None
        if spec.get("paused"):
            condition("Progressing", True, "DeploymentPaused", "Deployment is paused")
        elif complete:
            condition("Progressing", True, "NewReplicaSetAvailable",
                      f'ReplicaSet "{name}" has successfully progressed.')
        else:
            deadline_in = self._progress(spec, current, status, conditions.get("Progressing"), name, condition)
        status["conditions"] = [conditions[k] for k in ("Available", "Progressing")]
        comparable = {k: v for k, v in current.items() if k != "conditions"}
        wanted = {k: v for k, v in status.items() if k != "conditions"}
        if comparable == wanted and [(c["type"], c["status"], c["reason"], c.get("lastUpdateTime"))
                                     for c in current.get("conditions") or []] \
                == [(c["type"], c["status"], c["reason"], c.get("lastUpdateTime")) for c in status["conditions"]]:
            return deadline_in
        revision = str(_revision(new)) if new is not None else None
        try:
            if revision and (deployment["metadata"].get("annotations") or {}).get(REVISION) != revision:
                await self.client.patch(self.resource, deployment["metadata"]["name"],
                                        {"metadata": {"annotations": {REVISION: revision}}},
                                        deployment["metadata"]["namespace"], field_manager=MANAGER)
            await self.client.patch(self.resource, deployment["metadata"]["name"], {"status": status},
                                    deployment["metadata"]["namespace"], subresource="status",
                                    field_manager=MANAGER)
        except errors.NotFound:
            return None
        return deadline_in

    @staticmethod
    def _progress(spec: dict[str, Any], current: dict[str, Any], status: dict[str, Any],
                  previous: dict[str, Any] | None, name: str, condition: Any) -> float | None:
        """Kubernetes' progress deadline: a rollout that makes no progress (no more updated, ready or
        available replicas, no fewer old ones) for progressDeadlineSeconds (600 by default) gets
        Progressing=False, ProgressDeadlineExceeded — what makes `kubectl rollout status` fail."""
        message = f'ReplicaSet "{name}" is progressing.'
        deadline = int(spec.get("progressDeadlineSeconds", 600))
        progressed = (
            status["updatedReplicas"] > int(current.get("updatedReplicas", 0))
            or status["readyReplicas"] > int(current.get("readyReplicas", 0))
            or status["availableReplicas"] > int(current.get("availableReplicas", 0))
            or status["replicas"] < int(current.get("replicas", 0))
        )
        if previous is None or progressed or previous.get("reason") not in ("ReplicaSetUpdated",
                                                                             "ProgressDeadlineExceeded") \
                or f'"{name}"' not in str(previous.get("message", "")):
            condition("Progressing", True, "ReplicaSetUpdated", message, progressed=True)
            return float(deadline)
        timed_out = f'ReplicaSet "{name}" has timed out progressing.'
        if previous.get("reason") == "ProgressDeadlineExceeded":
            condition("Progressing", False, "ProgressDeadlineExceeded", timed_out)
            return None
        since = parse_time(previous.get("lastUpdateTime"))
        left = deadline - (utcnow() - since).total_seconds() if since is not None else float(deadline)
        if left <= 0:
            condition("Progressing", False, "ProgressDeadlineExceeded", timed_out)
            return None
        condition("Progressing", True, "ReplicaSetUpdated", message)
        return left + 0.05
