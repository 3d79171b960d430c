"""Object semantics on top of the store: what create, update, patch and delete mean for an API object.

This layer knows nothing of HTTP. It owns metadata (uid, creationTimestamp, generation,
resourceVersion, generateName, finalizers, deletionTimestamp), optimistic concurrency, the status
split, defaulting → admission → validation, managedFields, dry runs and graceful deletion.
"""

from __future__ import annotations

import copy
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from microkube.apiserver import apply as ssa
from microkube.apiserver import patch as patches
from microkube.apiserver import schemas
from microkube.apiserver.catalog import Served
from microkube.apiserver.codec import APPLY_PATCH_YAML, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, json_copy
from microkube.apiserver.status import ApiError, already_exists, bad_request, conflict, from_error, not_found
from microkube.apiserver.watchcache import WatchCache
from microkube.timestamps import format_time
from microkube_interfaces import errors
from microkube_interfaces.admission import AdmissionPlugin, AdmissionRequest
from microkube_interfaces.auth import UserInfo
from microkube_interfaces.store import KeyValue, Store

GENERATE_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
#: Metadata the server owns: a client's values are ignored on create and carried over on update.
SYSTEM_METADATA = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
#: Writes retried this often when a concurrent writer wins and the client gave no resourceVersion.
MAX_RETRIES = 16


_clock: tuple[int, str] = (0, "")
_entropy = bytearray()


def new_uid() -> str:
    """A random (version 4) UUID; entropy is read from the OS in blocks, not one syscall per object."""
    global _entropy
    if len(_entropy) < 16:
        _entropy = bytearray(os.urandom(4096))
    raw = bytes(_entropy[:16])
    del _entropy[:16]
    return str(uuid.UUID(bytes=raw, version=4))


def now_rfc3339(now: datetime | None = None) -> str:
    """RFC 3339 at second precision, as Kubernetes writes timestamps (the current second is cached)."""
    global _clock
    if now is not None:
        return format_time(now)
    second = int(time.time())
    if _clock[0] != second:
        _clock = (second, format_time(datetime.fromtimestamp(second, UTC)))
    return _clock[1]


@dataclass
class WriteOptions:
    user: UserInfo
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    #: Warnings for the response's Warning headers (fieldValidation=Warn).
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None  # Orphan | Background | Foreground
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    dry_run: bool = False


def decode_stored(kv: KeyValue) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def encode_for_store(obj: dict[str, Any]) -> bytes:
    meta = obj.get("metadata", {})
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


def _spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = (set(old) | set(new)) - {"metadata", "status", "apiVersion", "kind"}
    return any(old.get(k) != new.get(k) for k in keys)


