"""CustomResourceDefinitions: a new kind is served as soon as its CRD is stored.

A listener on the CRD cache registers every served version in the resource catalog synchronously
with the event, so the request that wrote the CRD can wait for the cache and return with the kind
already served; then the CRD's status gets NamesAccepted and Established. The module is also a
built-in plugin: its admission plugin refuses CRDs whose schemas are not structural.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from microkube.apiserver import printers, schemas
from microkube.apiserver.objects import WriteOptions, now_rfc3339
from microkube.apiserver.watchcache import CacheEvent
from microkube_interfaces import errors
from microkube_interfaces.admission import AdmissionPlugin, AdmissionRequest
from microkube_interfaces.auth import UserInfo
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl
from microkube_interfaces.resources import Object, PrinterColumn, ResourceType

if TYPE_CHECKING:
    from microkube.apiserver.server import APIServer

log = logging.getLogger(__name__)

CRD_GROUP = "apiextensions.k8s.io"
CRD_PREFIX = f"/registry/customresourcedefinitions.{CRD_GROUP}/"
CONTROLLER_USER = UserInfo("system:apiextensions-controller", groups=("system:masters",))


def apply_schema_defaults(obj: Any, schema: dict[str, Any] | None) -> None:
    """Fill structural-schema ``default`` values into ``obj`` in place, as the API server does for CRs."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in obj and isinstance(prop, dict) and "default" in prop:
                obj[name] = copy.deepcopy(prop["default"])
            if name in obj:
                apply_schema_defaults(obj[name], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in obj.items():
                if name not in (schema.get("properties") or {}):
                    apply_schema_defaults(value, extra)
    elif isinstance(obj, list):
        for item in obj:
            apply_schema_defaults(item, schema.get("items"))


class CustomStrategy:
    """Defaulting, validation and printing of one custom resource version, from its CRD."""

    def __init__(self, kind: str, schema: dict[str, Any] | None, columns: list[dict[str, Any]]) -> None:
        self.kind = kind
        self.schema = schema
        self.columns = columns

    def default(self, obj: Object) -> None:
        apply_schema_defaults(obj, self.schema)

    def validate(self, obj: Object, old: Object | None) -> None:
        meta = obj.get("metadata") or {}
        causes = []
        if not meta.get("name"):
            causes.append(errors.FieldError("metadata.name", "Required value", "FieldValueRequired"))
        if self.schema is not None:
            causes.extend(schemas.validate_custom(obj, self.schema))
        if causes:
            raise errors.Invalid(f"{self.kind} is invalid", causes)

    def table_cells(self, obj: Object) -> list[Any]:
        name = (obj.get("metadata") or {}).get("name", "")
        if not self.columns:
            return [name, printers.age(obj)]
        return [name, *printers.custom_columns(self.columns, obj)]


def resource_types(crd: dict[str, Any]) -> list[tuple[ResourceType, CustomStrategy]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        subs = tuple(s for s in ("status", "scale") if s in subresources)
        schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or None
        raw_columns = list(version.get("additionalPrinterColumns") or [])
        name_column = PrinterColumn("Name", "string", ".metadata.name", "Name must be unique within a namespace.",
                                    "name")
        columns = (name_column, *(
            PrinterColumn(c.get("name", ""), c.get("type", "string"), c.get("jsonPath", ""),
                          c.get("description", ""), c.get("format", ""), int(c.get("priority", 0)))
            for c in raw_columns)) if raw_columns else (
            name_column, PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."))
        scale = subresources.get("scale") or {}
        resource = ResourceType(
            group=spec.get("group", ""), version=version.get("name", ""), kind=names.get("kind", ""),
            plural=names.get("plural", ""), singular=names.get("singular") or names.get("kind", "").lower(),
            namespaced=spec.get("scope") == "Namespaced", short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()), subresources=subs, schema=schema,
            printer_columns=columns, scale_paths=dict(scale), has_status="status" in subs,
        )
        out.append((resource, CustomStrategy(names.get("kind", ""), schema, raw_columns)))
    return out


class CustomResources:
    """Keeps the catalog in step with the stored CRDs."""

    def __init__(self, server: APIServer) -> None:
        self.server = server
        self._served: dict[str, list[tuple[str, str, str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        cache = self.server.cache.cache_for(CRD_PREFIX)
        for entry in list(cache.entries.values()):
            self._sync(entry.name, entry.obj())
        cache.listeners.append(self._on_event)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_event(self, event: CacheEvent) -> None:
        name = event.entry.name
        if event.type == "DELETED":
            self._unserve(name)
            self._spawn(self._delete_instances(event.object()))
        else:
            self._sync(name, event.object())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unserve(self, name: str) -> None:
        for group, version, plural in self._served.pop(name, []):
            self.server.catalog.remove(group, version, plural)

    def _sync(self, name: str, crd: dict[str, Any]) -> None:
        wanted = resource_types(crd)
        current = self._served.get(name, [])
        self._unserve(name)
        registered = []
        for resource, strategy in wanted:
            try:
                self.server.catalog.add(resource, strategy, custom=True)
            except errors.AlreadyExists:
                log.warning("CRD %s: %s is already served; not serving it twice", name, resource.group_resource)
                continue
            registered.append((resource.group, resource.version, resource.plural))
        self._served[name] = registered
        if registered != current or not self._established(crd):
            try:
                self._spawn(self._mark_established(name))
            except RuntimeError:
                pass  # no running loop: called during start-up before serving; status is set on the next event

    @staticmethod
    def _established(crd: dict[str, Any]) -> bool:
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    async def _mark_established(self, name: str) -> None:
        served = self.server.catalog.get(CRD_GROUP, "v1", "customresourcedefinitions")
        if served is None:
            return
        now = now_rfc3339()

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            spec = current.get("spec") or {}
            status = current.setdefault("status", {})
            status["acceptedNames"] = copy.deepcopy(spec.get("names") or {})
            stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
            status["storedVersions"] = sorted(set(status.get("storedVersions") or []) | set(stored))
            conditions = {c.get("type"): c for c in status.get("conditions") or []}
            for ctype, reason, message in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ):
                if conditions.get(ctype, {}).get("status") != "True":
                    conditions[ctype] = {"type": ctype, "status": "True", "lastTransitionTime": now,
                                         "reason": reason, "message": message}
            status["conditions"] = list(conditions.values())
            return current

        try:
            await self.server.objects._update_loop(served, "", name, produce, WriteOptions(user=CONTROLLER_USER),
                                                   "status", "")
        except Exception as exc:  # the CRD may be gone again; the next event retries
            log.debug("could not set status of CRD %s: %s", name, exc)

    async def _delete_instances(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural", "")
        prefix = f"/registry/{plural}.{spec.get('group', '')}/"
        page = await self.server.store.list(prefix)
        for kv in page.items:
            with contextlib.suppress(errors.NotFound):
                await self.server.store.delete(kv.key)


class StructuralSchemaAdmission:
    """Refuses CRDs whose schemas are not structural, naming the field, as kube-apiserver does."""

    name = "CustomResourceDefinitionValidation"

    async def mutate(self, request: AdmissionRequest) -> None:
        return None

    async def validate(self, request: AdmissionRequest) -> None:
        r = request.resource
        if r.group != CRD_GROUP or r.kind != "CustomResourceDefinition" or request.object is None:
            return
        if request.subresource:
            return
        causes = []
        for index, version in enumerate((request.object.get("spec") or {}).get("versions") or []):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                continue
            for cause in schemas.check_structural(schema):
                path = f"spec.versions[{index}].schema.openAPIV3Schema"
                field = f"{path}.{cause.field}" if cause.field else path
                causes.append(errors.FieldError(field, cause.message, cause.reason))
        if causes:
            raise errors.Invalid("the CRD's schema is not structural", causes)


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="custom-resources", interfaces={"admission": ("v1",)})


@hookimpl
def microkube_admission_plugins(settings: ServerSettings) -> Sequence[AdmissionPlugin]:
    return [StructuralSchemaAdmission()]
