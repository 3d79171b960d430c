"""The async REST client every microkube component uses to talk to the API server.

It speaks the same Kubernetes REST API as kubectl: JSON bodies, Status errors mapped back onto the
error model (NotFound, AlreadyExists, Conflict, Invalid, Expired, …), chunked watch streams. One
ClientSession (connection pool) per Client.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import yaml

from microkube_interfaces import errors

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


class ApiStatusError(errors.MicrokubeError):
    """A Status the server answered with that maps to no more specific error."""

    def __init__(self, status: dict[str, Any], code: int) -> None:
        super().__init__(status.get("message") or f"HTTP {code}")
        self.status = status
        self.code = code


def _raise_for(code: int, body: bytes) -> None:
    try:
        status = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        status = {"message": body.decode(errors="replace")}
    message = status.get("message") or f"HTTP {code}"
    reason = status.get("reason", "")
    if code == 404:
        raise errors.NotFound(message)
    if code == 409 and reason == "AlreadyExists":
        raise errors.AlreadyExists(message)
    if code == 409:
        raise errors.Conflict(message)
    if code == 422:
        causes = [errors.FieldError(c.get("field", ""), c.get("message", ""), c.get("reason", "FieldValueInvalid"))
                  for c in (status.get("details") or {}).get("causes") or []]
        raise errors.Invalid(message, causes)
    if code == 410:
        raise errors.Expired(message)
    if code == 401:
        raise errors.Unauthenticated(message)
    if code == 403:
        raise errors.Forbidden(message)
    if code in (429, 503, 504):
        raise errors.Retryable(message, after=float((status.get("details") or {}).get("retryAfterSeconds", 1)))
    raise ApiStatusError(status, code)


def _query(**parameters: Any) -> dict[str, Any]:
    """Query parameters that are set (None and empty strings are left out; 0 is kept only if not a limit)."""
    return {k: v for k, v in parameters.items() if v not in (None, "") and not (k == "limit" and not v)}


class Client:
    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None, token: str | None = None,
                 user_agent: str = "microkube") -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False, limit=64),
            headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    @classmethod
    def from_kubeconfig(cls, path: Path, *, user_agent: str = "microkube") -> Client:
        config = yaml.safe_load(Path(path).read_text())
        context_name = config.get("current-context")
        context = next((c["context"] for c in config.get("contexts", []) if c["name"] == context_name),
                       config["contexts"][0]["context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")),
                                    {})
        context_ssl = None
        if cluster["server"].startswith("https"):
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode() \
                if "certificate-authority-data" in cluster else None
            context_ssl = ssl.create_default_context(cadata=ca)
            if "client-certificate-data" in user:
                with tempfile.TemporaryDirectory() as tmp:
                    cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
                    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                    key.write_bytes(base64.b64decode(user["client-key-data"]))
                    context_ssl.load_cert_chain(cert, key)
        return cls(cluster["server"], ssl_context=context_ssl, token=user.get("token"), user_agent=user_agent)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None,
                      content_type: str = "application/json") -> Any:
        url = self.url + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        data = None if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                raw = await response.read()
                if response.status >= 400:
                    _raise_for(response.status, raw)
                return orjson.loads(raw) if raw else None
        except aiohttp.ClientConnectionError as exc:
            raise errors.Retryable(f"cannot reach the API server at {self.url}: {exc}", after=1) from None

    # -- verbs -----------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", resource.path(namespace, name))
        return result

    async def list(self, resource: Resource, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, resource_version: str = "") -> dict[str, Any]:
        """All pages of a list as one list object (its resourceVersion is the first page's)."""
        query = _query(labelSelector=label_selector, fieldSelector=field_selector, limit=limit,
                       resourceVersion=resource_version)
        result: dict[str, Any] = await self.request("GET", resource.path(namespace), query=query)
        token = result.get("metadata", {}).get("continue")
        while token:
            page = await self.request("GET", resource.path(namespace), query={**query, "continue": token})
            result["items"].extend(page.get("items") or [])
            token = page.get("metadata", {}).get("continue")
        result.get("metadata", {}).pop("continue", None)
        return result

    async def create(self, resource: Resource, obj: dict[str, Any], namespace: str = "", *,
                     field_manager: str = "") -> dict[str, Any]:
        query = {"fieldManager": field_manager} if field_manager else None
        result: dict[str, Any] = await self.request("POST", resource.path(namespace), body=obj, query=query)
        return result

    async def update(self, resource: Resource, obj: dict[str, Any], *, subresource: str = "",
                     field_manager: str = "") -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        query = {"fieldManager": field_manager} if field_manager else None
        result: dict[str, Any] = await self.request(
            "PUT", resource.path(meta.get("namespace", ""), meta["name"], subresource), body=obj, query=query)
        return result

    async def patch(self, resource: Resource, name: str, patch: Any, namespace: str = "", *,
                    content_type: str = MERGE_PATCH, subresource: str = "", field_manager: str = "",
                    force: bool = False) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if field_manager:
            query["fieldManager"] = field_manager
        if force:
            query["force"] = "true"
        result: dict[str, Any] = await self.request("PATCH", resource.path(namespace, name, subresource),
                                                    body=patch, query=query, content_type=content_type)
        return result

    async def delete(self, resource: Resource, name: str, namespace: str = "", *,
                     propagation_policy: str | None = None, grace_period_seconds: int | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = preconditions
        result: dict[str, Any] | None = await self.request("DELETE", resource.path(namespace, name), body=body)
        return result

    async def watch(self, resource: Resource, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", timeout_seconds: int | None = None,
                    bookmarks: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) until the server ends the stream.

        An ERROR event with code 410 raises Expired: the caller relists.
        """
        query = _query(watch="true", resourceVersion=resource_version, labelSelector=label_selector,
                       fieldSelector=field_selector, timeoutSeconds=timeout_seconds,
                       allowWatchBookmarks="true" if bookmarks else "")
        url = f"{self.url}{resource.path(namespace)}?{urlencode(query)}"
        try:
            async with self._session.get(url) as response:
                if response.status >= 400:
                    _raise_for(response.status, await response.read())
                async for line in response.content:
                    if not line.strip():
                        continue
                    event: dict[str, Any] = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        _raise_for(int(status.get("code") or 500), orjson.dumps(status))
                    yield event
        except aiohttp.ClientConnectionError as exc:
            raise errors.Retryable(f"watch of {resource.plural} lost its connection: {exc}", after=1) from None
