"""Terminals and raw descriptors for exec and attach.

A tty exec runs ``runc exec --tty`` in the foreground with a pty pair of ours as its stdio: runc copies
between that and the terminal it makes inside the container, and resizes the inner terminal to ours on
SIGWINCH. A tty container's terminal master arrives from ``runc create --console-socket``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
import tty

from microkube_runc.logs import read_chunk


def open_pty() -> tuple[int, int]:
    """A new pty pair (master non-blocking, slave raw so nothing we write is echoed or translated)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave


def set_size(fd: int, width: int, height: int) -> None:
    """Set the window size (columns, rows) of the terminal behind ``fd``."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(0, height), max(0, width), 0, 0))


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def read_fd(fd: int, n: int = 65536) -> bytes:
    """Up to ``n`` bytes from a non-blocking ``fd``; ``b""`` at end of file (EIO of a terminal master)."""
    while True:
        try:
            return read_chunk(fd, n)
        except BlockingIOError:
            await _ready(fd, write=False)


async def write_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a non-blocking ``fd``."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _ready(fd, write=True)


async def receive_fd(listener: socket.socket) -> int:
    """Accept one connection on a console socket and return the descriptor it sends (SCM_RIGHTS)."""
    loop = asyncio.get_running_loop()
    connection, _ = await loop.sock_accept(listener)
    with connection:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
            except BlockingIOError:
                await _ready(connection.fileno(), write=False)
                continue
            if not fds:
                raise OSError("the console socket closed without sending a terminal")
            return fds[0]