class ObjectStore:
    """The registry of API objects over a Store, shared by every resource type."""

    def __init__(self, store: Store, cache: WatchCache, admission: list[AdmissionPlugin]) -> None:
        self.store = store
        self.cache = cache
        self.admission = admission
        #: Kind-specific steps before a create or update is admitted (cluster IP allocation, …),
        #: keyed by (group, kind); called with the new object and the old one (None on create).
        self.before_write: dict[tuple[str, str], Callable[[dict[str, Any], dict[str, Any] | None], None]] = {}

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, served: Served, namespace: str, name: str) -> dict[str, Any]:
        kv = await self.store.get(served.key(namespace, name))
        if kv is None:
            raise not_found(served.resource.plural, name, served.resource.group)
        return decode_stored(kv)

    # -- create ----------------------------------------------------------------------------------

    async def create(self, served: Served, namespace: str, obj: dict[str, Any],
                     opts: WriteOptions) -> dict[str, Any]:
        r = served.resource
        self._check_type(served, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if r.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
            namespace = namespace or body_ns or ""
            if not namespace:
                raise bad_request("a namespace is required to create a namespaced object")
            meta["namespace"] = namespace
            await self._check_namespace_open(namespace)
        else:
            meta.pop("namespace", None)
        for key in (*SYSTEM_METADATA, "resourceVersion", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if r.has_status and r.kind not in ("CustomResourceDefinition",):
            obj.pop("status", None)
        self._validate_fields(served, obj, opts)
        generated = not meta.get("name")
        if generated and not meta.get("generateName"):
            raise from_error(errors.Invalid.field("metadata.name", "name or generateName is required",
                                                  "FieldValueRequired"), kind=r.kind)
        if generated:
            meta["name"] = self._generate_name(meta["generateName"])
        served.strategy.default(obj)
        self._before_write(served, obj, None)
        await self._admit("CREATE", served, obj, None, opts)
        self._record_manager(served, None, obj, opts)
        for attempt in range(MAX_RETRIES):
            if opts.dry_run:
                obj["metadata"].pop("resourceVersion", None)
                return obj
            key = served.key(namespace, meta["name"])
            try:
                revision = await self.store.create(key, encode_for_store(obj))
            except errors.AlreadyExists:
                if generated and attempt + 1 < MAX_RETRIES:
                    meta["name"] = self._generate_name(meta["generateName"])
                    continue
                raise already_exists(r.plural, meta["name"], r.group) from None
            meta["resourceVersion"] = str(revision)
            return obj
        raise already_exists(r.plural, meta["name"], r.group)  # pragma: no cover - loop always returns

    @staticmethod
    def _generate_name(prefix: str) -> str:
        return prefix + "".join(random.choices(GENERATE_NAME_CHARS, k=5))

    @staticmethod
    def _check_type(served: Served, obj: dict[str, Any]) -> None:
        r = served.resource
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version and api_version != r.group_version:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                              f"version ({r.group_version})")
        if kind and kind != r.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({r.kind})")
        obj["apiVersion"] = r.group_version
        obj["kind"] = r.kind

    async def _check_namespace_open(self, namespace: str) -> None:
        """NamespaceLifecycle: no creates in a namespace that is missing or being deleted."""
        key = f"/registry/namespaces/{namespace}"
        entry = self.cache.cache_for("/registry/namespaces/").entries.get(key)
        if entry is not None:
            deleting = entry.deleting
        else:  # created a moment ago and not in the cache yet, or really missing
            kv = await self.store.get(key)
            if kv is None:
                raise not_found("namespaces", namespace)
            deleting = bool(orjson.loads(kv.value).get("metadata", {}).get("deletionTimestamp"))
        if deleting:
            raise ApiError(403, "Forbidden",
                           f"unable to create new content in namespace {namespace} because it is being terminated",
                           name=namespace, kind="namespaces")

    def _validate_fields(self, served: Served, obj: dict[str, Any], opts: WriteOptions) -> None:
        schema = served.schema
        if schema is None:
            return
        if served.custom:
            removed = schemas.prune(obj, schema)
            if removed and opts.field_validation != "Ignore":
                self._unknown(served, obj, removed, opts)
            return
        unknown, type_errors = schemas.inspect_fields(obj, schema)
        if unknown and opts.field_validation != "Ignore":
            self._unknown(served, obj, unknown, opts)
        if type_errors:
            name = obj.get("metadata", {}).get("name", "")
            raise from_error(errors.Invalid("type errors", type_errors), kind=served.resource.kind, name=name,
                             group=served.resource.group)

    @staticmethod
    def _unknown(served: Served, obj: dict[str, Any], paths: list[str], opts: WriteOptions) -> None:
        if opts.field_validation == "Strict":
            detail = ", ".join(f'unknown field "{p}"' for p in paths)
            raise bad_request(f"strict decoding error: {detail}")
        opts.warnings.extend(f'unknown field "{p}"' for p in paths)

    def _before_write(self, served: Served, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        hook = self.before_write.get((served.resource.group, served.resource.kind))
        if hook is None:
            return
        try:
            hook(obj, old)
        except errors.MicrokubeError as exc:
            r = served.resource
            raise from_error(exc, plural=r.plural, name=obj["metadata"].get("name", ""), group=r.group,
                             kind=r.kind) from None

    async def list(self, resource: str, namespace: str = "", *, consistent: bool = True) -> list[dict[str, Any]]:
        """The admission ObjectReader: objects from the watch cache (caught up first when consistent)."""
        if consistent:
            await self.cache.sync()
        entries = self.cache.cache_for(f"/registry/{resource}/").entries.values()
        return [entry.obj() for entry in entries if not namespace or entry.namespace == namespace]

    async def _admit(self, operation: str, served: Served, obj: dict[str, Any] | None,
                     old: dict[str, Any] | None, opts: WriteOptions, subresource: str = "") -> None:
        meta = (obj or old or {}).get("metadata", {})
        request = AdmissionRequest(operation, served.resource, subresource, meta.get("namespace", ""),
                                   meta.get("name", ""), obj, old, opts.user, opts.dry_run, reader=self)
        try:
            for plugin in self.admission:
                await plugin.mutate(request)
            if (obj is not None and not subresource) or (obj is not None and subresource == "status"):
                served.strategy.validate(obj, old)
            for plugin in self.admission:
                await plugin.validate(request)
        except errors.MicrokubeError as exc:
            r = served.resource
            raise from_error(exc, plural=r.plural, name=meta.get("name", ""), group=r.group, kind=r.kind) from None

    def _record_manager(self, served: Served, old: dict[str, Any] | None, new: dict[str, Any],
                        opts: WriteOptions) -> None:
        if not opts.field_manager:
            return
        new["metadata"]["managedFields"] = ssa.update_managed_fields(
            old, new, manager=opts.field_manager, operation="Update", schema=served.schema, now=now_rfc3339()
        )

    # -- update and patch ----------------------------------------------------------------------

    async def update(self, served: Served, namespace: str, name: str, body: dict[str, Any],
                     opts: WriteOptions, subresource: str = "") -> dict[str, Any]:
        self._check_type(served, body)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        if served.resource.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        self._validate_fields(served, body, opts)
        wanted_rv = meta.get("resourceVersion") or ""

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            return copy.deepcopy(body)

        return await self._update_loop(served, namespace, name, produce, opts, subresource, wanted_rv)

    async def patch(self, served: Served, namespace: str, name: str, patch_type: str, body: bytes,
                    opts: WriteOptions, subresource: str = "", force: bool = False) -> tuple[dict[str, Any], bool]:
        """Returns the object and whether it was created (server-side apply of an absent object)."""
        from microkube.apiserver.codec import decode_json, decode_yaml

        schema = served.schema
        if patch_type == JSON_PATCH:
            operations = decode_json(body)
            if not isinstance(operations, list):
                raise bad_request("a JSON patch must be a JSON array of operations")
            def apply_fn(cur: dict[str, Any]) -> dict[str, Any]:
                return patches.json_patch(cur, operations)

            wanted_rv = ""
        elif patch_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            document = decode_json(body)
            if not isinstance(document, dict):
                raise bad_request("a merge patch must be a JSON object")
            if patch_type == STRATEGIC_MERGE_PATCH:
                if served.custom or schema is None:
                    raise ApiError(415, "UnsupportedMediaType",
                                   f"the body of the request was in an unknown format - strategic merge patch is "
                                   f"not supported for {served.resource.group_resource}; use "
                                   f"{MERGE_PATCH} or {JSON_PATCH}")

                def apply_fn(cur: dict[str, Any]) -> dict[str, Any]:
                    return patches.strategic_merge_patch(cur, document, schema)
            else:
                def apply_fn(cur: dict[str, Any]) -> dict[str, Any]:
                    return patches.merge_patch(cur, document)  # type: ignore[no-any-return]
            patch_meta = document.get("metadata")
            if patch_meta is not None and not isinstance(patch_meta, dict):
                raise bad_request("metadata in the patch must be an object")
            wanted_rv = str((patch_meta or {}).get("resourceVersion") or "")
        elif patch_type == APPLY_PATCH_YAML:
            applied = decode_yaml(body)
            if not isinstance(applied, dict):
                raise bad_request("an apply patch must be an object")
            if not opts.field_manager:
                raise bad_request("PATCH requests with application/apply-patch+yaml require fieldManager")
            return await self._apply(served, namespace, name, applied, opts, subresource, force)
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH_YAML}, {STRATEGIC_MERGE_PATCH}")

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            try:
                patched = apply_fn(current)
            except errors.MicrokubeError as exc:
                raise self._patch_error(served, name, exc) from None
            if not isinstance(patched, dict):
                raise bad_request("the patch produced something other than an object")
            self._check_type(served, patched)
            self._validate_fields(served, patched, opts)
            return patched

        obj = await self._update_loop(served, namespace, name, produce, opts, subresource, wanted_rv)
        return obj, False

    @staticmethod
    def _patch_error(served: Served, name: str, exc: errors.MicrokubeError) -> ApiError:
        if isinstance(exc, errors.Invalid):
            return ApiError(422, "Invalid", f"the patch could not be applied: {exc}", name=name,
                            kind=served.resource.kind)
        return from_error(exc, plural=served.resource.plural, name=name, group=served.resource.group)

    async def _apply(self, served: Served, namespace: str, name: str, applied: dict[str, Any],
                     opts: WriteOptions, subresource: str, force: bool) -> tuple[dict[str, Any], bool]:
        r = served.resource
        self._check_type(served, applied)
        ameta = applied.setdefault("metadata", {})
        if ameta.get("name") and ameta["name"] != name:
            raise bad_request(f'the name of the object ({ameta["name"]}) does not match the name on the URL ({name})')
        ameta["name"] = name
        if r.namespaced:
            ameta["namespace"] = namespace
        self._validate_fields(served, applied, opts)
        kv = await self.store.get(served.key(namespace, name))
        if kv is None:
            if subresource:
                raise not_found(r.plural, name, r.group)
            try:
                merged = ssa.apply(None, applied, manager=opts.field_manager, force=force, schema=served.schema,
                                   now=now_rfc3339())
            except errors.Conflict as exc:
                raise self._apply_conflict(served, name, exc) from None
            create_opts = WriteOptions(opts.user, opts.dry_run, "", opts.field_validation, opts.warnings)
            created = await self.create(served, namespace, merged, create_opts)
            return created, True
        wanted_rv = str(ameta.get("resourceVersion") or "")

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            try:
                return ssa.apply(current, applied, manager=opts.field_manager, force=force, schema=served.schema,
                                 now=now_rfc3339())
            except errors.Conflict as exc:
                raise self._apply_conflict(served, name, exc) from None
            except errors.MicrokubeError as exc:
                raise self._patch_error(served, name, exc) from None

        no_manager = WriteOptions(opts.user, opts.dry_run, "", opts.field_validation, opts.warnings)
        obj = await self._update_loop(served, namespace, name, produce, no_manager, subresource, wanted_rv)
        return obj, False

    @staticmethod
    def _apply_conflict(served: Served, name: str, exc: errors.Conflict) -> ApiError:
        conflicts = getattr(exc, "conflicts", [])
        causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{manager}"', "field": path}
                  for manager, path in conflicts]
        return ApiError(409, "Conflict", str(exc), name=name, group=served.resource.group,
                        kind=served.resource.plural, causes=causes)

    async def _update_loop(self, served: Served, namespace: str, name: str,
                           produce: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], opts: WriteOptions,
                           subresource: str, wanted_rv: str) -> dict[str, Any]:
        r = served.resource
        key = served.key(namespace, name)
        for _ in range(MAX_RETRIES):
            kv, current = await self._read(served, key, name)
            if wanted_rv and wanted_rv != str(kv.mod_revision):
                raise conflict(r.plural, name, r.group)
            new = await produce(json_copy(current))
            new = self._prepare_update(served, current, new, subresource)
            if not subresource:
                self._before_write(served, new, current)
            if new == current:
                return current  # a no-op write changes nothing and emits no event
            await self._admit("UPDATE", served, new, current, opts, subresource)
            self._record_manager(served, current, new, opts)
            meta = new["metadata"]
            if opts.dry_run:
                return new
            if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._deletable_now(served, new):
                if not await self._remove(served, key, name, kv.mod_revision, meta):
                    continue
                return new
            try:
                revision = await self.store.update(key, encode_for_store(new), expected_revision=kv.mod_revision)
            except errors.Conflict:
                if wanted_rv:
                    raise conflict(r.plural, name, r.group) from None
                continue
            except errors.NotFound:
                raise not_found(r.plural, name, r.group) from None
            meta["resourceVersion"] = str(revision)
            return new
        raise ApiError(409, "Conflict", f'{r.group_resource} "{name}": too many concurrent writers; try again',
                       name=name, kind=r.plural)

    def _prepare_update(self, served: Served, current: dict[str, Any], new: dict[str, Any],
                        subresource: str) -> dict[str, Any]:
        r = served.resource
        if subresource in ("status", "approval"):  # approval: the CSR admission keeps only its conditions
            status = new.get("status")
            new = copy.deepcopy(current)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            return new
        meta = new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        for key in (*SYSTEM_METADATA, "name", "namespace", "resourceVersion"):
            if key in cur_meta:
                meta[key] = cur_meta[key]
            else:
                meta.pop(key, None)
        if subresource != "binding" and ((r.has_status and served.resource.kind != "CustomResourceDefinition") or (
            served.custom and "status" in r.subresources
        )):
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        if cur_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
            if added:
                raise from_error(errors.Invalid.field(
                    "metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is being "
                    f"deleted, found new finalizers {sorted(added)}", "FieldValueForbidden"),
                    kind=r.kind, name=meta.get("name", ""), group=r.group)
        served.strategy.default(new)
        if _spec_changed(current, new):
            meta["generation"] = int(cur_meta.get("generation") or 1) + 1
        return new

    async def _read(self, served: Served, key: str, name: str) -> tuple[KeyValue, dict[str, Any]]:
        kv = await self.store.get(key)
        if kv is None:
            raise not_found(served.resource.plural, name, served.resource.group)
        return kv, decode_stored(kv)

    async def _remove(self, served: Served, key: str, name: str, revision: int, meta: dict[str, Any]) -> bool:
        """Delete the stored object if it is still at ``revision``; False when another write came first."""
        try:
            deleted = await self.store.delete(key, expected_revision=revision)
        except errors.Conflict:
            return False
        except errors.NotFound:
            raise not_found(served.resource.plural, name, served.resource.group) from None
        meta["resourceVersion"] = str(deleted.mod_revision)
        return True

    @staticmethod
    def _deletable_now(served: Served, obj: dict[str, Any]) -> bool:
        """Without finalizers, an object being deleted goes once its grace period is over (0 for most kinds)."""
        return int(obj["metadata"].get("deletionGracePeriodSeconds") or 0) == 0

    # -- delete ----------------------------------------------------------------------------------

    async def delete(self, served: Served, namespace: str, name: str, options: DeleteOptions,
                     opts: WriteOptions) -> dict[str, Any]:
        r = served.resource
        key = served.key(namespace, name)
        for _ in range(MAX_RETRIES):
            kv, current = await self._read(served, key, name)
            meta = current["metadata"]
            if options.precondition_uid and options.precondition_uid != meta.get("uid"):
                raise conflict(r.plural, name, r.group,
                               f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                               f"UID in object meta: {meta.get('uid')}")
            if options.precondition_resource_version and options.precondition_resource_version != str(
                kv.mod_revision
            ):
                raise conflict(r.plural, name, r.group,
                               f"Precondition failed: ResourceVersion in precondition: "
                               f"{options.precondition_resource_version}, ResourceVersion in object meta: "
                               f"{kv.mod_revision}")
            await self._admit("DELETE", served, None, current, opts)
            new = copy.deepcopy(current)
            nmeta = new["metadata"]
            finalizers = list(nmeta.get("finalizers") or [])
            policy = options.propagation_policy
            if policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            grace = self._grace_period(served, current, options)
            if r.kind == "Namespace" and r.group == "":
                spec_finalizers = (current.get("spec") or {}).get("finalizers") or []
                if spec_finalizers:
                    new.setdefault("status", {})["phase"] = "Terminating"
                    finalizers_pending = True
                else:
                    finalizers_pending = False
            else:
                finalizers_pending = False
            if not finalizers and grace == 0 and not finalizers_pending:
                if options.dry_run:
                    return current
                if not await self._remove(served, key, name, kv.mod_revision, meta):
                    continue
                return current
            if nmeta.get("deletionTimestamp"):
                existing = int(nmeta.get("deletionGracePeriodSeconds") or 0)
                if grace >= existing and finalizers == list(nmeta.get("finalizers") or []):
                    return current  # already being deleted: deleting again changes nothing
            deadline = datetime.now(UTC) + timedelta(seconds=grace)
            nmeta["deletionTimestamp"] = now_rfc3339(deadline)
            nmeta["deletionGracePeriodSeconds"] = grace
            if finalizers:
                nmeta["finalizers"] = finalizers
            nmeta["generation"] = int(nmeta.get("generation") or 1) + 1
            if options.dry_run:
                return new
            try:
                revision = await self.store.update(key, encode_for_store(new), expected_revision=kv.mod_revision)
            except errors.Conflict:
                continue
            nmeta["resourceVersion"] = str(revision)
            return new
        raise ApiError(409, "Conflict", f'{r.group_resource} "{name}": too many concurrent writers; try again')

    @staticmethod
    def _grace_period(served: Served, obj: dict[str, Any], options: DeleteOptions) -> int:
        """Pods on a node get their termination grace period; everything else goes at once."""
        r = served.resource
        if r.group != "" or r.kind != "Pod":
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0  # never scheduled: nothing to stop
        status = obj.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if options.grace_period_seconds is not None:
            return max(0, options.grace_period_seconds)
        return int(spec.get("terminationGracePeriodSeconds", 30))
