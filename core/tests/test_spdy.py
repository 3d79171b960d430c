"""SPDY/3.1 framing, header compression and the server session used by port-forward."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from microkube.kubelet import spdy


def test_dictionary_is_spdy3s() -> None:
    # Size and Adler-32 (the id zlib puts in every stream primed with it) of the SPDY/3 dictionary.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 3821447106
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"], "requestid": ["0"]}, flags=spdy.FLAG_FIN,
                   priority=3),
    spdy.SynReply(1, {}),
    spdy.SynStream(3, {"streamtype": ["data"], "port": ["80"], "requestid": ["0"], "multi": ["a", "b"]}),
    spdy.HeadersFrame(3, {"x-trailer": ["yes"]}),
    spdy.Data(3, b"hello", spdy.FLAG_FIN),
    spdy.Data(3, b""),
    spdy.RstStream(5, spdy.CANCEL),
    spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1024)]),
    spdy.Ping(7),
    spdy.GoAway(3, spdy.GOAWAY_OK),
    spdy.WindowUpdate(0, 4096),
]


def test_frames_round_trip_through_one_compression_context() -> None:
    writer, reader = spdy.Framer(), spdy.Framer()
    wire = b"".join(writer.encode(frame) for frame in FRAMES)
    assert reader.feed(wire) == FRAMES
    # byte by byte: partial frames wait
    writer, reader = spdy.Framer(), spdy.Framer()
    wire = b"".join(writer.encode(frame) for frame in FRAMES)
    decoded: list[spdy.Frame] = []
    for i in range(len(wire)):
        decoded += reader.feed(wire[i:i + 1])
    assert decoded == FRAMES


def test_wire_layout_of_control_and_data_frames() -> None:
    framer = spdy.Framer()
    assert framer.encode(spdy.Ping(1)) == bytes.fromhex("8003000600000004") + struct.pack(">I", 1)
    assert framer.encode(spdy.Data(5, b"ab", spdy.FLAG_FIN)) == bytes.fromhex("00000005010000026162")
    syn = framer.encode(spdy.SynReply(2, {"a": ["b"]}))
    assert syn[:4] == bytes.fromhex("80030002") and struct.unpack(">I", syn[8:12])[0] == 2
    # an independent zlib stream primed with the dictionary reads the header block
    block = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(syn[12:])
    assert block == struct.pack(">I", 1) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"b"
    assert spdy.decode_header_block(block) == {"a": ["b"]}


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.Framer().feed(bytes.fromhex("8002000600000004") + b"\0\0\0\1")  # SPDY/2
    header = bytes.fromhex("80030002") + struct.pack(">I", 4 + 5) + struct.pack(">I", 1)
    with pytest.raises(spdy.ProtocolError):
        spdy.Framer().feed(header + b"xxxxx")  # a header block that is not zlib


class Peer:
    """The client side of a session under test: frames in both directions through two Framers."""

    def __init__(self) -> None:
        self.client = spdy.Framer()
        self.server_side = spdy.Framer()
        self.received: asyncio.Queue[spdy.Frame] = asyncio.Queue()
        self.streams: asyncio.Queue[spdy.Stream] = asyncio.Queue()

        async def send(data: bytes) -> None:
            for frame in self.server_side.feed(data):
                self.received.put_nowait(frame)

        async def on_stream(stream: spdy.Stream) -> None:
            self.streams.put_nowait(stream)

        self.session = spdy.Session(send, on_stream)

    async def send(self, frame: spdy.Frame) -> None:
        await self.session.feed(self.client.encode(frame))

    async def next(self) -> spdy.Frame:
        return await asyncio.wait_for(self.received.get(), 5)


async def test_session_replies_delivers_data_and_finishes() -> None:
    peer = Peer()
    await peer.send(spdy.SynStream(1, {"streamtype": ["data"], "port": ["8080"]}))
    assert await peer.next() == spdy.SynReply(1, {})
    stream = await asyncio.wait_for(peer.streams.get(), 5)
    assert (stream.header("streamType"), stream.header("port")) == ("data", "8080")
    await peer.send(spdy.Data(1, b"ping"))
    assert await stream.read() == b"ping"
    assert await peer.next() == spdy.WindowUpdate(1, 4)
    assert await peer.next() == spdy.WindowUpdate(0, 4)
    await stream.write(b"pong")
    assert await peer.next() == spdy.Data(1, b"pong")
    await peer.send(spdy.Data(1, b"", spdy.FLAG_FIN))
    assert await stream.read() == b"" and await stream.read() == b""
    await stream.close()
    assert await peer.next() == spdy.Data(1, b"", spdy.FLAG_FIN)
    assert stream.id not in peer.session.streams
    await peer.send(spdy.Ping(5))
    assert await peer.next() == spdy.Ping(5)
    await peer.send(spdy.SynStream(4, {}))  # even ids are the server's own
    assert await peer.next() == spdy.RstStream(4, spdy.PROTOCOL_ERROR)
    await peer.session.close()
    assert await peer.next() == spdy.GoAway(1, spdy.GOAWAY_OK)


async def test_reset_ends_a_stream() -> None:
    peer = Peer()
    await peer.send(spdy.SynStream(1, {}))
    await peer.next()
    stream = await peer.streams.get()
    await peer.send(spdy.RstStream(1, spdy.CANCEL))
    assert await stream.read() == b"" and stream.reset
    with pytest.raises(ConnectionError):
        await stream.write(b"late")


async def test_send_windows_once_the_peer_does_flow_control() -> None:
    peer = Peer()
    await peer.send(spdy.SynStream(1, {}))
    await peer.next()
    stream = await peer.streams.get()
    await stream.write(b"x" * 100_000)  # spdystream-style peer: no windows enforced
    assert sum(len(f.data) for f in [await peer.next() for _ in range(4)] if isinstance(f, spdy.Data)) == 100_000
    # windows count from when the peer shows it does flow control
    await peer.send(spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 5)]))
    assert stream.send_window == 5
    writer = asyncio.create_task(stream.write(b"abcdefgh"))
    assert await peer.next() == spdy.Data(1, b"abcde")
    await asyncio.sleep(0.05)
    assert not writer.done()
    await peer.send(spdy.WindowUpdate(1, 3))
    assert await peer.next() == spdy.Data(1, b"fgh")
    await asyncio.wait_for(writer, 5)
