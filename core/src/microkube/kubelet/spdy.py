"""SPDY/3.1 framing and a server-side session, enough for Kubernetes port-forward.

Wire format (draft-mbelshe-httpbis-spdy-00 / SPDY 3.1): every frame has an 8-byte header. Control
frames: ``1 | version(15) | type(16) | flags(8) | length(24)``; data frames:
``0 | stream id(31) | flags(8) | length(24)``. Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are
``count(32)`` then ``len(32) name len(32) value`` pairs (several values joined by NUL), compressed with
one zlib stream per direction for the whole session, primed with the SPDY/3 dictionary and flushed
(Z_SYNC_FLUSH) after each block. Clients use odd stream ids, servers even ones.

Flow control (3.1): each stream and the session start with a 64 KiB send window, DATA consumes it,
WINDOW_UPDATE (per stream, or stream 0 for the session) refills it. Go's spdystream, which kubectl uses,
neither sends nor honours WINDOW_UPDATE, so a Session enforces its send windows only once the peer has
shown that it does flow control (sent a WINDOW_UPDATE or an initial-window SETTINGS); it always
acknowledges what it received with WINDOW_UPDATEs, which spdystream ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
SETTINGS_INITIAL_WINDOW_SIZE = 7
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 1, 2, 3, 5, 6, 7
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1
INITIAL_WINDOW = 65536
MAX_DATA = (1 << 24) - 1
#: Largest DATA payload this side sends in one frame.
CHUNK = 32768

# The SPDY/3 header-compression dictionary: length-prefixed words, then a raw tail (a fact of the format).
_WORDS = [
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
    "set-cookie", "keep-alive", "origin",
]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3."""


# --- frames ---------------------------------------------------------------------------------------

Headers = dict[str, list[str]]


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_id: int = 0
    priority: int = 0


@dataclass
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_stream_id: int
    status: int = GOAWAY_OK


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass
class Data:
    stream_id: int
    data: bytes
    flags: int = 0


Frame = SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate | Data


