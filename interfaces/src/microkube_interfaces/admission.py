"""admission/v1: mutating and validating admission, called for every write after decoding.

Each admission plugin sees the request after defaulting and before validation and storage. Mutating
plugins run first, in registration order; then validating plugins, all of them. A plugin denies a
request by raising ``errors.Invalid`` (422) or ``errors.Forbidden`` (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from microkube_interfaces.auth import UserInfo
from microkube_interfaces.resources import ResourceType

INTERFACE = "admission"
VERSION = "v1"


class ObjectReader(Protocol):
    """Read access to what the API server stores, for plugins whose decision depends on other objects
    (quota, limits, priority classes)."""

    async def list(self, resource: str, namespace: str = "", *, consistent: bool = True) -> list[dict[str, Any]]:
        """Every stored object of ``resource`` (``plural`` or ``plural.group``, e.g. ``deployments.apps``),
        of one namespace if given: as of this request when ``consistent`` (the cache first catches up
        with the store), else as the cache holds them now (a few milliseconds behind at most, like an
        informer's lister, and free)."""


@dataclass
class AdmissionRequest:
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    resource: ResourceType
    subresource: str
    namespace: str
    name: str
    #: The object as it will be stored (mutable for mutating plugins); None for DELETE.
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    user: UserInfo
    dry_run: bool = False
    reader: ObjectReader | None = None


class AdmissionPlugin(Protocol):
    name: str

    async def mutate(self, request: AdmissionRequest) -> None:
        """Change ``request.object`` in place, or do nothing."""

    async def validate(self, request: AdmissionRequest) -> None:
        """Raise errors.Invalid or errors.Forbidden to deny; return to admit."""
