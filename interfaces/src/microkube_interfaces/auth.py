"""authentication/v1 and authorization/v1: who is calling, and may they.

Authenticators run in order until one recognises the request; none → 401. The authorizer (one,
chosen by the ``microkube_authorizer`` hook) answers allow, deny or no opinion for a request's
attributes; anything but allow → 403.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

INTERFACE_AUTHN = "authentication"
INTERFACE_AUTHZ = "authorization"
VERSION = "v1"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """What a request presented: HTTP headers and the verified client certificate's subject, if any."""

    headers: Mapping[str, str]
    #: CommonName and Organizations of a client certificate the TLS layer verified against the cluster CA.
    cert_common_name: str | None = None
    cert_organizations: tuple[str, ...] = ()


class Authenticator(Protocol):
    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        """The user these credentials prove, or None if this authenticator does not recognise them.

        Raise errors.Unauthenticated for credentials it recognises but rejects (an expired token).
        """


@dataclass(frozen=True)
class Attributes:
    """The authorization attributes of one request (Kubernetes' authorizer.Attributes)."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    #: For non-resource requests (/healthz, /version).
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


class Authorizer(Protocol):
    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        """The decision and a human reason (shown in 403 messages)."""
