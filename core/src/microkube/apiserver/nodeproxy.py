"""pods/log, pods/exec, pods/attach and pods/portforward for pods on real nodes: the API server relays
the request to the node's kubelet API.

The kubelet is found through its Node: the first InternalIP address (else the Hostname) and
``status.daemonEndpoints.kubeletEndpoint.Port``. The connection is HTTPS, the kubelet's serving
certificate verified against the cluster CA (its SANs carry the node's addresses), and the API server
presents its kubelet client certificate (CN=kube-apiserver-kubelet-client, O=system:masters, see pki.py).
Logs stream through as they come (``follow`` ends when the client goes away); exec, attach and
port-forward are WebSocket sessions relayed message by message with the subprotocol the client chose.
A kubelet's error Status is passed through with its code; an unreachable kubelet is a 503 naming the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from microkube.apiserver import simulated
from microkube.apiserver.pki import kubelet_client_credentials
from microkube.apiserver.status import ApiError
from microkube_interfaces import errors

CONNECT_TIMEOUT = 10.0
#: Query parameters the API server consumes itself.
_OWN_PARAMETERS = frozenset({"container", "pretty", "insecureSkipTLSVerifyBackend"})
_contexts: dict[Path, ssl.SSLContext] = {}


def kubelet_ssl_context(pki_dir: Path) -> ssl.SSLContext:
    """The client TLS context towards kubelets (cached per PKI directory)."""
    context = _contexts.get(pki_dir)
    if context is None:
        try:
            ca, cert, key = kubelet_client_credentials(pki_dir)
        except errors.MicrokubeError as exc:
            raise ApiError(500, "InternalError", f"the API server has no kubelet client certificate: {exc}") from None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.load_cert_chain(cert, key)
        _contexts[pki_dir] = context
    return context


def kubelet_endpoint(node: dict[str, Any]) -> tuple[str, int]:
    """(address, port) of the node's kubelet API, or an ApiError naming what the Node lacks."""
    name = (node.get("metadata") or {}).get("name", "")
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    host = next((a.get("address", "") for a in addresses if a.get("type") == "InternalIP" and a.get("address")), "")
    host = host or next((a.get("address", "") for a in addresses if a.get("type") == "Hostname"
                         and a.get("address")), "")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
    if not host:
        raise ApiError(503, "ServiceUnavailable", f"node {name} has no InternalIP or Hostname address in "
                       "status.addresses: its kubelet cannot be reached")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ApiError(503, "ServiceUnavailable", f"node {name} has no kubelet port in "
                       "status.daemonEndpoints.kubeletEndpoint.Port: its kubelet cannot be reached")
    return host, port


def kubelet_path(subresource: str, pod: dict[str, Any], request: web.Request) -> str:
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if subresource == "portforward":
        return f"/portForward/{namespace}/{name}"
    container = simulated._container(pod, request)
    verb = {"log": "containerLogs", "exec": "exec", "attach": "attach"}[subresource]
    return f"/{verb}/{namespace}/{name}/{container}"


async def forward(request: web.Request, subresource: str, pod: dict[str, Any], node: dict[str, Any],
                  pki_dir: Path) -> web.StreamResponse:
    """Relay one pods/{log,exec,attach,portforward} request to the kubelet of ``node``."""
    phase = (pod.get("status") or {}).get("phase")
    if subresource in ("exec", "attach", "portforward") and phase in ("Succeeded", "Failed"):
        raise ApiError(400, "BadRequest", f"cannot {subresource} into a container in a completed pod; "
                       f"current phase is {phase}")
    host, port = kubelet_endpoint(node)
    node_name = node["metadata"]["name"]
    path = kubelet_path(subresource, pod, request)
    query = [(k, v) for k, v in request.query.items() if k not in _OWN_PARAMETERS]
    url = URL.build(scheme="https", host=host, port=port, path=path, query=query)
    context = kubelet_ssl_context(pki_dir)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
    where = f"the kubelet of node {node_name} at {host}:{port}"
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await _relay_websocket(request, session, url, context)
            if subresource == "log":
                return await _relay_log(request, session, url, context)
            return await _relay_plain(request, session, url, context)
        except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError, aiohttp.ServerDisconnectedError,
                TimeoutError, aiohttp.ClientOSError) as exc:
            raise ApiError(503, "ServiceUnavailable", f"cannot reach {where}: {exc}") from None


def _passthrough(status: int, body: bytes, content_type: str) -> web.Response:
    return web.Response(status=status, body=body, content_type=content_type or "application/json")


async def _relay_plain(request: web.Request, session: aiohttp.ClientSession, url: URL,
                       context: ssl.SSLContext) -> web.StreamResponse:
    async with session.request(request.method, url, ssl=context, data=await request.read()) as upstream:
        return _passthrough(upstream.status, await upstream.read(), upstream.content_type)


async def _relay_log(request: web.Request, session: aiohttp.ClientSession, url: URL,
                     context: ssl.SSLContext) -> web.StreamResponse:
    async with session.get(url, ssl=context) as upstream:
        if upstream.status != 200:
            return _passthrough(upstream.status, await upstream.read(), upstream.content_type)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def copy() -> None:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)

        async def client_gone() -> None:
            # No event tells a handler that its client left: look at the transport now and then.
            while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.5)

        tasks = [asyncio.create_task(copy()), asyncio.create_task(client_gone())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ConnectionError, RuntimeError):
            if tasks[0] in done and tasks[0].exception() is None:
                await response.write_eof()
        return response


async def _relay_websocket(request: web.Request, session: aiohttp.ClientSession, url: URL,
                           context: ssl.SSLContext) -> web.StreamResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        upstream = await session.ws_connect(url, protocols=offered, ssl=context, max_msg_size=0, autoping=True)
    except aiohttp.WSServerHandshakeError:
        # The kubelet refused the upgrade: ask again without it to get its Status (it checks everything
        # before upgrading and runs nothing for a plain request).
        async with session.get(url, ssl=context) as plain:
            return _passthrough(plain.status, await plain.read(), plain.content_type)
    async with upstream:
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0)
        await client.prepare(request)

        async def pump(source: Any, target: Any) -> None:
            async for message in source:
                if message.type == WSMsgType.BINARY:
                    await target.send_bytes(message.data)
                elif message.type == WSMsgType.TEXT:
                    await target.send_str(message.data)
                elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break

        tasks = [asyncio.create_task(pump(client, upstream)), asyncio.create_task(pump(upstream, client))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await upstream.close()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.close()
        return client
