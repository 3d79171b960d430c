"""The resourcequota controller: each ResourceQuota's status says what its namespace uses of what it may use.

``status.hard`` is ``spec.hard`` (canonical quantities) and ``status.used`` holds, for every hard key
that measures a known resource, the sum over that namespace's objects in the quota's scopes (the
evaluators of ``microkube.apiserver.quota``, shared with the admission plugin). Pods, Services,
ConfigMaps, Secrets, PersistentVolumeClaims, ReplicationControllers and ResourceQuotas are watched:
any change queues every quota of the object's namespace. ``count/<resource>.<group>`` of other kinds is
read with a list and looked at again every RECOUNT_SECONDS. Status is written only when it changed.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from microkube.apiserver.quota import (
    ZERO,
    canonical,
    deletion_expiry,
    matches_scopes,
    pod_counts,
    quota_keys,
    resource_of,
    usage,
)
from microkube.client import Resource
from microkube.controllers.endpoints import SERVICES
from microkube.controllers.replicaset import PODS, REPLICATIONCONTROLLERS
from microkube.timestamps import utcnow
from microkube_interfaces import errors
from microkube_interfaces.controllers import Cache, ControllerContext, Outcome, ResourceRef

RESOURCEQUOTAS = ResourceRef("", "v1", "resourcequotas", "ResourceQuota")
CONFIGMAPS = ResourceRef("", "v1", "configmaps", "ConfigMap")
SECRETS = ResourceRef("", "v1", "secrets", "Secret")
PERSISTENTVOLUMECLAIMS = ResourceRef("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
#: Group-resources read from shared caches (their changes queue the quotas of their namespace).
WATCHED = {"pods": PODS, "services": SERVICES, "configmaps": CONFIGMAPS, "secrets": SECRETS,
           "persistentvolumeclaims": PERSISTENTVOLUMECLAIMS, "replicationcontrollers": REPLICATIONCONTROLLERS,
           "resourcequotas": RESOURCEQUOTAS}
#: How often a quota that counts unwatched kinds (``count/deployments.apps``) is counted again.
RECOUNT_SECONDS = 15.0


class ResourceQuotaController:
    name = "resourcequota"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.context = context
        self.caches: dict[str, Cache] = {resource: context.cache(ref) for resource, ref in WATCHED.items()}
        self.quotas = self.caches["resourcequotas"]
        self.resource = Resource("", "v1", "resourcequotas")
        #: API group → its preferred version (discovery), for kinds counted by listing.
        self._versions: dict[str, str] = {}
        for cache in self.caches.values():
            cache.add_handler(self._changed)

    def _changed(self, event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace")
        if not namespace:
            return
        for quota in self.quotas.items(namespace):
            self.context.enqueue(f"{namespace}/{quota['metadata']['name']}")

    async def reconcile(self, key: str) -> Outcome:
        quota = self.quotas.get(key)
        if quota is None:
            return Outcome.done()
        namespace = quota["metadata"].get("namespace", "")
        hard = {str(k): canonical(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
        used, recount_after = await self._used(namespace, quota)
        current = quota.get("status") or {}
        if current.get("hard") != hard or current.get("used") != used:
            body = copy.deepcopy(quota)
            body["status"] = {**current, "hard": hard, "used": used}
            try:
                await self.client.update(self.resource, body, subresource="status")
            except (errors.NotFound, errors.Conflict):
                return Outcome.done()  # gone, or changed meanwhile: its own event queues it again
        return Outcome.done() if recount_after is None else Outcome.after(recount_after)

    async def _used(self, namespace: str, quota: dict[str, Any]) -> tuple[dict[str, str], float | None]:
        """status.used, and when to count again (kinds not watched, pods whose deletion will expire)."""
        by_resource: dict[str, list[str]] = {}
        for key in quota_keys(quota):
            resource = resource_of(key)
            if resource is not None:
                by_resource.setdefault(resource, []).append(key)
        now = utcnow()
        recount: float | None = None
        used: dict[str, str] = {}
        for resource, keys in by_resource.items():
            cache = self.caches.get(resource)
            if cache is not None:
                objects = cache.items(namespace)
            else:
                listed = await self._list(resource, namespace)
                if listed is None:
                    continue  # not a served kind: no usage to report
                objects = listed
                recount = RECOUNT_SECONDS
            totals = dict.fromkeys(keys, ZERO)
            for obj in objects:
                if not matches_scopes(quota, resource, obj):
                    continue
                for name, amount in usage(resource, obj, now).items():
                    if name in totals:
                        totals[name] = totals[name] + amount
                if resource == "pods":
                    recount = _earliest(recount, _expires_in(obj, now))
            used.update({name: str(amount) for name, amount in totals.items()})
        return used, recount

    async def _list(self, resource: str, namespace: str) -> list[dict[str, Any]] | None:
        plural, _, group = resource.partition(".")
        version = "v1" if not group else self._versions.get(group)
        try:
            if version is None:
                found = await self.client.request("GET", f"/apis/{group}")
                version = str(((found or {}).get("preferredVersion") or {}).get("version") or "")
                if not version:
                    return None
                self._versions[group] = version
            listed = await self.client.list(Resource(group, version, plural), namespace)
        except errors.NotFound:
            return None
        items: list[dict[str, Any]] = listed.get("items") or []
        return items


def _expires_in(pod: dict[str, Any], now: datetime) -> float | None:
    """Seconds until a counted pod that is being deleted stops counting (None: not pending)."""
    expiry = deletion_expiry(pod)
    if expiry is None or not pod_counts(pod, now):
        return None
    return max(0.5, (expiry - now).total_seconds() + 0.5)


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


__all__ = ["RESOURCEQUOTAS", "ResourceQuotaController"]