def encode_header_block(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        key = name.lower().encode()
        value = "\0".join(values).encode()
        out.append(struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value)
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    try:
        headers: Headers = {}
        (count,), offset = struct.unpack_from(">I", block), 4
        for _ in range(count):
            (length,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4: offset + 4 + length].decode().lower()
            offset += 4 + length
            (length,) = struct.unpack_from(">I", block, offset)
            value = block[offset + 4: offset + 4 + length].decode()
            offset += 4 + length
            headers.setdefault(name, []).extend(value.split("\0"))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed header block: {exc}") from None
    if offset != len(block):
        raise ProtocolError("header block has trailing bytes")
    return headers


class Framer:
    """Encodes frames and decodes a byte stream into frames, with the session's two zlib contexts."""

    def __init__(self) -> None:
        self._compress = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                          DICTIONARY)
        self._decompress = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()

    def _headers_out(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._compress.compress(block) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def _headers_in(self, data: bytes) -> Headers:
        try:
            block = self._decompress.decompress(data)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        return decode_header_block(block)

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            if len(frame.data) > MAX_DATA:
                raise ValueError("DATA payload too large")
            return struct.pack(">II", frame.stream_id & 0x7FFFFFFF, (frame.flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            head = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
            return self._control(SYN_STREAM, frame.flags, head + self._headers_out(frame.headers))
        if isinstance(frame, SynReply):
            return self._control(SYN_REPLY, frame.flags, struct.pack(">I", frame.stream_id)
                                 + self._headers_out(frame.headers))
        if isinstance(frame, HeadersFrame):
            return self._control(HEADERS, frame.flags, struct.pack(">I", frame.stream_id)
                                 + self._headers_out(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | ident, value) for flags, ident, value in frame.entries)
            return self._control(SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return self._control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(GOAWAY, 0, struct.pack(">II", frame.last_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data`` (partial frames wait for more bytes)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8: 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if not first & 0x80000000:
                frames.append(Data(first & 0x7FFFFFFF, payload, flags))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise ProtocolError(f"SPDY version {version} is not supported (only 3)")
            frame = self._control_frame(kind, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _control_frame(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        try:
            if kind == SYN_STREAM:
                stream_id, associated, priority = struct.unpack_from(">IIB", payload)
                return SynStream(stream_id & 0x7FFFFFFF, self._headers_in(payload[10:]), flags,
                                 associated & 0x7FFFFFFF, priority >> 5)
            if kind in (SYN_REPLY, HEADERS):
                (stream_id,) = struct.unpack_from(">I", payload)
                cls = SynReply if kind == SYN_REPLY else HeadersFrame
                return cls(stream_id & 0x7FFFFFFF, self._headers_in(payload[4:]), flags)
            if kind == RST_STREAM:
                stream_id, status = struct.unpack_from(">II", payload)
                return RstStream(stream_id & 0x7FFFFFFF, status)
            if kind == SETTINGS:
                (count,) = struct.unpack_from(">I", payload)
                entries = []
                for i in range(count):
                    word, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                    entries.append((word >> 24, word & 0xFFFFFF, value))
                return Settings(entries, flags)
            if kind == PING:
                return Ping(struct.unpack_from(">I", payload)[0])
            if kind == GOAWAY:
                last, status = struct.unpack_from(">II", payload) if len(payload) >= 8 else (
                    struct.unpack_from(">I", payload)[0], GOAWAY_OK)
                return GoAway(last & 0x7FFFFFFF, status)
            if kind == WINDOW_UPDATE:
                stream_id, delta = struct.unpack_from(">II", payload)
                return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error as exc:
            raise ProtocolError(f"short control frame of type {kind}: {exc}") from None
        return None  # unknown control frame types are ignored, as the spec asks


# --- session --------------------------------------------------------------------------------------


class Stream:
    """One SPDY stream the peer opened: its headers, received data, and a writer."""

    def __init__(self, session: Session, stream_id: int, headers: Headers, remote_closed: bool) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.remote_closed = remote_closed
        self.local_closed = False
        self.reset = False
        self.send_window = session.initial_send_window
        self._window_open = asyncio.Event()
        self._window_open.set()
        if remote_closed:
            self._incoming.put_nowait(b"")

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower()) or [""]
        return values[0]

    async def read(self) -> bytes:
        """The next received bytes; b"" once the peer finished (FIN) or reset the stream."""
        data = await self._incoming.get()
        if data:
            await self.session._consumed(self, len(data))
        else:
            self._incoming.put_nowait(b"")  # stay at end of stream for later readers
        return data

    async def write(self, data: bytes, fin: bool = False) -> None:
        if self.local_closed or self.reset:
            raise ConnectionError(f"SPDY stream {self.id} is closed")
        view = memoryview(data)
        while view:
            size = await self.session._reserve(self, min(len(view), CHUNK))
            chunk, view = bytes(view[:size]), view[size:]
            await self.session._send(Data(self.id, chunk, FLAG_FIN if fin and not view else 0))
        if fin:
            self.local_closed = True
            if not data:
                await self.session._send(Data(self.id, b"", FLAG_FIN))
            self.session._maybe_forget(self)

    async def close(self) -> None:
        """Half-close: send FIN (idempotent)."""
        if not self.local_closed and not self.reset:
            self.local_closed = True
            await self.session._send(Data(self.id, b"", FLAG_FIN))
            self.session._maybe_forget(self)

    async def send_reset(self, status: int = CANCEL) -> None:
        if not self.reset:
            self._on_reset()
            await self.session._send(RstStream(self.id, status))

    def _on_reset(self) -> None:
        self.reset = True
        self.remote_closed = self.local_closed = True
        self._incoming.put_nowait(b"")
        self._window_open.set()
        self.session.streams.pop(self.id, None)


class Session:
    """The server side of one SPDY/3.1 connection. ``send`` writes bytes to the transport; ``on_stream``
    runs (as a task) for every stream the peer opens, after the session replied to it."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]],
                 on_stream: Callable[[Stream], Coroutine[Any, Any, None]]) -> None:
        self._send_bytes = send
        self._on_stream = on_stream
        self.framer = Framer()
        self.streams: dict[int, Stream] = {}
        self.initial_send_window = INITIAL_WINDOW
        self.session_window = INITIAL_WINDOW
        self._session_window_open = asyncio.Event()
        self._session_window_open.set()
        self.peer_flow_control = False
        self._last_peer_stream = 0
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def _send(self, frame: Frame) -> None:
        async with self._write_lock:  # the header compressor is stateful: encode and send in order
            if self.closed:
                raise ConnectionError("SPDY session closed")
            await self._send_bytes(self.framer.encode(frame))

    async def feed(self, data: bytes) -> None:
        """Process bytes from the transport. Raises ProtocolError (after sending GOAWAY) on garbage."""
        try:
            frames = self.framer.feed(data)
        except ProtocolError:
            with contextlib.suppress(ConnectionError):
                await self._send(GoAway(self._last_peer_stream, GOAWAY_PROTOCOL_ERROR))
            raise
        for frame in frames:
            await self._handle(frame)

    async def _handle(self, frame: Frame) -> None:
        if isinstance(frame, SynStream):
            if frame.stream_id % 2 == 0 or frame.stream_id <= self._last_peer_stream:
                await self._send(RstStream(frame.stream_id, PROTOCOL_ERROR))
                return
            self._last_peer_stream = frame.stream_id
            stream = Stream(self, frame.stream_id, frame.headers, bool(frame.flags & FLAG_FIN))
            self.streams[frame.stream_id] = stream
            await self._send(SynReply(frame.stream_id, {}))
            task = asyncio.create_task(self._on_stream(stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(frame, Data):
            target = self.streams.get(frame.stream_id)
            if target is None or target.remote_closed:
                if frame.stream_id and target is None:
                    await self._send(RstStream(frame.stream_id, INVALID_STREAM))
                return
            if frame.data:
                target._incoming.put_nowait(frame.data)
            if frame.flags & FLAG_FIN:
                target.remote_closed = True
                target._incoming.put_nowait(b"")
                self._maybe_forget(target)
        elif isinstance(frame, RstStream):
            reset = self.streams.get(frame.stream_id)
            if reset is not None:
                reset._on_reset()
        elif isinstance(frame, Ping):
            if frame.ping_id % 2 == 1:  # the peer's ping: echo it; even ids would be answers to ours
                await self._send(frame)
        elif isinstance(frame, WindowUpdate):
            self.peer_flow_control = True
            if frame.stream_id == 0:
                self.session_window += frame.delta
                self._session_window_open.set()
            elif (updated := self.streams.get(frame.stream_id)) is not None:
                updated.send_window += frame.delta
                updated._window_open.set()
        elif isinstance(frame, Settings):
            for _flags, ident, value in frame.entries:
                if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                    self.peer_flow_control = True
                    delta = value - self.initial_send_window
                    self.initial_send_window = value
                    for each in self.streams.values():
                        each.send_window += delta
                        each._window_open.set()
        elif isinstance(frame, GoAway):
            self.closed = True
            for each in list(self.streams.values()):
                each._on_reset()
        # SYN_REPLY and HEADERS: this side opens no streams and uses no trailers

    async def _reserve(self, stream: Stream, wanted: int) -> int:
        """Bytes of ``wanted`` the send windows allow now (waiting while they are empty)."""
        while self.peer_flow_control:
            if stream.reset:
                raise ConnectionError(f"SPDY stream {stream.id} was reset")
            allowed = min(wanted, stream.send_window, self.session_window)
            if allowed > 0:
                stream.send_window -= allowed
                self.session_window -= allowed
                return allowed
            if stream.send_window <= 0:
                stream._window_open.clear()
                await stream._window_open.wait()
            else:
                self._session_window_open.clear()
                await self._session_window_open.wait()
        return wanted

    async def _consumed(self, stream: Stream, size: int) -> None:
        with contextlib.suppress(ConnectionError):
            if not stream.remote_closed:
                await self._send(WindowUpdate(stream.id, size))
            await self._send(WindowUpdate(0, size))

    def _maybe_forget(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.id, None)

    async def close(self) -> None:
        """Say GOAWAY, reset what is still open and stop the stream handlers."""
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self._send(GoAway(self._last_peer_stream, GOAWAY_OK))
            self.closed = True
        for stream in list(self.streams.values()):
            stream._on_reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
