"""Terminals and raw descriptors for exec and attach.

A tty exec runs ``runc exec --tty`` in the foreground with a pty pair of ours as its stdio: runc copies
between that and the terminal it makes inside the container, and resizes the inner terminal to ours on
SIGWINCH. A tty container's terminal master arrives from ``runc create --console-socket``. A holder process
keeps copies of a container's output descriptors so that they outlive a restart of the node agent.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import shutil
import socket
import struct
import termios
import tty
from collections.abc import Sequence

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


_SYS_PIDFD_GETFD = 438  # the same number on every architecture (allocated after the syscall tables merged)


def hold(fds: Sequence[int]) -> int:
    """Start a holder: an idle process (``sleep infinity``) with its own copies of ``fds`` at the same numbers,
    in a session of its own. It keeps a container's stdout and stderr pipes readable (a write while the node
    agent restarts is buffered, then waits, instead of failing with EPIPE) and a tty container's terminal
    master open (its last close would hang the terminal up), and ``take_back`` fetches a copy again. Returns
    its pid."""
    sleep = shutil.which("sleep") or "/bin/sleep"
    quiet = [(os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0) for n in (0, 1, 2)]
    # posix_spawn, not subprocess: the holder is reaped by whoever removes the container (``os.waitpid``), and a
    # Popen object would warn when collected with its process still running. Child processes made meanwhile by
    # other threads close every descriptor but their stdio, so briefly inheritable is safe.
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(sleep, [sleep, "infinity"], os.environ, file_actions=quiet, setsid=True)
    finally:
        for fd in fds:
            os.set_inheritable(fd, False)


def take_back(pid: int, fd: int) -> int:
    """A descriptor of this process for descriptor ``fd`` of process ``pid`` (pidfd_getfd; root)."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        got = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
        if got < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"pidfd_getfd of fd {fd} of pid {pid}: {os.strerror(code)}")
        os.set_inheritable(got, False)
        return got
    finally:
        os.close(pidfd)
