"""The HTTP face of the API server: authentication, authorization, routing, and every resource verb."""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from microkube.apiserver import codec, discovery, printers, selectors
from microkube.apiserver.catalog import Served
from microkube.apiserver.objects import DeleteOptions, WriteOptions
from microkube.apiserver.requestinfo import RequestInfo, parse
from microkube.apiserver.status import ApiError, bad_request, expired, from_error
from microkube.apiserver.subresources import REVIEW_KINDS
from microkube.apiserver.watchcache import CacheEvent, Entry, Watcher
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Credentials, Decision, UserInfo

if TYPE_CHECKING:
    from microkube.apiserver.server import APIServer

log = logging.getLogger(__name__)

ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))
VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-microkube",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-23T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
#: How often a watch with allowWatchBookmarks gets a BOOKMARK event.
BOOKMARK_INTERVAL = 30.0
DEFAULT_WATCH_TIMEOUT = 1800.0


def json_response(body: Any, status: int = 200, *, content_type: str = codec.JSON,
                  headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"Content-Type": content_type}
    if headers:
        all_headers.update(headers)
    return web.Response(body=orjson.dumps(body), status=status, headers=all_headers)


def status_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
    return json_response(error.status(), error.code, headers=headers)


def _continue_token(revision: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": key})).decode()


def _parse_continue(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise bad_request(f'continue key is not valid: "{token}"') from None


def _bool(query: Any, name: str) -> bool:
    value = query.get(name)
    return value is not None and value.lower() in ("true", "1")


def _int(query: Any, name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'invalid value for query parameter {name}: "{value}" is not an integer') from None


class Handlers:
    def __init__(self, server: APIServer) -> None:
        self.server = server

    # -- entry point -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        info: RequestInfo | None = None
        code = 500
        try:
            info = parse(request.method, request.path, request.query)  # type: ignore[arg-type]
            user = await self._authenticate(request)
            await self._authorize(user, info)
            response = await self._dispatch(request, info, user)
            code = response.status
            return response
        except ApiError as exc:
            code = exc.code
            return status_response(exc)
        except errors.MicrokubeError as exc:
            error = from_error(exc)
            code = error.code
            return status_response(error)
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception as exc:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            error = from_error(exc)
            code = error.code
            return status_response(error)
        finally:
            self.server.metrics.observe_request(
                info.verb if info else request.method.lower(),
                info.resource if info and info.is_resource else "",
                info.subresource if info else "", code, time.perf_counter() - started,
            )

    async def _authenticate(self, request: web.Request) -> UserInfo:
        common_name: str | None = None
        orgs: tuple[str, ...] = ()
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        if peercert:
            for rdn in peercert.get("subject", ()):
                for attr, value in rdn:
                    if attr == "commonName":
                        common_name = value
                    elif attr == "organizationName":
                        orgs += (value,)
        credentials = Credentials(headers=request.headers, cert_common_name=common_name, cert_organizations=orgs)
        for authenticator in self.server.authenticators:
            user = await authenticator.authenticate(credentials)
            if user is not None:
                return user
        if "Authorization" in request.headers:
            raise ApiError(401, "Unauthorized", "Unauthorized: the bearer token is not valid")
        return ANONYMOUS

    async def _authorize(self, user: UserInfo, info: RequestInfo) -> None:
        attrs = Attributes(
            user=user, verb=info.verb, namespace=info.namespace, api_group=info.group,
            api_version=info.version, resource=info.resource if info.is_resource else "",
            subresource=info.subresource, name=info.name, path="" if info.is_resource else info.path,
        )
        decision, reason = await self.server.authorizer.authorize(attrs)
        if decision is Decision.ALLOW:
            return
        if user is ANONYMOUS:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        what = (f'{info.resource}{"/" + info.subresource if info.subresource else ""}' if info.is_resource
                else info.path)
        group = f' in API group "{info.group}"' if info.is_resource else ""
        scope = f' in the namespace "{info.namespace}"' if info.namespace and info.resource != "namespaces" else ""
        raise ApiError(403, "Forbidden",
                       f'{info.resource or info.path} is forbidden: User "{user.name}" cannot {info.verb} '
                       f'resource "{what}"{group}{scope}: {reason}', name=info.name, group=info.group,
                       kind=info.resource)

    # -- routing ---------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request, info: RequestInfo, user: UserInfo) -> web.StreamResponse:
        if not info.is_resource:
            return await self._non_resource(request, info)
        served = self.server.catalog.get(info.group, info.version, info.resource)
        if served is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        r = served.resource
        if info.subresource and info.subresource not in r.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if r.namespaced and not info.namespace and info.name:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not r.namespaced and info.namespace and r.kind != "Namespace":
            raise ApiError(404, "NotFound", f"{r.plural} are cluster-scoped: use /{info.path.split('/')[1]}/"
                                            f"{r.group_version}/{r.plural} without a namespace")
        namespace = info.namespace if r.namespaced else ""
        if info.subresource and info.subresource not in ("status", "approval"):
            return await self.server.subresources.handle(request, info, served, namespace, user)
        verb = info.verb
        if verb == "get":
            obj = await self.server.objects.get(served, namespace, info.name)
            return self._object_response(request, served, obj)
        if verb == "list":
            return await self._list(request, served, namespace)
        if verb == "watch":
            return await self._watch(request, served, namespace, info.name)
        if verb == "create":
            if info.name:
                raise ApiError(405, "MethodNotAllowed", "POST is not allowed on a named object; use PUT or PATCH")
            opts = self.write_options(request, user)
            body = await request.read()
            obj = codec.decode_object(body, request.headers.get("Content-Type"),
                                      strict=opts.field_validation == "Strict")
            if r.kind in REVIEW_KINDS:
                review = await self.server.subresources.review(served, obj, user)
                return self._object_response(request, served, review, 201)
            created = await self.server.objects.create(served, namespace, obj, opts)
            await self._settle(served, created, opts)
            return self._object_response(request, served, created, 201, opts.warnings)
        if verb == "update":
            opts = self.write_options(request, user)
            obj = codec.decode_object(await request.read(), request.headers.get("Content-Type"),
                                      strict=opts.field_validation == "Strict")
            updated = await self.server.objects.update(served, namespace, info.name, obj, opts, info.subresource)
            await self._settle(served, updated, opts)
            return self._object_response(request, served, updated, 200, opts.warnings)
        if verb == "patch":
            opts = self.write_options(request, user)
            force = _bool(request.query, "force")
            if force and codec.media_type(request.content_type) != codec.APPLY_PATCH_YAML:
                raise bad_request("force is only allowed with server-side apply (application/apply-patch+yaml)")
            patched, was_created = await self.server.objects.patch(
                served, namespace, info.name, codec.media_type(request.headers.get("Content-Type")),
                await request.read(), opts, info.subresource, force,
            )
            await self._settle(served, patched, opts)
            return self._object_response(request, served, patched, 201 if was_created else 200, opts.warnings)
        if verb == "delete":
            opts = self.write_options(request, user)
            options = await self._delete_options(request)
            opts.dry_run = options.dry_run
            obj = await self.server.objects.delete(served, namespace, info.name, options, opts)
            await self._settle(served, obj, opts)
            # 202: the object still exists (finalizers or a grace period); 200: it is gone.
            pending = bool(obj.get("metadata", {}).get("deletionTimestamp")) and not options.dry_run
            return self._object_response(request, served, obj, 202 if pending else 200)
        if verb == "deletecollection":
            return await self._delete_collection(request, served, namespace, user)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on {info.path}")

    async def _settle(self, served: Served, obj: dict[str, Any], opts: WriteOptions) -> None:
        """Writes that change what the server serves (CRDs) return only once the change is live."""
        if served.resource.kind == "CustomResourceDefinition" and not opts.dry_run:
            revision = obj.get("metadata", {}).get("resourceVersion", "")
            if revision.isdigit():
                await self._wait_cache(int(revision))

    async def _non_resource(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        accept = request.headers.get("Accept", "")
        server = self.server
        if path == "/version":
            return json_response(VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz"):
            ready = server.cache.ready.is_set() and server.cache.failed is None
            return web.Response(text="ok" if ready else "watch cache not ready", status=200 if ready else 503)
        if path == "/metrics":
            return web.Response(body=server.metrics.render(server),
                                headers={"Content-Type": "text/plain; version=0.0.4"})
        if path == "/api":
            aggregated = discovery.wants_aggregated(accept)
            if aggregated:
                return json_response(discovery.aggregated(server.catalog, core=True, media_type=aggregated),
                                     content_type=aggregated)
            return json_response(discovery.api_versions(server.address))
        if path == "/apis":
            aggregated = discovery.wants_aggregated(accept)
            if aggregated:
                return json_response(discovery.aggregated(server.catalog, core=False, media_type=aggregated),
                                     content_type=aggregated)
            return json_response(discovery.api_group_list(server.catalog))
        if path.startswith("/openapi/v3"):
            return self._openapi(request, path)
        if info.group or info.version:
            if path == "/api/" + info.version or path == f"/apis/{info.group}/{info.version}":
                doc = discovery.resource_list(server.catalog, info.group, info.version)
                if doc is not None:
                    return json_response(doc)
        elif path.startswith("/apis/"):
            group_doc = discovery.api_group(server.catalog, path.split("/")[2])
            if group_doc is not None:
                return json_response(group_doc)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _openapi(self, request: web.Request, path: str) -> web.StreamResponse:
        documents = self.server.openapi_documents()
        if path == "/openapi/v3":
            return json_response(documents.index())
        body = documents.document(path[len("/openapi/v3/"):])
        if body is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.Response(body=body, headers={"Content-Type": "application/json",
                                                "Cache-Control": "public, immutable" if request.query.get("hash")
                                                else "no-cache, private"})

    # -- options ---------------------------------------------------------------------------------

    def write_options(self, request: web.Request, user: UserInfo) -> WriteOptions:
        query = request.query
        dry_run = query.getall("dryRun", [])
        for value in dry_run:
            if value != "All":
                raise bad_request(f'unsupported dryRun value "{value}": the only supported value is "All"')
        validation = query.get("fieldValidation") or "Warn"  # Kubernetes' default when unset
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{validation}"')
        manager = query.get("fieldManager") or ""
        if len(manager) > 128:
            raise bad_request("fieldManager must be 128 characters or fewer")
        if not manager and request.method != "DELETE":
            agent = request.headers.get("User-Agent", "")
            manager = agent.split("/")[0][:128] if agent else "unknown"
        return WriteOptions(user=user, dry_run=bool(dry_run), field_manager=manager, field_validation=validation)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        body: dict[str, Any] = {}
        if request.body_exists:
            raw = await request.read()
            if raw.strip():
                decoded = codec.decode_object(raw, request.headers.get("Content-Type"))
                body = decoded
        query = request.query
        grace = body.get("gracePeriodSeconds")
        if grace is None:
            grace = _int(query, "gracePeriodSeconds")
        policy = body.get("propagationPolicy") or query.get("propagationPolicy")
        if body.get("orphanDependents") is True or query.get("orphanDependents") == "true":
            policy = policy or "Orphan"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f'propagationPolicy must be one of "Orphan", "Background" or "Foreground", '
                              f'not "{policy}"')
        pre = body.get("preconditions") or {}
        dry_run: list[str] = list(body.get("dryRun") or query.getall("dryRun", None) or [])
        for value in dry_run:
            if value != "All":
                raise bad_request(f'unsupported dryRun value "{value}": the only supported value is "All"')
        if grace is not None and not isinstance(grace, int):
            raise bad_request("gracePeriodSeconds must be an integer")
        return DeleteOptions(grace, policy, pre.get("uid"), pre.get("resourceVersion"), bool(dry_run))

    # -- responses -------------------------------------------------------------------------------

    def _object_response(self, request: web.Request, served: Served, obj: dict[str, Any], status: int = 200,
                         warnings: list[str] | None = None) -> web.Response:
        accept = request.headers.get("Accept", "")
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        if codec.wants_table(accept):
            table = self._table(served, [obj], request, revision=obj["metadata"].get("resourceVersion", ""))
            return json_response(table, status, content_type=codec.TABLE_MEDIA, headers=headers)
        if codec.wants_yaml(accept):
            return web.Response(body=codec.encode(obj, as_yaml=True), status=status,
                                content_type=codec.YAML, headers=headers)
        return json_response(obj, status, headers=headers)

    def _table(self, served: Served, objs: list[dict[str, Any]], request: web.Request, *, revision: str,
               continue_token: str = "", columns: bool = True) -> dict[str, Any]:
        include = request.query.get("includeObject") or "Metadata"
        rows = []
        for obj in objs:
            row: dict[str, Any] = {"cells": served.strategy.table_cells(obj)}
            if include == "Object":
                row["object"] = obj
            elif include == "Metadata":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": obj.get("metadata", {})}
            rows.append(row)
        table: dict[str, Any] = {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": revision},
            "columnDefinitions": printers.column_definitions(served.resource.printer_columns) if columns else [],
            "rows": rows,
        }
        if continue_token:
            table["metadata"]["continue"] = continue_token
        return table

    # -- list ------------------------------------------------------------------------------------

    def _filters(self, request: web.Request, served: Served) -> Callable[[Entry, dict[str, Any] | None], bool]:
        query = request.query
        try:
            labels = selectors.parse_label_selector(query.get("labelSelector") or "")
            fields = selectors.parse_field_selector(query.get("fieldSelector") or "", served.resource.group,
                                                    served.resource.kind)
        except errors.Invalid as exc:
            raise bad_request(str(exc)) from None
        label_match = None if labels.is_empty else labels.matches
        field_match = None if fields.is_empty else fields.matches

        def matches(entry: Entry, obj: dict[str, Any] | None) -> bool:
            if label_match is not None and not label_match(entry.labels):
                return False
            if field_match is not None:
                return field_match(obj if obj is not None else entry.obj())
            return True

        return matches

    async def _list(self, request: web.Request, served: Served, namespace: str) -> web.StreamResponse:
        query = request.query
        limit = _int(query, "limit") or 0
        if limit < 0:
            raise bad_request("limit must not be negative")
        matches = self._filters(request, served)
        token = query.get("continue") or ""
        rv = query.get("resourceVersion") or ""
        cache = self.server.cache
        if token:
            if rv and rv != "0":
                raise bad_request("specifying resource version is not allowed when using continue")
            revision, start = _parse_continue(token)
            raws, more_key = await self._list_from_store(served, namespace, revision, start, limit, matches)
        elif rv and rv != "0" and query.get("resourceVersionMatch") == "Exact":
            revision = int(rv) if rv.isdigit() else 0
            if not revision:
                raise bad_request(f'invalid resourceVersion "{rv}"')
            raws, more_key = await self._list_from_store(served, namespace, revision, "", limit, matches)
        else:
            if rv and rv != "0":
                if not rv.isdigit():
                    raise bad_request(f'invalid resourceVersion "{rv}"')
                await self._wait_cache(int(rv))
            elif not rv:
                await cache.sync()
            revision = cache.revision
            raws, more_key = self._list_from_cache(served, namespace, limit, matches)
        continue_token = _continue_token(revision, more_key) if more_key else ""
        list_kind = f"{served.resource.kind}List"
        accept = request.headers.get("Accept", "")
        if codec.wants_table(accept):
            objs = [orjson.loads(raw) for raw in raws]
            table = self._table(served, objs, request, revision=str(revision), continue_token=continue_token)
            return json_response(table, content_type=codec.TABLE_MEDIA)
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if continue_token:
            meta["continue"] = continue_token
        if codec.wants_yaml(accept):
            body = {"kind": list_kind, "apiVersion": served.api_version, "metadata": meta,
                    "items": [orjson.loads(raw) for raw in raws]}
            return web.Response(body=codec.encode(body, as_yaml=True), content_type=codec.YAML)
        head = orjson.dumps({"kind": list_kind, "apiVersion": served.api_version, "metadata": meta})
        return web.Response(body=head[:-1] + b',"items":[' + b",".join(raws) + b"]}", content_type=codec.JSON)

    async def _wait_cache(self, revision: int) -> None:
        try:
            await self.server.cache.wait_for(revision, timeout=3.0)
        except TimeoutError:
            raise ApiError(504, "Timeout", f"Too large resource version: {revision}, current: "
                           f"{self.server.cache.revision}", retry_after=1) from None

    def _list_from_cache(self, served: Served, namespace: str, limit: int,
                         matches: Callable[[Entry, dict[str, Any] | None], bool]) -> tuple[list[bytes], str]:
        cache = self.server.cache.cache_for(served.key_prefix)
        keys = cache.sorted_keys()
        prefix = served.list_prefix(namespace)
        start = bisect.bisect_left(keys, prefix)
        raws: list[bytes] = []
        entries = cache.entries
        for index in range(start, len(keys)):
            key = keys[index]
            if not key.startswith(prefix):
                break
            entry = entries[key]
            if matches(entry, None):
                if limit and len(raws) == limit:
                    return raws, keys[index - 1] if index else ""
                raws.append(self._as_version(served, entry.raw))
        return raws, ""

    def _as_version(self, served: Served, raw: bytes) -> bytes:
        """Objects of multi-version custom resources are stored in one version and served in each."""
        if not served.custom:
            return raw
        obj = orjson.loads(raw)
        if obj.get("apiVersion") == served.api_version:
            return raw
        obj["apiVersion"] = served.api_version
        return orjson.dumps(obj)

    async def _list_from_store(self, served: Served, namespace: str, revision: int, start: str, limit: int,
                               matches: Callable[[Entry, dict[str, Any] | None], bool]) -> tuple[list[bytes], str]:
        """A page of a consistent snapshot at ``revision`` (continue tokens and exact reads)."""
        from microkube.apiserver.watchcache import inject_revision, make_entry

        prefix = served.list_prefix(namespace)
        raws: list[bytes] = []
        after = start
        while True:
            try:
                page = await self.server.store.list(prefix, revision=revision, limit=max(limit, 100),
                                                    start_after=after)
            except errors.Expired:
                raise expired("The provided continue parameter is too old to display a consistent list result. "
                              "You can start a new list without the continue parameter, or use the continue "
                              "token in this response to retrieve the remainder of the results. Continuing with "
                              "the provided token results in an inconsistent list - objects that were created, "
                              "modified, or deleted between the time the first chunk was returned and now may "
                              "show up in the list.") from None
            for kv in page.items:
                raw, obj = inject_revision(kv.value, kv.mod_revision)
                if matches(make_entry(kv.key, raw, obj, kv.mod_revision), obj):
                    if limit and len(raws) == limit:
                        return raws, after
                    raws.append(self._as_version(served, raw))
                after = kv.key
            if not page.more:
                return raws, ""

    # -- watch -----------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, served: Served, namespace: str,
                     name: str) -> web.StreamResponse:
        query = request.query
        base_matches = self._filters(request, served)
        matches = base_matches
        if name:
            def matches(entry: Entry, obj: dict[str, Any] | None) -> bool:
                return entry.name == name and base_matches(entry, obj)
        timeout = _int(query, "timeoutSeconds")
        bookmarks = _bool(query, "allowWatchBookmarks")
        rv = query.get("resourceVersion") or ""
        if rv and rv != "0" and not rv.isdigit():
            raise bad_request(f'invalid resourceVersion "{rv}"')
        cache_all = self.server.cache
        if rv and rv != "0":
            await self._wait_cache(int(rv))
        else:
            await cache_all.sync()
        cache = cache_all.cache_for(served.key_prefix)
        watcher = Watcher(namespace, matches)
        # Snapshot and registration happen with no await between them: no event is missed or doubled.
        initial: list[CacheEvent] = []
        expired_error: ApiError | None = None
        if rv and rv != "0":
            try:
                initial = cache.events_since(int(rv))
            except errors.Expired as exc:
                expired_error = expired(str(exc))
        else:
            prefix = served.list_prefix(namespace)
            for key in cache.sorted_keys():
                if key.startswith(prefix):
                    entry = cache.entries[key]
                    if matches(entry, None):
                        initial.append(CacheEvent("ADDED", entry, None, None, None))
        start_revision = cache_all.revision
        as_table = codec.wants_table(request.headers.get("Accept", ""))
        response = web.StreamResponse(headers={"Content-Type": codec.JSON if not as_table else codec.TABLE_MEDIA,
                                               "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expired_error is not None:
            await response.write(orjson.dumps({"type": "ERROR", "object": expired_error.status()}) + b"\n")
            return response
        cache.watchers.add(watcher)
        self.server.metrics.watchers += 1
        first = [True]

        def encode(event: CacheEvent) -> bytes:
            if as_table:
                obj = self._table(served, [event.object()], request, revision=str(event.revision),
                                  columns=first[0])
                first[0] = False
                return orjson.dumps({"type": event.type, "object": obj}) + b"\n"
            # Shared by every watcher of this event that is served the same version.
            encoded = event.encoded.get(served.api_version)
            if encoded is None:
                encoded = b'{"type":"' + event.type.encode() + b'","object":' + \
                    self._as_version(served, event.entry.raw) + b"}\n"
                event.encoded[served.api_version] = encoded
            return encoded

        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else DEFAULT_WATCH_TIMEOUT)
        last_revision = start_revision
        try:
            for event in initial:
                if namespace and event.entry.namespace != namespace:
                    continue
                if rv and rv != "0" and not matches(event.entry, event.obj):  # history: obj decoded on demand
                    continue
                await response.write(encode(event))
                last_revision = max(last_revision, event.revision)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    event_or_none = await asyncio.wait_for(watcher.queue.get(),
                                                           min(remaining, BOOKMARK_INTERVAL))
                except TimeoutError:
                    if bookmarks:
                        mark = {"type": "BOOKMARK", "object": {
                            "kind": served.resource.kind, "apiVersion": served.api_version,
                            "metadata": {"resourceVersion": str(max(last_revision, cache_all.revision))}}}
                        await response.write(orjson.dumps(mark) + b"\n")
                    continue
                if event_or_none is None:
                    break
                await response.write(encode(event_or_none))
                last_revision = event_or_none.revision
                while not watcher.queue.empty():
                    more = watcher.queue.get_nowait()
                    if more is None:
                        return response
                    await response.write(encode(more))
                    last_revision = more.revision
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
            cache.watchers.discard(watcher)
            self.server.metrics.watchers -= 1
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    # -- deletecollection ------------------------------------------------------------------------

    async def _delete_collection(self, request: web.Request, served: Served, namespace: str,
                                 user: UserInfo) -> web.StreamResponse:
        matches = self._filters(request, served)
        await self.server.cache.sync()
        raws, _ = self._list_from_cache(served, namespace, 0, matches)
        options = await self._delete_options(request)
        opts = WriteOptions(user=user, dry_run=options.dry_run)
        items = []
        for raw in raws:
            meta = orjson.loads(raw)["metadata"]
            try:
                items.append(await self.server.objects.delete(served, meta.get("namespace", ""), meta["name"],
                                                              options, opts))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        body = {"kind": f"{served.resource.kind}List", "apiVersion": served.api_version,
                "metadata": {"resourceVersion": str(self.server.cache.revision)}, "items": items}
        return json_response(body)
