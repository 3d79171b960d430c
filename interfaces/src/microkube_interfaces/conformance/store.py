"""The store/v1 conformance suite (microkube_interfaces.store.Store).

Rules are numbered ``S<n>`` and cited by each test; docs/conformance.md lists them.
"""

from __future__ import annotations

import asyncio

import pytest

from microkube_interfaces import errors
from microkube_interfaces.conformance._helpers import assert_implements, expect_error
from microkube_interfaces.store import EventType, Store, StoreCapabilities, WatchEvent

RULE = "store/v1"


async def _collect(store: Store, prefix: str, start: int, count: int, wait: float = 5.0) -> list[WatchEvent]:
    events: list[WatchEvent] = []

    async def run() -> None:
        async for batch in store.watch(prefix, start_revision=start):
            events.extend(batch)
            if len(events) >= count:
                return

    await asyncio.wait_for(run(), wait)
    return events


class StoreConformance:
    """Subclass this and provide an async ``store`` fixture yielding a fresh, empty store."""

    @pytest.fixture
    def store(self) -> Store:  # pragma: no cover - vendors override
        raise NotImplementedError("provide a `store` fixture that yields a fresh, empty store")

    @pytest.fixture
    def capabilities(self) -> StoreCapabilities:
        """What the backend offers beyond the contract; override to declare more or less."""
        return StoreCapabilities()

    async def test_implements_the_interface(self, store: Store) -> None:
        """S1: the backend implements every method of the store/v1 Protocol, async where the Protocol's is and
        callable with its arguments (microkube_interfaces.compliance, the check the core runs on it)."""
        assert_implements(store, "store", "store")

    async def test_create_then_get(self, store: Store) -> None:
        """S2: create returns a positive revision; get returns the value with create and mod revision."""
        revision = await store.create("/a/1", b"one")
        assert revision > 0
        kv = await store.get("/a/1")
        assert kv is not None
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision) == ("/a/1", b"one", revision, revision)
        assert await store.get("/a/missing") is None

    async def test_create_existing_fails(self, store: Store) -> None:
        """S3: create of a present key raises AlreadyExists and changes nothing."""
        await store.create("/a/1", b"one")
        before = await store.current_revision()
        with expect_error(errors.AlreadyExists, "create('/a/1') of a present key", f"{RULE}: a present key"):
            await store.create("/a/1", b"two")
        assert (await store.get("/a/1")).value == b"one"  # type: ignore[union-attr]
        assert await store.current_revision() == before

    async def test_revisions_are_global_and_increasing(self, store: Store) -> None:
        """S4: every write gets a revision greater than all earlier ones, across keys."""
        seen = [await store.create(f"/r/{i}", b"x") for i in range(5)]
        seen.append(await store.update("/r/0", b"y"))
        seen.append((await store.delete("/r/1")).mod_revision)
        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen)
        assert await store.current_revision() == seen[-1]

    async def test_update_keeps_create_revision(self, store: Store) -> None:
        """S5: update changes mod_revision, not create_revision."""
        created = await store.create("/a/1", b"one")
        updated = await store.update("/a/1", b"two", expected_revision=created)
        kv = await store.get("/a/1")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision) == (b"two", created, updated)

    async def test_update_with_stale_revision_conflicts(self, store: Store) -> None:
        """S6: update with an expected_revision other than the key's mod_revision raises Conflict."""
        created = await store.create("/a/1", b"one")
        await store.update("/a/1", b"two")
        with expect_error(errors.Conflict, "update('/a/1', expected_revision=<stale>)",
                          f"{RULE}: an expected_revision other than the key's mod_revision"):
            await store.update("/a/1", b"three", expected_revision=created)
        assert (await store.get("/a/1")).value == b"two"  # type: ignore[union-attr]

    async def test_update_and_delete_of_missing_key(self, store: Store) -> None:
        """S7: update and delete of an absent key raise NotFound."""
        with expect_error(errors.NotFound, "update('/a/none')", f"{RULE}: an absent key"):
            await store.update("/a/none", b"x")
        with expect_error(errors.NotFound, "delete('/a/none')", f"{RULE}: an absent key"):
            await store.delete("/a/none")

    async def test_delete(self, store: Store) -> None:
        """S8: delete returns the last value with the deletion's revision; the key is gone; a stale
        expected_revision raises Conflict."""
        created = await store.create("/a/1", b"one")
        updated = await store.update("/a/1", b"two")
        with expect_error(errors.Conflict, "delete('/a/1', expected_revision=<stale>)",
                          f"{RULE}: an expected_revision other than the key's mod_revision"):
            await store.delete("/a/1", expected_revision=created)
        deleted = await store.delete("/a/1", expected_revision=updated)
        assert deleted.value == b"two"
        assert deleted.mod_revision > updated
        assert await store.get("/a/1") is None
        assert await store.create("/a/1", b"again") > deleted.mod_revision

    async def test_list_by_prefix_in_key_order(self, store: Store) -> None:
        """S9: list returns live keys starting with the prefix (a plain string prefix), in key order."""
        for key in ("/p/b", "/p/a", "/p/c", "/q/a", "/pp/a"):
            await store.create(key, key.encode())
        await store.delete("/p/c")
        result = await store.list("/p/")
        assert [kv.key for kv in result.items] == ["/p/a", "/p/b"]
        assert result.revision == await store.current_revision()
        assert not result.more

    async def test_list_at_past_revision(self, store: Store) -> None:
        """S10: list and get at a past revision see the store as it was then."""
        first = await store.create("/p/a", b"1")
        await store.create("/p/b", b"2")
        await store.update("/p/a", b"3")
        await store.delete("/p/b")
        past = await store.list("/p/", revision=first)
        assert [(kv.key, kv.value) for kv in past.items] == [("/p/a", b"1")]
        kv = await store.get("/p/a", revision=first)
        assert kv is not None
        assert kv.value == b"1"

    async def test_paging_is_one_snapshot(self, store: Store) -> None:
        """S11: limit + start_after pages through one revision; writes after it do not show."""
        for i in range(7):
            await store.create(f"/p/{i}", b"x")
        first = await store.list("/p/", limit=3)
        assert [kv.key for kv in first.items] == ["/p/0", "/p/1", "/p/2"]
        assert first.more
        await store.create("/p/00", b"late")
        await store.delete("/p/5")
        second = await store.list("/p/", revision=first.revision, limit=3, start_after=first.items[-1].key)
        third = await store.list("/p/", revision=first.revision, limit=3, start_after=second.items[-1].key)
        keys = [kv.key for kv in first.items + second.items + third.items]
        assert keys == [f"/p/{i}" for i in range(7)]
        assert not third.more

    async def test_watch_replays_history_then_follows(self, store: Store) -> None:
        """S12: watch from a revision replays every later event in order, then delivers live ones."""
        start = await store.create("/w/a", b"1")
        await store.update("/w/a", b"2")
        await store.create("/other/x", b"no")
        watcher = asyncio.create_task(_collect(store, "/w/", start, 4))
        await asyncio.sleep(0.05)
        await store.create("/w/b", b"3")
        await store.delete("/w/a")
        events = await watcher
        assert [(e.type, e.kv.key) for e in events] == [
            (EventType.PUT, "/w/a"), (EventType.PUT, "/w/a"), (EventType.PUT, "/w/b"), (EventType.DELETE, "/w/a")]
        revisions = [e.revision for e in events]
        assert revisions == sorted(revisions)
        assert events[0].revision == start

    async def test_delete_event_carries_last_value(self, store: Store) -> None:
        """S13: a DELETE event's kv holds the last value and the deletion's revision."""
        await store.create("/w/a", b"last")
        deleted = await store.delete("/w/a")
        events = await _collect(store, "/w/", deleted.mod_revision, 1)
        assert events[0].type is EventType.DELETE
        assert events[0].kv.value == b"last"
        assert events[0].revision == deleted.mod_revision

    async def test_concurrent_writers_exactly_one_wins(self, store: Store) -> None:
        """S14: concurrent updates with the same expected_revision: exactly one succeeds."""
        created = await store.create("/c/a", b"0")
        results = await asyncio.gather(*(store.update("/c/a", str(i).encode(), expected_revision=created)
                                         for i in range(10)), return_exceptions=True)
        assert sum(1 for r in results if isinstance(r, int)) == 1
        assert all(isinstance(r, errors.Conflict) for r in results if not isinstance(r, int))

    async def test_many_concurrent_creates_all_land(self, store: Store) -> None:
        """S15: concurrent creates of distinct keys all succeed with distinct revisions."""
        revisions = await asyncio.gather(*(store.create(f"/m/{i:04d}", b"x") for i in range(200)))
        assert len(set(revisions)) == 200
        assert len((await store.list("/m/")).items) == 200

    async def test_compaction(self, store: Store) -> None:
        """S16: after compact(r), reads and watches at or below r raise Expired; latest values stay;
        revisions keep increasing."""
        first = await store.create("/k/a", b"1")
        await store.update("/k/a", b"2")
        await store.create("/k/b", b"3")
        await store.delete("/k/b")
        target = await store.current_revision()
        await store.compact(target)
        assert await store.compacted_revision() >= target
        compacted = f"{RULE}: a revision at or below the compaction point"
        with expect_error(errors.Expired, "list('/k/', revision=<compacted>)", compacted):
            await store.list("/k/", revision=first)
        with expect_error(errors.Expired, "get('/k/a', revision=<compacted>)", compacted):
            await store.get("/k/a", revision=first)
        with expect_error(errors.Expired, "watch('/k/', start_revision=<compacted>) when iterated", compacted):
            await _collect(store, "/k/", first, 1)
        assert [(kv.key, kv.value) for kv in (await store.list("/k/")).items] == [("/k/a", b"2")]
        assert await store.create("/k/c", b"4") > target

    async def test_close_ends_watches(self, store: Store) -> None:
        """S17: close() ends open watches; a second close is harmless."""
        await store.create("/z/a", b"1")
        start = await store.current_revision() + 1

        async def watch() -> None:
            async for _ in store.watch("/z/", start_revision=start):
                pass

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.05)
        await store.close()
        await asyncio.wait_for(task, 5)
        await store.close()

    async def test_durability(self, store: Store, capabilities: StoreCapabilities) -> None:
        """S18: a durable backend says so; the data-survives-restart check is the vendor's
        provisioning test (see docs/conformance.md)."""
        if not capabilities.durable:
            pytest.skip("the backend declares itself non-durable")
        assert capabilities.durable
