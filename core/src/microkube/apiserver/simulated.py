"""What pods/log, pods/exec and pods/attach answer for a pod on a simulated node (``microkube
simulate``): no container runs there, so instead of an error the client gets a clear, simulated
answer — plain text for logs; for exec and attach, the Kubernetes remote-command WebSocket protocol
(v5/v4.channel.k8s.io: one byte of channel, then data; the exit status on channel 3), which is what
``kubectl exec`` 1.32 speaks."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from microkube.apiserver.status import ApiError

SIMULATED_ANNOTATION = "microkube.io/simulated"
CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, ERROR, CLOSE = 1, 3, 255


def is_simulated(node: dict[str, Any] | None) -> bool:
    annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(SIMULATED_ANNOTATION) == "true"


def _container(pod: dict[str, Any], request: web.Request) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    wanted = request.query.get("container") or (names[0] if len(names) == 1 else "")
    if not wanted:
        raise ApiError(400, "BadRequest", f"a container name must be specified for pod {pod['metadata']['name']}, "
                       f"choose one of: [{' '.join(names)}]")
    if wanted not in names + [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]:
        raise ApiError(400, "BadRequest", f"container {wanted} is not valid for pod {pod['metadata']['name']}")
    return wanted


async def answer(request: web.Request, subresource: str, pod: dict[str, Any], node: str) -> web.StreamResponse:
    meta = pod["metadata"]
    if subresource == "portforward":
        raise ApiError(400, "BadRequest", f"pod {meta['namespace']}/{meta['name']} runs on simulated node {node}: "
                       "nothing listens there, so it cannot be port-forwarded")
    container = _container(pod, request)
    where = f"container {container} of pod {meta['namespace']}/{meta['name']} on simulated node {node}"
    if subresource == "log":
        return web.Response(text=f"[microkube simulated] {where}: no process runs here, so there is no output\n",
                            content_type="text/plain")
    command = " ".join(request.query.getall("command", [])) or "(attach)"
    socket = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS)
    if not socket.can_prepare(request).ok:
        raise ApiError(400, "BadRequest", f"{subresource} on a simulated pod needs a WebSocket "
                       f"({', '.join(CHANNEL_PROTOCOLS)}) connection")
    await socket.prepare(request)
    text = f"[microkube simulated] {where}: would run {command!r}; no process runs here\n"
    await socket.send_bytes(bytes([STDOUT]) + text.encode())
    await socket.send_bytes(bytes([ERROR]) + orjson.dumps({"metadata": {}, "status": "Success"}))
    await socket.close()
    return socket
