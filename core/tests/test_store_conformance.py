"""The store/v1 conformance suite against the built-in backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microkube.store.memory import MemoryStore
from microkube.store.sqlite import SqliteStore
from microkube_interfaces.conformance.store import StoreConformance
from microkube_interfaces.store import Store, StoreCapabilities


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = MemoryStore()
        yield store
        await store.close()

    @pytest.fixture
    def capabilities(self) -> StoreCapabilities:
        return StoreCapabilities(durable=False)


class TestSqliteStore(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = SqliteStore(f"sqlite://{tmp_path}/state.db?compact_interval=0")
        yield store
        await store.close()
