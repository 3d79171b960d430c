"""Store backends built into the core, and opening a store by URL."""

from __future__ import annotations

from microkube_interfaces import errors
from microkube_interfaces.registry import Registrar
from microkube_interfaces.store import Store


def open_store(registrar: Registrar, url: str) -> Store:
    """Build the store a URL names (``sqlite:///var/lib/microkube/state.db``, ``memory://``)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise errors.Invalid.field("store", f"{url!r} is not a store URL; use sqlite:///path/to/state.db or memory://")
    if scheme not in registrar.stores:
        known = ", ".join(registrar.stores.names()) or "none"
        raise errors.NotFound(f"unknown store URL scheme {scheme!r} in {url!r}; known: {known}")
    return registrar.stores.get(scheme).factory(url)
