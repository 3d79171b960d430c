"""Reading CRI container log files for ``GET /containerLogs``.

A CRI log file holds one record per line, ``<RFC3339Nano> <stdout|stderr> <F|P> <text>``; ``P`` (partial)
records continue on the next record up to an ``F`` (full) one, which ends the line. The kubelet API answers
the text only, optionally prefixed with each line's timestamp (Go's RFC3339Nano: trailing zeros of the
fraction trimmed, as ``kubectl logs --timestamps`` shows them), filtered by ``sinceTime``/``sinceSeconds``,
cut to the last ``tailLines`` lines and to ``limitBytes`` bytes. ``follow`` keeps reading until the container
instance has exited and its log is drained; when the runtime rotates the file (the node agent renames
``N.log`` away and asks the runtime to reopen it) the reader finishes the old file and continues in the new one.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from microkube_interfaces import errors

#: How often a follower looks for new data, rotation and the container's exit.
POLL_INTERVAL = 0.1
RUNNING_CHECK_INTERVAL = 0.5
_BLOCK = 65536


@dataclass(frozen=True)
class Record:
    time_ns: int
    stream: str
    partial: bool
    content: bytes


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    #: Only records at or after this time (nanoseconds since the epoch).
    since_ns: int | None = None
    previous: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str], now_ns: int | None = None) -> LogOptions:
        """The options of a ``/containerLogs`` (or ``pods/log``) query; errors.Invalid names a bad parameter."""
        since_ns: int | None = None
        if "sinceSeconds" in query and "sinceTime" in query:
            raise errors.Invalid.field("sinceSeconds", "at most one of sinceTime or sinceSeconds may be specified")
        if "sinceSeconds" in query:
            seconds = _int(query, "sinceSeconds", minimum=1)
            since_ns = (time.time_ns() if now_ns is None else now_ns) - seconds * 1_000_000_000
        elif "sinceTime" in query:
            since_ns = parse_time(query["sinceTime"], "sinceTime")
        tail = _int(query, "tailLines", minimum=0) if "tailLines" in query else None
        limit = _int(query, "limitBytes", minimum=1) if "limitBytes" in query else None
        return cls(follow=_bool(query, "follow"), timestamps=_bool(query, "timestamps"), tail_lines=tail,
                   limit_bytes=limit, since_ns=since_ns, previous=_bool(query, "previous"))


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise errors.Invalid.field(name, f"must be true or false, not {query[name]!r}")


def _int(query: Mapping[str, str], name: str, minimum: int) -> int:
    try:
        value = int(query[name])
    except ValueError:
        raise errors.Invalid.field(name, f"must be an integer, not {query[name]!r}") from None
    if value < minimum:
        raise errors.Invalid.field(name, f"must be greater than or equal to {minimum}, not {value}")
    return value


def parse_time(text: str, field: str = "time") -> int:
    """An RFC 3339 time (any fraction, ``Z`` or an offset) as nanoseconds since the epoch."""
    try:
        main, fraction, zone = text, "", ""
        if text.endswith(("Z", "z")):
            main, zone = text[:-1], "+00:00"
        elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
            main, zone = text[:-6], text[-6:]
        if "." in main:
            main, fraction = main.split(".", 1)
            if not fraction.isdigit():
                raise ValueError(text)
        parsed = datetime.datetime.fromisoformat(main + (zone or "+00:00"))
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
        return calendar.timegm(parsed.utctimetuple()) * 1_000_000_000 + nanos
    except (ValueError, IndexError):
        raise errors.Invalid.field(field, f"must be an RFC 3339 time like 2024-01-02T15:04:05Z, not {text!r}") from None


def format_time(ns: int) -> str:
    """RFC3339Nano as Go writes it: UTC, ``Z``, the fraction without trailing zeros."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def parse_record(line: bytes) -> Record | None:
    """One CRI log line (without its newline), or None when it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    try:
        ns = _record_time(parts[0].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return Record(ns, parts[1].decode("ascii", "replace"), parts[2] == b"P", parts[3] if len(parts) > 3 else b"")


def _record_time(text: str) -> int:
    # The runtime's own fixed format first (fast); anything else through the general parser.
    if len(text) == 30 and text[19] == "." and text[-1] == "Z":
        base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
        return base * 1_000_000_000 + int(text[20:29])
    try:
        return parse_time(text)
    except errors.Invalid:
        raise ValueError(text) from None


class _Writer:
    """Formats records into output bytes: timestamps at line starts, the byte limit."""

    def __init__(self, options: LogOptions, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.options = options
        self.write = write
        self.remaining = options.limit_bytes
        self.line_start = True

    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    async def record(self, record: Record) -> None:
        if self.options.since_ns is not None and record.time_ns < self.options.since_ns:
            return
        out = record.content if record.partial else record.content + b"\n"
        if self.options.timestamps and self.line_start:
            out = format_time(record.time_ns).encode() + b" " + out
        self.line_start = not record.partial
        if self.remaining is not None:
            out = out[: self.remaining]
            self.remaining -= len(out)
        if out:
            await self.write(out)


def tail_offset(fd: int, size: int, lines: int) -> int:
    """The file offset where the last ``lines`` lines (ended by F records) begin."""
    if lines <= 0:
        return size
    position, rest, full_seen = size, b"", 0
    while position > 0:
        start = max(0, position - _BLOCK)
        block = os.pread(fd, position - start, start) + rest
        chunks = block.split(b"\n")
        # ``rest`` ends in its newline, so the last chunk is b"" or an unfinished record: never counted.
        newline_at = start + len(block) - len(chunks.pop()) - 1
        # The first chunk may be cut by the block boundary: it is counted with the next block.
        for chunk in reversed(chunks if start == 0 else chunks[1:]):
            record = parse_record(chunk)
            if record is not None and not record.partial:
                full_seen += 1
                if full_seen > lines:
                    return newline_at + 1
            newline_at -= len(chunk) + 1
        rest, position = (chunks[0] + b"\n" if chunks else b""), start
    return 0


async def stream_log(path: str, options: LogOptions, write: Callable[[bytes], Awaitable[None]],
                     running: Callable[[], Awaitable[bool]]) -> None:
    """Write the log at ``path`` through ``write`` as ``options`` ask; with ``follow``, until ``running``
    answers False and everything written so far was read (across rotations of ``path``)."""
    out = _Writer(options, write)
    fd = await _open(path, options.follow, running)
    if fd is None:
        return
    try:
        position = 0
        if options.tail_lines is not None:
            position = tail_offset(fd, os.fstat(fd).st_size, options.tail_lines)
        buffer = b""
        last_check = 0.0
        stopping = False
        while not out.done():
            chunk = os.pread(fd, _BLOCK, position)
            if chunk:
                position += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    record = parse_record(line)
                    if record is not None:
                        await out.record(record)
                        if out.done():
                            return
                continue
            if not options.follow:
                return
            rotated = _rotated(fd, path, position)
            if rotated is not None:  # the old file is drained: go on in the new one
                os.close(fd)
                fd, position, buffer = rotated, 0, b""
                continue
            if stopping:
                return
            now = time.monotonic()
            if now - last_check >= RUNNING_CHECK_INTERVAL:
                last_check = now
                if not await running():
                    stopping = True  # one more pass: what was written before the exit
                    continue
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        os.close(fd)


async def _open(path: str, follow: bool, running: Callable[[], Awaitable[bool]]) -> int | None:
    while True:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not follow or not await running():
                return None
        await asyncio.sleep(POLL_INTERVAL)


def _rotated(fd: int, path: str, position: int) -> int | None:
    """A descriptor of the file now at ``path`` when it is no longer the one ``fd`` reads, or when ``fd``'s
    file was truncated under the reader; None otherwise."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    mine = os.fstat(fd)
    if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
        if mine.st_size < position:  # truncated in place (copytruncate)
            return os.dup(fd)
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
