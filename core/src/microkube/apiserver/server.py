"""The API server: assembles plugins, store, watch cache and HTTP handlers, and serves HTTPS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from microkube.apiserver.allocators import ServiceAllocator
from microkube.apiserver.catalog import ResourceCatalog
from microkube.apiserver.crds import CustomResources
from microkube.apiserver.handlers import Handlers
from microkube.apiserver.lifecycle import Lifecycle
from microkube.apiserver.metrics import Metrics
from microkube.apiserver.objects import ObjectStore, WriteOptions
from microkube.apiserver.openapi import OpenAPIDocuments
from microkube.apiserver.status import ApiError
from microkube.apiserver.subresources import Subresources
from microkube.apiserver.tokens import TokenIssuer
from microkube.apiserver.watchcache import WatchCache
from microkube.plugins import Plugins
from microkube_interfaces.auth import UserInfo
from microkube_interfaces.hookspecs import ServerSettings
from microkube_interfaces.store import Store

log = logging.getLogger(__name__)

SYSTEM_USER = UserInfo("system:apiserver", groups=("system:masters",))
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
#: Largest request body accepted (Kubernetes allows 3 MiB objects; leave room for encoding overhead).
MAX_BODY = 4 * 1024 * 1024


class APIServer:
    def __init__(
        self,
        *,
        plugins: Plugins,
        store: Store,
        settings: ServerSettings,
        sa_key_path: Path,
        host: str = "127.0.0.1",
        port: int = 6443,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.plugins = plugins
        self.store = store
        self.settings = settings
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.catalog = ResourceCatalog()
        for registration in plugins.resource_types(settings):
            self.catalog.add(registration.resource, registration.strategy)
        self.cache = WatchCache(store)
        self.objects = ObjectStore(store, self.cache, plugins.admission_plugins(settings))
        self.objects.before_write[("", "Service")] = ServiceAllocator(self.cache).allocate
        # authenticators that look objects up (bootstrap tokens) read them here, not over HTTP
        settings.options.setdefault("object_reader", self.objects)
        self.authenticators = plugins.authenticators(settings)
        self.authorizer = plugins.authorizer(settings)
        self.token_issuer = TokenIssuer(sa_key_path)
        self.metrics = Metrics()
        self.handlers = Handlers(self)
        self.subresources = Subresources(self)
        self.custom_resources = CustomResources(self)
        self.lifecycle = Lifecycle(self)
        self._openapi: OpenAPIDocuments | None = None
        self._openapi_generation = -1
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def advertise_address(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def openapi_documents(self) -> OpenAPIDocuments:
        if self._openapi is None or self._openapi_generation != self.catalog.generation:
            resources = [served.resource for served in self.catalog]
            if self._openapi is None:
                self._openapi = OpenAPIDocuments(resources)
            else:
                self._openapi.update(resources)
            self._openapi_generation = self.catalog.generation
        return self._openapi

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handlers.handle)
        return app

    async def start(self) -> None:
        await self.cache.start()
        self.custom_resources.start()
        self.lifecycle.start()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context, backlog=1024,
                           reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        await self._ensure_namespaces()
        log.info("API server listening on %s", self.url)

    async def _ensure(self, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        served = self.catalog.get("", "v1", plural)
        if served is None or await self.store.get(served.key(namespace, obj["metadata"]["name"])) is not None:
            return
        try:
            await self.objects.create(served, namespace, obj, WriteOptions(user=SYSTEM_USER))
        except ApiError as exc:
            if exc.code != 409:
                raise

    async def _ensure_namespaces(self) -> None:
        """The namespaces every cluster has, and the `kubernetes` Service that points at this server."""
        for name in INITIAL_NAMESPACES:
            await self._ensure("namespaces", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        await self._ensure("services", "default", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ServiceAllocator.API_SERVICE_IP, "ports": [
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}]}})
        await self._ensure("endpoints", "default", {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": self.advertise_address}],
                         "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}]})

    async def stop(self) -> None:
        await self.lifecycle.stop()
        await self.custom_resources.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.cache.stop()

    async def __aenter__(self) -> APIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def wait_forever(stop: asyncio.Event) -> None:
    await stop.wait()
