"""The node lifecycle controller: node health from heartbeats, condition taints, and taint-based eviction.

Kubernetes 1.32's node-lifecycle-controller and taint-eviction-controller in one level-triggered loop
keyed by node name:

* **Health.** A node is alive while its Lease (``kube-node-lease/<node>``, ``spec.renewTime``) or its
  Ready condition's ``lastHeartbeatTime`` — whichever is newer — is within the grace period
  (``node-monitor-grace-period``, 40 s; a node that never posted a Ready condition gets
  ``node-startup-grace-period``, 60 s, from its creationTimestamp). Past it, Ready, MemoryPressure,
  DiskPressure and PIDPressure become ``Unknown`` (reason ``NodeStatusUnknown``, or
  ``NodeStatusNeverUpdated`` for conditions the kubelet never posted) through ``nodes/status``.
* **Taints.** TaintNodesByCondition: Ready False → ``not-ready:NoSchedule``, Unknown →
  ``unreachable:NoSchedule``, pressure conditions True → their ``*-pressure:NoSchedule``, NetworkUnavailable
  → ``network-unavailable:NoSchedule``, ``spec.unschedulable`` → ``unschedulable:NoSchedule``. Taint-based
  eviction: Ready False → ``not-ready:NoExecute``, Unknown → ``unreachable:NoExecute`` (with ``timeAdded``),
  Ready True → neither. A node that becomes not ready gets a ``NodeNotReady`` Event and its pods are
  marked not Ready.
* **Eviction.** Every pod bound to a node with NoExecute taints is deleted at once when it does not
  tolerate one of them, when the shortest ``tolerationSeconds`` of the tolerations used has passed since
  the taint's ``timeAdded``, or never when every taint is tolerated forever. Before deleting, the pod gets
  the ``DisruptionTarget`` condition and a ``TaintManagerEviction`` Event.

Not modelled: zone disruption states (Kubernetes stops evicting when a whole zone is down) and eviction
rate limiting.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from microkube.client import STRATEGIC_MERGE_PATCH, Resource
from microkube.controllers.daemonset import NODES
from microkube.controllers.replicaset import PODS, is_ready
from microkube.nodematch import tolerates
from microkube.timestamps import format_time, parse_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, Outcome, Reconciler, ResourceRef

log = logging.getLogger(__name__)

LEASES = ResourceRef("coordination.k8s.io", "v1", "leases", "Lease")
LEASE_NAMESPACE = "kube-node-lease"

NODE_MONITOR_GRACE_PERIOD = 40.0
NODE_STARTUP_GRACE_PERIOD = 60.0

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"

#: TaintNodesByCondition: (condition type, status) → the NoSchedule taint key it brings.
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
#: The NoSchedule taint keys this controller owns (any other NoSchedule taint is left alone).
MANAGED_NO_SCHEDULE = {*CONDITION_TAINTS.values(), UNSCHEDULABLE}
#: The NoExecute taint keys this controller owns.
MANAGED_NO_EXECUTE = {NOT_READY, UNREACHABLE}
#: The conditions a silent node's are set Unknown.
HEALTH_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NEVER_REASON = "NodeStatusNeverUpdated"
NEVER_MESSAGE = "Kubelet never posted node status."

Object = dict[str, Any]


def condition(obj: Object, kind: str) -> Object | None:
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return None


def last_heartbeat(node: Object, lease: Object | None) -> tuple[datetime | None, bool]:
    """The newest sign of life (the Lease's renewTime or the Ready condition's lastHeartbeatTime) and
    whether the kubelet ever posted a Ready condition; without either, the node's creationTimestamp."""
    ready = condition(node, "Ready")
    times = [t for t in (parse_time(((lease or {}).get("spec") or {}).get("renewTime")),
                         parse_time((ready or {}).get("lastHeartbeatTime"))) if t is not None]
    if ready is None:
        created = parse_time((node.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            times.append(created)
    return (max(times) if times else None), ready is not None


def desired_taints(node: Object, now: datetime) -> list[Object]:
    """The node's taints with this controller's own ones made to match its conditions and spec."""
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    spec = node.get("spec") or {}
    current = list(spec.get("taints") or [])
    no_schedule = {key for (kind, status), key in CONDITION_TAINTS.items() if conditions.get(kind) == status}
    if spec.get("unschedulable"):
        no_schedule.add(UNSCHEDULABLE)
    ready = conditions.get("Ready")
    if ready is None:  # never reported: the NoExecute taints are left as they are
        no_execute = {t.get("key") for t in current if t.get("effect") == NO_EXECUTE} & MANAGED_NO_EXECUTE
    else:
        no_execute = {NOT_READY} if ready == "False" else {UNREACHABLE} if ready == "Unknown" else set()
    taints: list[Object] = []
    for taint in current:
        key, effect = taint.get("key"), taint.get("effect")
        if effect == NO_SCHEDULE and key in MANAGED_NO_SCHEDULE:
            if key in no_schedule:
                no_schedule.discard(key)
                taints.append(taint)
        elif effect == NO_EXECUTE and key in MANAGED_NO_EXECUTE:
            if key in no_execute:
                no_execute.discard(key)
                taints.append(taint)
        else:
            taints.append(taint)
    taints += [{"key": key, "effect": NO_SCHEDULE} for key in sorted(no_schedule)]
    taints += [{"key": key, "effect": NO_EXECUTE, "timeAdded": format_time(now)} for key in sorted(no_execute)]
    return taints


def _taint_id(taint: Object) -> tuple[str, str, str]:
    return str(taint.get("key") or ""), str(taint.get("value") or ""), str(taint.get("effect") or "")


def eviction_time(pod: Object, taints: list[tuple[Object, datetime]]) -> datetime | None:
    """When a pod on a node with these NoExecute taints (each with the moment it was added) must go:
    at once for an untolerated taint, ``tolerationSeconds`` after the taint was added, None for never."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    deadline: datetime | None = None
    for taint, added in taints:
        used = next((t for t in tolerations if tolerates(t, taint)), None)
        if used is None:
            return datetime.min.replace(tzinfo=added.tzinfo)
        seconds = used.get("tolerationSeconds")
        if seconds is None:
            continue  # tolerated forever
        at = added + timedelta(seconds=max(0, int(seconds)))
        deadline = at if deadline is None else min(deadline, at)
    return deadline


class NodeLifecycleController:
    name = "nodelifecycle"

    def __init__(self, context: ControllerContext, *, grace_period: float = NODE_MONITOR_GRACE_PERIOD,
                 startup_grace_period: float = NODE_STARTUP_GRACE_PERIOD) -> None:
        self.client = context.client
        self.context = context
        self.grace_period = grace_period
        self.startup_grace_period = startup_grace_period
        self.nodes = context.cache(NODES)
        self.leases = context.cache(LEASES)
        self.pods = context.cache(PODS)
        self.nodes_resource = Resource("", "v1", "nodes", namespaced=False)
        self.pods_resource = Resource("", "v1", "pods")
        self.leases_resource = Resource(LEASES.group, LEASES.version, LEASES.plural)
        #: node name → keys of the pods bound to it (kept by the pod handler).
        self.pods_by_node: dict[str, set[str]] = {}
        #: When this controller first saw a NoExecute taint that carries no timeAdded.
        self.first_seen: dict[tuple[str, tuple[str, str, str]], datetime] = {}
        self.leases.add_handler(self._lease_changed)
        self.pods.add_handler(self._pod_changed)

    # -- handlers --------------------------------------------------------------------------------

    def _lease_changed(self, event: str, lease: Object, old: Object | None) -> None:
        meta = lease.get("metadata") or {}
        if meta.get("namespace") == LEASE_NAMESPACE and meta.get("name") and self._troubled(str(meta["name"])):
            self.context.enqueue(str(meta["name"]))  # a renewal may bring a lost node back

    def _pod_changed(self, event: str, pod: Object, old: Object | None) -> None:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        before = ((old or {}).get("spec") or {}).get("nodeName") or ""
        after = (pod.get("spec") or {}).get("nodeName") or ""
        if before and (before != after or event == "DELETED"):
            keys = self.pods_by_node.get(before)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.pods_by_node[before]
        if after:
            if event == "DELETED":
                keys = self.pods_by_node.get(after)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self.pods_by_node[after]
            else:
                self.pods_by_node.setdefault(after, set()).add(key)
            if self._troubled(after):
                self.context.enqueue(after)  # pods matter only on nodes that are not ready or tainted

    def _troubled(self, node_name: str) -> bool:
        """Whether events about this node's Lease or pods need a look now. A healthy node is looked at
        again when its grace period would run out (its reconcile asks for that), so at 5,000 nodes the
        500 Lease renewals a second cost nothing here."""
        node = self.nodes.get(node_name)
        if node is None:
            return False
        ready = condition(node, "Ready")
        return ready is None or ready.get("status") != "True" or any(
            t.get("effect") == NO_EXECUTE for t in (node.get("spec") or {}).get("taints") or [])

    # -- reconcile -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Outcome:
        node = self.nodes.get(key)
        if node is None:
            self.first_seen = {k: v for k, v in self.first_seen.items() if k[0] != key}
            return Outcome.done()
        now = utcnow()
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{key}")
        try:
            node, recheck = await self._monitor_health(node, lease, now)
            node, became_not_ready = await self._taint(node, now)
        except errors.Conflict as exc:  # the informer brings the newer node, and its event this key again
            return Outcome.retry(exc)
        except errors.NotFound:
            return Outcome.done()
        ready = condition(node, "Ready")
        if became_not_ready and ready is not None:
            await self.context.record_event({**node, "apiVersion": "v1", "kind": "Node"}, "Normal", "NodeNotReady",
                                            f"Node {key} status is now: NodeNotReady")
        pods = [p for k in sorted(self.pods_by_node.get(key, ())) if (p := self.pods.get(k)) is not None
                and (p.get("spec") or {}).get("nodeName") == key]
        if ready is not None and ready.get("status") != "True":
            await self._mark_pods_not_ready(pods)
        evict_in = await self._evict(key, node, pods, now)
        waits = [w for w in (recheck, evict_in) if w is not None]
        return Outcome.after(min(waits)) if waits else Outcome.done()

    def _fresh_for(self, node: Object, lease: Object | None, now: datetime) -> tuple[float | None, float]:
        """How long the node's last sign of life stays within its grace period (None: it is past it),
        and that grace period."""
        heartbeat, reported = last_heartbeat(node, lease)
        grace = self.grace_period if reported else self.startup_grace_period
        if heartbeat is None:
            return None, grace
        remaining = (heartbeat - now).total_seconds() + grace
        return (min(remaining, grace) if remaining > 0 else None), grace

    async def _monitor_health(self, node: Object, lease: Object | None, now: datetime) -> tuple[Object, float]:
        """Mark a silent node's conditions Unknown; returns the node and when to look again."""
        remaining, grace = self._fresh_for(node, lease, now)
        if remaining is not None:
            return node, remaining + 0.05
        updated = copy.deepcopy(node)
        conditions: list[Object] = updated.setdefault("status", {}).setdefault("conditions", [])
        created = (node.get("metadata") or {}).get("creationTimestamp") or format_time(now)
        changed = False
        for kind in HEALTH_CONDITIONS:
            entry = next((c for c in conditions if c.get("type") == kind), None)
            if entry is None:
                conditions.append({"type": kind, "status": "Unknown", "reason": NEVER_REASON,
                                   "message": NEVER_MESSAGE, "lastHeartbeatTime": created,
                                   "lastTransitionTime": format_time(now)})
                changed = True
            elif entry.get("status") != "Unknown":
                entry.update(status="Unknown", reason=UNKNOWN_REASON, message=UNKNOWN_MESSAGE,
                             lastTransitionTime=format_time(now))
                changed = True
        if not changed:
            return node, grace
        # Silent by the cache: read the Lease itself before declaring the node lost.
        try:
            lease = await self.client.get(self.leases_resource, node["metadata"]["name"], LEASE_NAMESPACE)
        except errors.NotFound:
            lease = None
        remaining, grace = self._fresh_for(node, lease, now)
        if remaining is not None:
            return node, remaining + 0.05
        log.info("node %s stopped posting status; marking it Unknown", node["metadata"]["name"])
        node = await self.client.update(self.nodes_resource, updated, subresource="status")
        return node, grace

    async def _taint(self, node: Object, now: datetime) -> tuple[Object, bool]:
        """Make the node's condition taints match; returns the node and whether it just became not ready."""
        current = (node.get("spec") or {}).get("taints") or []
        taints = desired_taints(node, now)
        if sorted(map(_taint_id, taints)) == sorted(map(_taint_id, current)):
            return node, False
        had = any(t.get("effect") == NO_EXECUTE and t.get("key") in MANAGED_NO_EXECUTE for t in current)
        has = any(t.get("effect") == NO_EXECUTE and t.get("key") in MANAGED_NO_EXECUTE for t in taints)
        updated = copy.deepcopy(node)
        updated.setdefault("spec", {})["taints"] = taints
        node = await self.client.update(self.nodes_resource, updated)
        return node, has and not had

    async def _mark_pods_not_ready(self, pods: list[Object]) -> None:
        """Pods on a node that is not ready are not Ready either (so Services stop sending them traffic)."""
        for pod in pods:
            if not is_ready(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            meta = pod["metadata"]
            ready = {"type": "Ready", "status": "False", "lastTransitionTime": format_time(utcnow())}
            try:
                await self.client.patch(self.pods_resource, meta["name"], {"status": {"conditions": [ready]}},
                                        meta["namespace"], content_type=STRATEGIC_MERGE_PATCH, subresource="status")
            except errors.NotFound:
                continue

    def _added(self, node_name: str, taint: Object, now: datetime) -> datetime:
        added = parse_time(taint.get("timeAdded"))
        if added is not None:
            return added
        return self.first_seen.setdefault((node_name, _taint_id(taint)), now)

    async def _evict(self, node_name: str, node: Object, pods: list[Object], now: datetime) -> float | None:
        """Delete the pods whose tolerations ran out; returns when the next one is due, if any."""
        no_execute = [(t, self._added(node_name, t, now)) for t in (node.get("spec") or {}).get("taints") or []
                      if t.get("effect") == NO_EXECUTE]
        live = {_taint_id(t) for t, _ in no_execute}
        self.first_seen = {k: v for k, v in self.first_seen.items() if k[0] != node_name or k[1] in live}
        if not no_execute:
            return None
        next_due: float | None = None
        for pod in pods:
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            due = eviction_time(pod, no_execute)
            if due is None:
                continue
            wait = (due - now).total_seconds()
            if wait > 0:
                next_due = wait if next_due is None else min(next_due, wait)
                continue
            await self._delete(pod)
        return None if next_due is None else next_due + 0.05

    async def _delete(self, pod: Object) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        log.info("taint eviction: deleting pod %s/%s from node %s", namespace, name, pod["spec"].get("nodeName"))
        target = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                  "message": "Taint manager: deleting due to NoExecute taint",
                  "lastTransitionTime": format_time(utcnow())}
        try:
            await self.client.patch(self.pods_resource, name, {"status": {"conditions": [target]}}, namespace,
                                    content_type=STRATEGIC_MERGE_PATCH, subresource="status")
        except errors.NotFound:
            return
        except errors.MicrokubeError as exc:  # the condition is informative; the eviction goes ahead
            log.debug("DisruptionTarget on %s/%s: %s", namespace, name, exc)
        await self.context.record_event({**pod, "apiVersion": "v1", "kind": "Pod"}, "Normal", "TaintManagerEviction",
                                        f"Marking for deletion Pod {namespace}/{name}")
        try:
            await self.client.delete(self.pods_resource, name, namespace,
                                     preconditions={"uid": str(meta.get("uid", ""))} if meta.get("uid") else None)
        except (errors.NotFound, errors.Conflict):
            pass


def node_lifecycle_controller(options: dict[str, Any]) -> Callable[[ControllerContext], Reconciler]:
    """The controller's factory, with the grace periods from the server's options (seconds), if set."""
    grace = float(options.get("node_monitor_grace_period", NODE_MONITOR_GRACE_PERIOD))
    startup = float(options.get("node_startup_grace_period", NODE_STARTUP_GRACE_PERIOD))

    def build(context: ControllerContext) -> Reconciler:
        return NodeLifecycleController(context, grace_period=grace, startup_grace_period=startup)

    return build


__all__ = ["LEASES", "NodeLifecycleController", "desired_taints", "eviction_time", "last_heartbeat",
           "node_lifecycle_controller"]
