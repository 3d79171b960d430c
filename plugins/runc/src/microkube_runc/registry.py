"""Pulling from (and pushing to) an OCI distribution registry, into and out of an ImageStore.

The distribution API v2 over HTTP(S) with aiohttp: ``GET /v2/<repo>/manifests/<tag|digest>`` (Accept:
OCI manifest and index, Docker schema 2 manifest and list), ``GET /v2/<repo>/blobs/<digest>``; for
push, ``HEAD`` a blob, ``POST /v2/<repo>/blobs/uploads/`` then a monolithic ``PUT <location>?digest=…``,
and ``PUT /v2/<repo>/manifests/<tag>``.

Authentication follows the registry's challenge: a 401 with ``WWW-Authenticate: Bearer realm=…,
service=…, scope=…`` fetches a token from the realm (with Basic credentials when given) and retries
with it; ``Basic realm=…`` retries with Basic credentials. Every manifest and blob is verified against
its digest (and descriptor size) before it enters the store; a multi-platform index resolves to
linux/amd64. Plain HTTP is used for loopback registries (``localhost``, ``127.0.0.1``, ``[::1]``) and
hosts listed as insecure; HTTPS otherwise. ``docker.io`` is served by ``registry-1.docker.io``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import aiohttp

from microkube_interfaces import cri
from microkube_interfaces.errors import Forbidden, Invalid, NotFound, Retryable, Unauthenticated, Unsupported
from microkube_runc import images as oci
from microkube_runc import reference as refs
from microkube_runc.images import DigestMismatch, ImageStore, choose_platform, sha256_digest

ACCEPT = ", ".join([oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST])
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _credentials(auth: cri.AuthConfig | None) -> tuple[str, str] | None:
    if auth is None:
        return None
    if auth.username or auth.password:
        return auth.username, auth.password
    if auth.auth:
        try:
            user, _, password = base64.b64decode(auth.auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Invalid.field("auth.auth", "not base64 of user:password") from None
        return user, password
    return None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class RegistryClient:
    """An async client for OCI distribution registries. Use as ``async with RegistryClient() as c``."""

    def __init__(self, *, insecure: Iterable[str] = (), session: aiohttp.ClientSession | None = None,
                 timeout: float = 300.0) -> None:
        self.insecure = set(insecure)
        self._session = session
        self._own_session = session is None
        self._timeout = timeout
        #: (registry, scope) → Authorization header value.
        self._authorization: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> RegistryClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout, sock_read=60))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._session

    def base_url(self, registry: str) -> str:
        host = "registry-1.docker.io" if registry == refs.DEFAULT_REGISTRY else registry
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        plain = name in _LOOPBACK or name.startswith("127.") or registry in self.insecure or host in self.insecure
        return f"{'http' if plain else 'https'}://{host}"

    # --- requests with authentication -----------------------------------------------------------

    async def _request(self, method: str, ref: refs.Reference, path: str, *, actions: str,
                       auth: cri.AuthConfig | None, headers: dict[str, str] | None = None,
                       data: Any = None, url: str | None = None) -> aiohttp.ClientResponse:
        """Send a request, answering one authentication challenge. The caller releases the response."""
        scope = f"repository:{ref.repository}:{actions}"
        key = (ref.registry, scope)
        target = url or f"{self.base_url(ref.registry)}/v2/{ref.repository}{path}"
        for attempt in range(2):
            send_headers = dict(headers or {})
            if auth is not None and auth.registry_token:
                send_headers["Authorization"] = f"Bearer {auth.registry_token}"
            elif key in self._authorization:
                send_headers["Authorization"] = self._authorization[key]
            try:
                response = await self.session.request(method, target, headers=send_headers, data=data)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                raise Retryable(f"registry {ref.registry} unreachable: {exc or type(exc).__name__}") from exc
            if response.status != 401 or attempt == 1:
                break
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            self._authorization[key] = await self._answer(challenge, ref, scope, auth)
        if response.status == 401:
            response.release()
            raise Unauthenticated(f"registry {ref.registry} refused the credentials for {ref.repository}"
                                  if _credentials(auth) else
                                  f"registry {ref.registry} needs credentials for {ref.repository}")
        if response.status == 403:
            response.release()
            raise Forbidden(f"registry {ref.registry} forbids {actions} on {ref.repository}")
        return response

    async def _answer(self, challenge: str, ref: refs.Reference, scope: str, auth: cri.AuthConfig | None) -> str:
        scheme, params = parse_challenge(challenge)
        credentials = _credentials(auth)
        if scheme == "basic":
            if credentials is None:
                raise Unauthenticated(f"registry {ref.registry} needs credentials (Basic) for {ref.repository}")
            return _basic(*credentials)
        if scheme != "bearer" or "realm" not in params:
            raise Unsupported(f"registry {ref.registry}: unsupported authentication challenge {challenge!r}")
        if auth is not None and auth.identity_token:
            raise Unsupported("identity_token (OAuth refresh token) authentication is not supported; "
                              "use username/password or registry_token")
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": _basic(*credentials)} if credentials is not None else {}
        try:
            async with self.session.get(params["realm"], params=query, headers=headers) as response:
                if response.status in (401, 403):
                    raise Unauthenticated(f"token service {params['realm']} of registry {ref.registry} refused "
                                          f"the credentials (HTTP {response.status})")
                if response.status != 200:
                    raise Retryable(f"token service {params['realm']} answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise Retryable(f"token service {params['realm']} unreachable: {exc}") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthenticated(f"token service {params['realm']} answered without a token")
        return f"Bearer {token}"

    # --- pull -----------------------------------------------------------------------------------

    async def _fetch_manifest(self, ref: refs.Reference, selector: str,
                              auth: cri.AuthConfig | None) -> tuple[bytes, str, str]:
        """The manifest bytes, media type and verified digest for a tag or digest."""
        response = await self._request("GET", ref, f"/manifests/{selector}", actions="pull", auth=auth,
                                       headers={"Accept": ACCEPT})
        async with response:
            if response.status == 404:
                raise NotFound(f"image {str(ref)!r} not found in registry {ref.registry}")
            if response.status != 200:
                raise Retryable(f"registry {ref.registry}: GET manifest {ref.repository}:{selector} answered "
                                f"HTTP {response.status}: {(await response.text())[:200]}")
            body = await response.read()
            header_digest = response.headers.get("Docker-Content-Digest", "")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = sha256_digest(body)
        expected = selector if selector.startswith("sha256:") else header_digest
        if expected and expected.startswith("sha256:") and digest != expected:
            raise DigestMismatch(f"manifest {ref.name}@{expected} from {ref.registry}: content has digest {digest}")
        try:
            media_type = json.loads(body).get("mediaType") or content_type
        except ValueError:
            raise Invalid(f"registry {ref.registry}: manifest of {ref} is not JSON") from None
        return body, media_type, digest

    async def _fetch_blob(self, store: ImageStore, ref: refs.Reference, descriptor: dict[str, Any],
                          auth: cri.AuthConfig | None) -> None:
        digest = descriptor["digest"]
        if store.has_blob(digest):
            return
        response = await self._request("GET", ref, f"/blobs/{digest}", actions="pull", auth=auth)
        tmp = store.temp_path()
        try:
            async with response:
                if response.status == 404:
                    raise NotFound(f"blob {digest} of {ref} not found in registry {ref.registry}")
                if response.status != 200:
                    raise Retryable(f"registry {ref.registry}: GET blob {digest} answered HTTP {response.status}")
                hasher = hashlib.sha256()
                size = 0
                with open(tmp, "wb") as out:  # noqa: ASYNC230 (local disk, 1 MiB chunks)
                    async for chunk in response.content.iter_chunked(1 << 20):
                        hasher.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            actual = "sha256:" + hasher.hexdigest()
            expected_size = descriptor.get("size", -1)
            if actual != digest or (expected_size >= 0 and size != expected_size):
                raise DigestMismatch(f"blob {digest} of {ref} from {ref.registry}: content has digest {actual} "
                                     f"({size} bytes), expected {digest} ({expected_size} bytes)")
            store.commit_blob(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)

    async def pull(self, store: ImageStore, image: str, auth: cri.AuthConfig | None = None) -> str:
        """Pull ``image`` into ``store``; returns the image id. See cri.ImageService.pull_image for errors."""
        ref = refs.parse(image)
        selector = ref.digest or ref.tag
        body, media_type, top_digest = await self._fetch_manifest(ref, selector, auth)
        store.write_blob(body, top_digest, what=f"manifest of {ref}")
        manifest_digest = top_digest
        if media_type in oci.INDEX_TYPES:
            chosen = choose_platform(json.loads(body), f"image {str(ref)!r}")
            body, media_type, manifest_digest = await self._fetch_manifest(ref, chosen["digest"], auth)
            if manifest_digest != chosen["digest"]:
                raise DigestMismatch(f"manifest {chosen['digest']} of {ref}: content has digest {manifest_digest}")
            store.write_blob(body, manifest_digest, what=f"manifest of {ref}")
        if media_type not in oci.MANIFEST_TYPES:
            raise Unsupported(f"image {str(ref)!r}: manifest media type {media_type!r} is not supported")
        manifest = json.loads(body)
        descriptors = [manifest["config"], *(manifest.get("layers") or [])]
        await asyncio.gather(*(self._fetch_blob(store, ref, d, auth) for d in descriptors))
        return await asyncio.to_thread(store.register, [str(ref)], manifest_digest, top_digest)

    # --- push -----------------------------------------------------------------------------------

    async def push(self, store: ImageStore, image: str, target: str, auth: cri.AuthConfig | None = None) -> str:
        """Push ``image`` from ``store`` to the registry reference ``target``; returns the manifest digest."""
        record = await asyncio.to_thread(store.resolve_sync, image)
        ref = refs.parse(target)
        for descriptor in [record.manifest["config"], *(record.manifest.get("layers") or [])]:
            await self._push_blob(store, ref, descriptor["digest"], auth)
        body = store.read_blob(record.manifest_digest)
        media_type = record.manifest.get("mediaType") or oci.OCI_MANIFEST
        response = await self._request("PUT", ref, f"/manifests/{ref.digest or ref.tag}", actions="pull,push",
                                       auth=auth, headers={"Content-Type": media_type}, data=body)
        async with response:
            if response.status not in (200, 201):
                raise Invalid(f"registry {ref.registry}: PUT manifest {ref} answered HTTP {response.status}: "
                              f"{(await response.text())[:300]}")
        return record.manifest_digest

    async def _push_blob(self, store: ImageStore, ref: refs.Reference, digest: str,
                         auth: cri.AuthConfig | None) -> None:
        response = await self._request("HEAD", ref, f"/blobs/{digest}", actions="pull,push", auth=auth)
        async with response:
            if response.status == 200:
                return
        response = await self._request("POST", ref, "/blobs/uploads/", actions="pull,push", auth=auth)
        async with response:
            if response.status != 202:
                raise Invalid(f"registry {ref.registry}: starting an upload answered HTTP {response.status}")
            location = response.headers["Location"]
        url = location if "://" in location else f"{self.base_url(ref.registry)}{location}"
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        response = await self._request("PUT", ref, "", actions="pull,push", auth=auth, url=url,
                                       headers={"Content-Type": "application/octet-stream"},
                                       data=store.read_blob(digest))
        async with response:
            if response.status != 201:
                raise Invalid(f"registry {ref.registry}: uploading {digest} answered HTTP {response.status}: "
                              f"{(await response.text())[:300]}")
