"""Fixtures shared by the core tests: a real in-process API server and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from microkube.client import Client
from microkube.testing import in_process_server


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Any, Client]]:
    """The in-process APIServer and an admin client of it."""
    async with in_process_server(tmp_path) as (server, url, token):
        client = Client(url, token=token)
        try:
            yield server, client
        finally:
            await client.close()


@pytest.fixture
def client(cluster: tuple[Any, Client]) -> Client:
    return cluster[1]

