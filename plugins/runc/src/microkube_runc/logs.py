"""CRI-format container logs: ``<RFC3339Nano> stdout|stderr F|P <text>`` per line.

A ``CriLog`` is shared by the two pumps of a container (stdout and stderr pipes), all on one event loop;
``reopen`` makes the next line go to a freshly opened file (after the node agent rotated it).
Lines longer than ``MAX_LINE`` bytes are split into ``P`` (partial) records, as containerd does.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def pump(fd: int, stream: str, log: CriLog) -> None:
    """Read ``fd`` (a pipe's read end, owned and closed here) to end of file, writing CRI records."""
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
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                readable.clear()
                await readable.wait()
                continue
            if not chunk:
                break
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
