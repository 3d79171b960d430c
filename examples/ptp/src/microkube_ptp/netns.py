"""Network namespaces without forking: a throwaway thread enters the pod's namespace with ``setns``.

A Linux thread, not the process, belongs to a network namespace, and a netlink socket belongs to the namespace of
the thread that opened it. So one short-lived thread opens a socket in the host namespace, ``setns``-es into the
pod's, opens a second socket there, and drives both; it exits afterwards, since a thread stays in the namespace it
entered (never do this on a pool thread). Python 3.11 has no ``os.setns``, hence ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from microkube_interfaces.cni import CNIError, ErrorCode

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # ioctl: which kind of namespace a /proc/<pid>/ns/* file (or a bind mount of one) is
_libc = ctypes.CDLL(None, use_errno=True)


def open_netns(path: str) -> int:
    """An fd of the network namespace at ``path``; ``CNIError(UNKNOWN_CONTAINER)`` when there is none."""
    if not path:
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "no network namespace given", "CNI_NETNS is empty")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, f"cannot open the network namespace {path}",
                       exc.strerror or str(exc)) from None
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = 0
    if kind != _CLONE_NEWNET:
        os.close(fd)
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, f"{path} is not a network namespace",
                       "CNI_NETNS must be a netns file such as /run/netns/<name> or /proc/<pid>/ns/net")
    return fd


def enter_netns(fd: int) -> None:
    """Move the calling thread into the namespace ``fd`` (call only from a thread made by ``in_thread``)."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "cannot enter the network namespace", os.strerror(code))


def in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a new thread that ends with it; the result (or exception) as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=run, name="microkube-ptp-netns", daemon=True).start()
    return future
