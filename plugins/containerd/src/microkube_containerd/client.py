"""A CRI v1 gRPC client over ``grpc.aio``: one channel, unary calls, gRPC status codes as microkube errors."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]

from microkube_interfaces.criapi.convert import error_for_code
from microkube_interfaces.errors import Invalid

R = TypeVar("R")

RUNTIME = "runtime.v1.RuntimeService"
IMAGES = "runtime.v1.ImageService"


def channel_target(endpoint: str) -> str:
    """gRPC target of a CRI endpoint: ``unix:///run/x.sock``, a bare socket path, or ``host:port``."""
    if not endpoint:
        raise Invalid("endpoint: empty; give the runtime's CRI socket, e.g. unix:///run/containerd/containerd.sock")
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    if endpoint.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return endpoint
    if endpoint.startswith(("http://", "https://", "tcp://")):
        return endpoint.split("://", 1)[1]
    return endpoint


class CriClient:
    """Calls ``/<service>/<method>`` with a request message and decodes ``response``; errors as microkube's."""

    def __init__(self, endpoint: str, *, timeout: float = 120.0) -> None:
        self.target = channel_target(endpoint)
        self.timeout = timeout
        self._channel: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[str, Any] = {}

    def _get_channel(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # A grpc.aio channel belongs to the loop that made it; a new loop (a new test) gets a new one.
            self._channel = grpc.aio.insecure_channel(
                self.target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
            self._loop = loop
            self._calls = {}
        return self._channel

    async def call(self, service: str, method: str, request: Message, response: type[R],
                   timeout: float | None = None) -> R:  # noqa: ASYNC109 (a gRPC deadline)
        channel = self._get_channel()
        path = f"/{service}/{method}"
        stub = self._calls.get(path)
        if stub is None:
            stub = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response.FromString)  # type: ignore[attr-defined]
            self._calls[path] = stub
        try:
            result: R = await stub(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(exc.code().name, f"{method}: {exc.details() or exc.code().name}") from None
        return result

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            try:
                await channel.close()
            except RuntimeError:
                pass  # its loop is gone
