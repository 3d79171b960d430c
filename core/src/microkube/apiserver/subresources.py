"""Subresources (scale, binding, eviction, token, finalize, and the node-proxied streams) and the
review kinds that are answered rather than stored (SelfSubjectAccessReview, TokenReview, …)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from microkube.apiserver import codec, selectors, simulated
from microkube.apiserver import patch as patches
from microkube.apiserver.catalog import Served
from microkube.apiserver.objects import DeleteOptions, WriteOptions
from microkube.apiserver.requestinfo import RequestInfo
from microkube.apiserver.status import ApiError, bad_request, conflict, not_found
from microkube.timestamps import format_time, utcnow
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Decision, UserInfo

if TYPE_CHECKING:
    from microkube.apiserver.server import APIServer

#: Kinds whose create is answered from the request and never stored.
REVIEW_KINDS = frozenset({"SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview",
                          "TokenReview", "SubjectAccessReview", "LocalSubjectAccessReview"})
NODE_STREAMS = frozenset({"log", "exec", "attach", "portforward", "proxy"})
SCALE_DEFINITION = {"$ref": "#/$defs/io.k8s.api.autoscaling.v1.Scale"}


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as the string form Scale.status.selector carries."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class Subresources:
    def __init__(self, server: APIServer) -> None:
        self.server = server

    async def handle(self, request: web.Request, info: RequestInfo, served: Served, namespace: str,
                     user: UserInfo) -> web.StreamResponse:
        sub = info.subresource
        if sub == "scale":
            return await self._scale(request, info, served, namespace, user)
        if sub == "binding":
            return await self._binding(request, info, served, namespace, user)
        if sub == "eviction":
            return await self._eviction(request, info, served, namespace, user)
        if sub == "token":
            return await self._token(request, info, served, namespace)
        if sub == "finalize":
            return await self._finalize(request, info, served, user)
        if sub in NODE_STREAMS:
            return await self._node_stream(request, info, served, namespace)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on {info.path}")

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, headers={"Content-Type": codec.JSON})

    # -- scale -----------------------------------------------------------------------------------

    @staticmethod
    def scale_of(served: Served, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        scale_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                      if k in meta}
        selector = spec.get("selector")
        if served.resource.kind == "ReplicationController":
            selector_text = ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
        else:
            selector_text = selector_string(selector)
        paths = served.resource.scale_paths
        if paths:  # custom resources name their own paths
            spec_value = _get_path(obj, paths.get("specReplicasPath", ".spec.replicas"))
            status_value = _get_path(obj, paths.get("statusReplicasPath", ".status.replicas"))
            selector_path = paths.get("labelSelectorPath")
            selector_text = str(_get_path(obj, selector_path) or "") if selector_path else ""
        else:
            spec_value, status_value = spec.get("replicas", 0), status.get("replicas", 0)
        scale_status: dict[str, Any] = {"replicas": status_value or 0}
        if selector_text:
            scale_status["selector"] = selector_text
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": scale_meta,
                "spec": {"replicas": spec_value or 0}, "status": scale_status}

    async def _scale(self, request: web.Request, info: RequestInfo, served: Served, namespace: str,
                     user: UserInfo) -> web.StreamResponse:
        objects = self.server.objects
        if info.verb == "get":
            return self._json(self.scale_of(served, await objects.get(served, namespace, info.name)))
        if info.verb not in ("update", "patch"):
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on scale")
        body = await request.read()
        content_type = codec.media_type(request.headers.get("Content-Type"))
        opts = self.server.handlers.write_options(request, user)
        wanted: list[str] = []

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            scale = self.scale_of(served, current)
            if info.verb == "update":
                new_scale = codec.decode_object(body, content_type)
            elif content_type == codec.JSON_PATCH:
                new_scale = patches.json_patch(scale, codec.decode_json(body))
            elif content_type == codec.MERGE_PATCH:
                new_scale = patches.merge_patch(scale, codec.decode_json(body))
            elif content_type == codec.STRATEGIC_MERGE_PATCH:
                new_scale = patches.strategic_merge_patch(scale, codec.decode_json(body), SCALE_DEFINITION)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type} for scale")
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                wanted.append(rv)
                raise conflict(served.resource.plural, info.name, served.resource.group)
            replicas = (new_scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(422, "Invalid", f'Scale.autoscaling "{info.name}" is invalid: spec.replicas: '
                               f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                               name=info.name, kind="Scale",
                               causes=[{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                        "message": "must be greater than or equal to 0"}])
            path = served.resource.scale_paths.get("specReplicasPath", ".spec.replicas")
            _set_path(current, path, replicas)
            return current

        try:
            updated = await objects._update_loop(served, namespace, info.name, produce, opts, "scale", "")
        except errors.MicrokubeError as exc:
            raise bad_request(str(exc)) from None
        return self._json(self.scale_of(served, updated))

    # -- binding and eviction --------------------------------------------------------------------

    async def _binding(self, request: web.Request, info: RequestInfo, served: Served, namespace: str,
                       user: UserInfo) -> web.StreamResponse:
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", "bindings can only be created")
        binding = codec.decode_object(await request.read(), request.headers.get("Content-Type"))
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise ApiError(422, "Invalid", f'Binding "{info.name}" is invalid: target.name: Required value',
                           name=info.name, kind="Binding",
                           causes=[{"reason": "FieldValueRequired", "field": "target.name",
                                    "message": "Required value"}])
        opts = WriteOptions(user=user, dry_run=bool(request.query.getall("dryRun", [])))

        async def produce(current: dict[str, Any]) -> dict[str, Any]:
            spec = current.setdefault("spec", {})
            if current["metadata"].get("deletionTimestamp"):
                raise conflict("pods", info.name, "", "pod is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise conflict("pods", info.name, "", f"pod {info.name} is already assigned to node "
                               f'"{spec["nodeName"]}"')
            spec["nodeName"] = node
            # as the kube-apiserver's binding storage: the pod is now scheduled
            status = current.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                     "lastTransitionTime": format_time(utcnow())}, *conditions]
            return current

        await self.server.objects._update_loop(served, namespace, info.name, produce, opts, "binding", "")
        return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                           "code": 201}, 201)

    async def _eviction(self, request: web.Request, info: RequestInfo, served: Served, namespace: str,
                        user: UserInfo) -> web.StreamResponse:
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", "evictions can only be created")
        eviction = codec.decode_object(await request.read(), request.headers.get("Content-Type"))
        pod = await self.server.objects.get(served, namespace, info.name)
        labels = pod["metadata"].get("labels") or {}
        pdbs = self.server.catalog.get("policy", "v1", "poddisruptionbudgets")
        if pdbs is not None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            cache = self.server.cache.cache_for(pdbs.key_prefix)
            for entry in list(cache.entries.values()):
                if entry.namespace != namespace:
                    continue
                pdb = entry.obj()
                selector = selectors.label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
                if selector.is_empty or not selector.matches(labels):
                    continue
                allowed = (pdb.get("status") or {}).get("disruptionsAllowed", 0)
                if allowed < 1:
                    raise ApiError(429, "TooManyRequests",
                                   "Cannot evict pod as it would violate the pod's disruption budget.",
                                   causes=[{"reason": "DisruptionBudget", "message":
                                            f"The disruption budget {entry.name} needs "
                                            f"{(pdb.get('status') or {}).get('desiredHealthy', 0)} healthy pods "
                                            f"and has {(pdb.get('status') or {}).get('currentHealthy', 0)} "
                                            f"currently"}], retry_after=10)
        raw = eviction.get("deleteOptions") or {}
        pre = raw.get("preconditions") or {}
        options = DeleteOptions(raw.get("gracePeriodSeconds"), raw.get("propagationPolicy"), pre.get("uid"),
                                pre.get("resourceVersion"), bool(raw.get("dryRun")))
        await self.server.objects.delete(served, namespace, info.name, options,
                                         WriteOptions(user=user, dry_run=options.dry_run))
        return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                           "code": 201}, 201)

    # -- serviceaccount tokens -------------------------------------------------------------------

    async def _token(self, request: web.Request, info: RequestInfo, served: Served,
                     namespace: str) -> web.StreamResponse:
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", "tokens can only be created")
        sa = await self.server.objects.get(served, namespace, info.name)
        body = codec.decode_object(await request.read(), request.headers.get("Content-Type"))
        spec = body.get("spec") or {}
        expiration = int(spec.get("expirationSeconds") or 3600)
        if expiration < 600:
            raise ApiError(422, "Invalid", f'TokenRequest.authentication.k8s.io "{info.name}" is invalid: '
                           "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
                           kind="TokenRequest", causes=[{"reason": "FieldValueInvalid",
                                                         "field": "spec.expirationSeconds",
                                                         "message": "may not specify a duration less than 10 minutes"}])
        audiences = list(spec.get("audiences") or []) or [self.server.token_issuer.issuer]
        token, expires_at = self.server.token_issuer.issue(
            namespace, info.name, sa["metadata"].get("uid", ""), audiences, expiration, spec.get("boundObjectRef")
        )
        result = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                  "metadata": {"name": info.name, "namespace": namespace,
                               "creationTimestamp": None},
                  "spec": {"audiences": audiences, "expirationSeconds": expiration,
                           "boundObjectRef": spec.get("boundObjectRef")},
                  "status": {"token": token, "expirationTimestamp": expires_at}}
        return self._json(result, 201)

    # -- namespaces/finalize ---------------------------------------------------------------------

    async def _finalize(self, request: web.Request, info: RequestInfo, served: Served,
                        user: UserInfo) -> web.StreamResponse:
        if info.verb != "update":
            raise ApiError(405, "MethodNotAllowed", "finalize only supports PUT")
        body = codec.decode_object(await request.read(), request.headers.get("Content-Type"))
        finalizers = list((body.get("spec") or {}).get("finalizers") or [])
        updated = await self.finalize_namespace(served, info.name, finalizers, user)
        return self._json(updated)

    async def finalize_namespace(self, served: Served, name: str, finalizers: list[str],
                                 user: UserInfo) -> dict[str, Any]:
        objects = self.server.objects
        key = served.key("", name)
        kv = await self.server.store.get(key)
        if kv is None:
            raise not_found("namespaces", name)
        from microkube.apiserver.objects import decode_stored, encode_for_store

        current = decode_stored(kv)
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["finalizers"] = finalizers
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not finalizers and not meta.get("finalizers"):
            deleted = await objects.store.delete(key, expected_revision=kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            return new
        revision = await objects.store.update(key, encode_for_store(new), expected_revision=kv.mod_revision)
        meta["resourceVersion"] = str(revision)
        return new

    # -- node-proxied streams --------------------------------------------------------------------

    async def _node_stream(self, request: web.Request, info: RequestInfo, served: Served,
                           namespace: str) -> web.StreamResponse:
        obj = await self.server.objects.get(served, namespace, info.name)
        kind = served.resource.kind
        node_name = str((obj.get("spec") or {}).get("nodeName") or "")
        if kind == "Pod" and not node_name:
            raise bad_request(f"pod {info.name} does not have a host assigned")
        if kind == "Pod" and info.subresource != "proxy":
            nodes = self.server.catalog.get("", "v1", "nodes")
            node = None
            if nodes is not None:
                with contextlib.suppress(errors.NotFound, ApiError):
                    node = await self.server.objects.get(nodes, "", node_name)
            if simulated.is_simulated(node):
                return await simulated.answer(request, info.subresource, obj, node_name)
            if node is None:
                raise ApiError(503, "ServiceUnavailable", f"pod {namespace}/{info.name} is bound to node "
                               f"{node_name}, which is not registered: its kubelet cannot be reached")
            from microkube.apiserver import nodeproxy

            pki_dir = Path(self.server.settings.data_dir) / "pki"
            return await nodeproxy.forward(request, info.subresource, obj, node, pki_dir)
        raise ApiError(503, "ServiceUnavailable",
                       f"{served.resource.plural}/{info.subresource} is not available yet: this microkube server "
                       f"has no kubelet API proxy (it arrives with the node agent)", retry_after=None)

    # -- reviews ---------------------------------------------------------------------------------

    async def review(self, served: Served, body: dict[str, Any], user: UserInfo) -> dict[str, Any]:
        kind = served.resource.kind
        result = copy.deepcopy(body)
        result["apiVersion"] = served.api_version
        result["kind"] = kind
        result.setdefault("metadata", {})["creationTimestamp"] = None
        spec = result.get("spec") or {}
        if kind == "SelfSubjectAccessReview":
            ra = spec.get("resourceAttributes")
            na = spec.get("nonResourceAttributes")
            if ra:
                attrs = Attributes(user=user, verb=ra.get("verb", ""), namespace=ra.get("namespace", ""),
                                   api_group=ra.get("group", ""), api_version=ra.get("version", ""),
                                   resource=ra.get("resource", ""), subresource=ra.get("subresource", ""),
                                   name=ra.get("name", ""))
            elif na:
                attrs = Attributes(user=user, verb=na.get("verb", ""), path=na.get("path", ""))
            else:
                raise ApiError(422, "Invalid", f'{kind}.authorization.k8s.io "" is invalid: spec: Invalid value: '
                               "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                               kind=kind)
            decision, reason = await self.server.authorizer.authorize(attrs)
            status: dict[str, Any] = {"allowed": decision is Decision.ALLOW}
            if decision is Decision.DENY:
                status["denied"] = True
            if reason:
                status["reason"] = reason
            result["status"] = status
            return result
        if kind == "SelfSubjectReview":
            info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
            if user.uid:
                info["uid"] = user.uid
            result["status"] = {"userInfo": info}
            return result
        if kind == "TokenReview":
            token = spec.get("token", "")
            from microkube_interfaces.auth import Credentials

            credentials = Credentials(headers={"Authorization": f"Bearer {token}"})
            reviewed: UserInfo | None = None
            try:
                for authenticator in self.server.authenticators:
                    reviewed = await authenticator.authenticate(credentials)
                    if reviewed is not None:
                        break
            except errors.Unauthenticated as exc:
                result["status"] = {"authenticated": False, "error": str(exc)}
                return result
            if reviewed is None:
                result["status"] = {"authenticated": False}
            else:
                result["status"] = {"authenticated": True,
                                    "user": {"username": reviewed.name, "uid": reviewed.uid,
                                             "groups": list(reviewed.groups)},
                                    "audiences": spec.get("audiences") or []}
            return result
        raise ApiError(405, "MethodNotAllowed", f"{kind} is not supported by this server yet")


def _get_path(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
