"""SQLite-specific behaviour: bounded file size under churn, corrupt files, restarts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from microkube.store.sqlite import SqliteStore
from microkube_interfaces import errors


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def test_compaction_bounds_the_file_under_churn(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(f"sqlite://{path}?compact_interval=0")
    value = b"x" * 1000
    for i in range(500):
        await store.create(f"/k/{i}", value)
    sizes = []
    for _ in range(6):
        for i in range(500):
            await store.update(f"/k/{i}", value)
        await store.compact(await store.current_revision() - 10)
        sizes.append(_size(path))
    await store.close()
    # After the first rounds the file stops growing although 3,000 more revisions were written.
    assert sizes[-1] <= sizes[1] * 1.1, sizes
    assert sizes[-1] < 500 * 1000 * 4


async def test_corrupt_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(os.urandom(8192))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(errors.Permanent) as error:
        SqliteStore(f"sqlite://{path}")
    assert str(path) in str(error.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


async def test_truncated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(f"sqlite://{path}?compact_interval=0")
    for i in range(200):
        await store.create(f"/k/{i}", b"v" * 500)
    await store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(errors.Permanent):
        SqliteStore(f"sqlite://{path}")


async def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(errors.Permanent):
        SqliteStore(f"sqlite://{blocker}/sub/state.db")


async def test_reopen_keeps_data_and_revision_counter(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db?compact_interval=0"
    store = SqliteStore(url)
    await store.create("/a", b"1")
    last = (await store.delete("/a")).mod_revision
    await store.create("/b", b"2")
    await store.compact(await store.current_revision())
    await store.close()
    reopened = SqliteStore(url)
    assert (await reopened.get("/b")).value == b"2"  # type: ignore[union-attr]
    assert await reopened.create("/c", b"3") > last + 1
    await reopened.close()


def test_url_forms(tmp_path: Path) -> None:
    assert SqliteStore.parse_url("sqlite:///var/lib/x.db")[0] == Path("/var/lib/x.db")
    assert SqliteStore.parse_url("sqlite:////var/lib/x.db")[0] == Path("/var/lib/x.db")
    assert SqliteStore.parse_url("sqlite://rel/x.db")[0] == Path("rel/x.db")
    _, options = SqliteStore.parse_url("sqlite:///x.db?history=5&compact_interval=1")
    assert options == {"history": "5", "compact_interval": "1"}
    with pytest.raises(errors.Invalid):
        SqliteStore.parse_url("sqlite://")
