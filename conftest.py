"""Fixtures for every test in the repository: the network guard, and the real-server test kit."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

# The real-server test kit comes with core; a vendor's conformance env installs only the interfaces and its pack.
pytest_plugins = ["microkube.testing"] if importlib.util.find_spec("microkube") else []

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        raise ConnectionRefusedError(f"tests may only reach loopback, not {address[0]!r}")
    return _real_connect(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _loopback(host):
        raise socket.gaierror(f"tests may not resolve outside hosts ({host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _network_guard() -> Iterator[None]:
    """Tests talk to loopback (and namespaces they create) only: refuse anything else loudly."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
    os.environ.setdefault("NO_PROXY", "*")
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.getaddrinfo = _real_getaddrinfo
