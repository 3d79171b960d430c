"""Reading CRI log files for the kubelet API: records, options, tail, since, limits, follow and rotation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from microkube.kubelet import logs
from microkube.kubelet.logs import LogOptions, format_time, parse_record, parse_time, stream_log, tail_offset
from microkube_interfaces import errors

T0 = "2026-01-02T03:04:05.000000001Z"


def record(second: int, text: str, partial: bool = False, stream: str = "stdout") -> str:
    return f"2026-01-02T03:04:{second:02d}.500000000Z {stream} {'P' if partial else 'F'} {text}\n"


async def read(path: Path, options: LogOptions) -> bytes:
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    async def running() -> bool:
        return False

    await stream_log(str(path), options, write, running)
    return b"".join(out)


def test_records_and_times() -> None:
    parsed = parse_record(b"2026-01-02T03:04:05.000000001Z stderr P half a line")
    assert parsed is not None
    assert (parsed.stream, parsed.partial, parsed.content) == ("stderr", True, b"half a line")
    assert parsed.time_ns == parse_time(T0)
    empty = parse_record(b"2026-01-02T03:04:05.000000001Z stdout F")
    assert empty is not None and empty.content == b""
    assert parse_record(b"not a log line") is None
    assert parse_record(b"2026-01-02T03:04:05Z stdout X text") is None
    assert format_time(parse_time("2026-01-02T03:04:05.120000000Z")) == "2026-01-02T03:04:05.12Z"
    assert format_time(parse_time("2026-01-02T03:04:05Z")) == "2026-01-02T03:04:05Z"
    assert parse_time("2026-01-02T04:04:05+01:00") == parse_time("2026-01-02T03:04:05Z")


@pytest.mark.parametrize(("query", "field"), [
    ({"sinceSeconds": "5", "sinceTime": "2026-01-01T00:00:00Z"}, "sinceSeconds"),
    ({"sinceSeconds": "0"}, "sinceSeconds"),
    ({"tailLines": "-1"}, "tailLines"),
    ({"tailLines": "ten"}, "tailLines"),
    ({"limitBytes": "0"}, "limitBytes"),
    ({"follow": "maybe"}, "follow"),
    ({"sinceTime": "yesterday"}, "sinceTime"),
])
def test_bad_options_name_the_parameter(query: dict[str, str], field: str) -> None:
    with pytest.raises(errors.Invalid) as raised:
        LogOptions.from_query(query)
    assert field in str(raised.value)


def test_options_from_query() -> None:
    options = LogOptions.from_query({"follow": "true", "timestamps": "1", "tailLines": "3", "limitBytes": "10",
                                     "sinceSeconds": "2"}, now_ns=10_000_000_000)
    assert options == LogOptions(follow=True, timestamps=True, tail_lines=3, limit_bytes=10,
                                 since_ns=8_000_000_000)


async def test_partial_lines_join_and_timestamps_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_text(record(1, "hel", partial=True) + record(2, "lo") + record(3, "oops", stream="stderr")
                    + "garbage line\n" + record(4, "unfinished"))
    path.write_bytes(path.read_bytes()[:-1])  # the last record has no newline yet: not shown
    assert await read(path, LogOptions()) == b"hello\noops\n"
    stamped = await read(path, LogOptions(timestamps=True))
    assert stamped == b"2026-01-02T03:04:01.5Z hello\n2026-01-02T03:04:03.5Z oops\n"


async def test_tail_since_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_text("".join(record(i, f"line {i}", partial=(i == 5)) for i in range(10)))
    assert await read(path, LogOptions(tail_lines=2)) == b"line 8\nline 9\n"
    assert await read(path, LogOptions(tail_lines=4)) == b"line 5line 6\nline 7\nline 8\nline 9\n"
    assert await read(path, LogOptions(tail_lines=0)) == b""
    assert await read(path, LogOptions(tail_lines=100)) == await read(path, LogOptions())
    since = parse_time("2026-01-02T03:04:08Z")
    assert await read(path, LogOptions(since_ns=since)) == b"line 8\nline 9\n"
    assert await read(path, LogOptions(limit_bytes=10)) == b"line 0\nlin"


def test_tail_offset_across_small_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_BLOCK", 7)
    data = "".join(record(i, f"l{i}", partial=(i % 3 == 1)) for i in range(9)).encode()
    path = tmp_path / "0.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for lines in range(8):
            tail = data[tail_offset(fd, len(data), lines):]
            assert tail.count(b" F ") == min(lines, 6)
            assert tail == b"" or tail.startswith(b"2026")
    finally:
        os.close(fd)


async def test_follow_survives_rotation_and_ends_after_exit(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(logs, "RUNNING_CHECK_INTERVAL", 0.01)
    path = tmp_path / "0.log"
    path.write_text(record(0, "first"))
    out: list[bytes] = []
    alive = True
    got = asyncio.Event()

    async def write(data: bytes) -> None:
        out.append(data)
        got.set()

    async def running() -> bool:
        return alive

    async def wait_for(text: bytes) -> None:
        while text not in b"".join(out):
            got.clear()
            await asyncio.wait_for(got.wait(), 5)

    follower = asyncio.create_task(stream_log(str(path), LogOptions(follow=True), write, running))
    await wait_for(b"first\n")
    with path.open("a") as old:
        os.rename(path, tmp_path / "0.log.1")  # the agent rotates; the runtime still writes the old file…
        old.write(record(1, "late in the old file"))
    path.write_text(record(2, "in the new file"))  # …until it reopens
    await wait_for(b"in the new file\n")
    with path.open("a") as new:
        new.write(record(3, "last words"))
    alive = False
    await asyncio.wait_for(follower, 5)
    assert b"".join(out) == b"first\nlate in the old file\nin the new file\nlast words\n"


async def test_follow_of_a_missing_log_of_an_exited_container_ends(tmp_path: Path) -> None:
    assert await read(tmp_path / "absent.log", LogOptions(follow=True)) == b""
