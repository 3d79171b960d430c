"""A container's output: CRI-format logs (``<RFC3339Nano> stdout|stderr F|P <text>`` per line) and the
attached clients that also receive it.

A ``CriLog`` is shared by the pumps of a container (stdout and stderr pipes, or one terminal), all on one
event loop; ``reopen`` makes the next line go to a freshly opened file (after the node agent rotated it).
Lines longer than ``MAX_LINE`` bytes are split into ``P`` (partial) records, as containerd does.
``Taps`` hands the same bytes to attached clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from typing import IO

MAX_LINE = 16 * 1024


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds, UTC (``2026-11-23T15:10:31.660170082Z``)."""
    ns = time.time_ns() if ns is None else ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class CriLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open for the container's life)

    def write(self, stream: str, line: bytes, full: bool) -> None:
        if self._handle is None:
            return
        record = f"{timestamp()} {stream} {'F' if full else 'P'} ".encode() + line + b"\n"
        try:
            self._handle.write(record)
        except OSError:
            pass

    def reopen(self) -> None:
        if not self.path:
            return
        old = self._handle
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None


#: Chunks queued for one attached client that stopped reading; past it the client misses output (the
#: container is never slowed down by an attachment).
TAP_BACKLOG = 256


class Taps:
    """The attached clients of one container: each subscription gets every chunk of one stream, then ``b""``."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {"stdout": set(), "stderr": set()}
        self._ended: set[str] = set()

    def subscribe(self, stream: str) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(TAP_BACKLOG)
        if stream in self._ended:
            queue.put_nowait(b"")
        else:
            self._subscribers[stream].add(queue)
        return queue

    def unsubscribe(self, stream: str, queue: asyncio.Queue[bytes]) -> None:
        self._subscribers[stream].discard(queue)

    def publish(self, stream: str, chunk: bytes) -> None:
        for queue in self._subscribers[stream]:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(chunk)

    def end(self, stream: str) -> None:
        self._ended.add(stream)
        for queue in self._subscribers[stream]:
            if queue.full():  # the end must arrive even behind a full backlog
                queue.get_nowait()
            queue.put_nowait(b"")
        self._subscribers[stream] = set()


def read_chunk(fd: int, n: int = 65536) -> bytes:
    """``os.read`` where a terminal's master reports its closed other side (EIO) as end of file."""
    try:
        return os.read(fd, n)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return b""
        raise


async def pump(fd: int, stream: str, log: CriLog, taps: Taps | None = None) -> None:
    """Read ``fd`` (a pipe's read end or a terminal's master, owned and closed here) to end of file, writing
    CRI records and handing each chunk to ``taps``."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    buffer = b""
    readable = asyncio.Event()

    def on_readable() -> None:
        readable.set()

    loop.add_reader(fd, on_readable)
    try:
        while True:
            try:
                chunk = read_chunk(fd)
            except BlockingIOError:
                readable.clear()
                await readable.wait()
                continue
            if not chunk:
                break
            if taps is not None:
                taps.publish(stream, chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                while len(line) > MAX_LINE:
                    log.write(stream, line[:MAX_LINE], False)
                    line = line[MAX_LINE:]
                log.write(stream, line, True)
            while len(buffer) > MAX_LINE:
                log.write(stream, buffer[:MAX_LINE], False)
                buffer = buffer[MAX_LINE:]
        if buffer:
            log.write(stream, buffer, True)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        if taps is not None:
            taps.end(stream)
