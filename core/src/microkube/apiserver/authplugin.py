"""The built-in authentication and authorization plugin.

Authenticators: a verified TLS client certificate (CN = user, O = groups); bearer tokens from
DATA/pki/admin.token and the optional DATA/tokens.csv (``token,user,uid,"group1,group2"``, like
kube-apiserver's --token-auth-file); service-account JWTs; bootstrap tokens (``<id>.<secret>``, checked
against the Secret kube-system/bootstrap-token-<id>). The default authorizer lets every authenticated
user do anything, except that bootstrap tokens (group system:bootstrappers) may only create and read
CertificateSigningRequests, and lets anonymous users reach only health and version endpoints and read
kube-public/cluster-info; an RBAC plugin replaces it through ``microkube_authorizer``.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from microkube import bootstrap
from microkube.apiserver.tokens import TokenIssuer
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Authenticator, Authorizer, Credentials, Decision, UserInfo
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl

log = logging.getLogger(__name__)

AUTHENTICATED = "system:authenticated"
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})
#: What a bootstrap token may do besides discovery: request its node's certificate and wait for it.
BOOTSTRAP_VERBS = frozenset({"create", "get", "list", "watch"})
#: What every authenticated user may ask about itself (Kubernetes' system:basic-user role).
SELF_REVIEWS = frozenset({("authentication.k8s.io", "selfsubjectreviews"),
                          ("authorization.k8s.io", "selfsubjectaccessreviews"),
                          ("authorization.k8s.io", "selfsubjectrulesreviews")})
#: How long a bootstrap token Secret read is reused (a deleted token stops working within this).
BOOTSTRAP_CACHE_SECONDS = 5.0


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class X509Authenticator:
    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        if not credentials.cert_common_name:
            return None
        return UserInfo(credentials.cert_common_name, groups=(*credentials.cert_organizations, AUTHENTICATED))


class TokenFileAuthenticator:
    def __init__(self, data_dir: Path) -> None:
        self.tokens: dict[str, UserInfo] = {}
        admin = data_dir / "pki" / "admin.token"
        if admin.exists():
            self.tokens[admin.read_text().strip()] = UserInfo("admin", groups=("system:masters", AUTHENTICATED))
        table = data_dir / "tokens.csv"
        if table.exists():
            with table.open(newline="") as handle:
                for line, row in enumerate(csv.reader(handle), 1):
                    if not row or row[0].startswith("#"):
                        continue
                    if len(row) < 3:
                        raise errors.Permanent(f"{table}:{line}: expected token,user,uid[,\"group1,group2\"]")
                    groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                    self.tokens[row[0]] = UserInfo(row[1], uid=row[2], groups=(*groups, AUTHENTICATED))

    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        token = bearer_token(credentials.headers)
        if token is None or token.count(".") == 2:
            return None
        for known, user in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None


class ServiceAccountAuthenticator:
    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer

    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        token = bearer_token(credentials.headers)
        if token is None or token.count(".") != 2:
            return None
        claims = self.issuer.verify(token)
        k8s = claims.get("kubernetes.io") or {}
        namespace = k8s.get("namespace", "")
        account = k8s.get("serviceaccount") or {}
        return UserInfo(f"system:serviceaccount:{namespace}:{account.get('name', '')}", uid=account.get("uid", ""),
                        groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))


SecretLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


def reader_lookup(reader: Any) -> SecretLookup:
    """Secret lookup through the API server's own ObjectReader (its watch cache)."""
    async def lookup(name: str) -> dict[str, Any] | None:
        for secret in await reader.list("secrets", bootstrap.TOKEN_NAMESPACE, consistent=False):
            if secret.get("metadata", {}).get("name") == name:
                return dict(secret)
        return None
    return lookup


def loopback_lookup(data_dir: Path) -> SecretLookup:
    """Secret lookup through the server's own API with the admin kubeconfig it writes at start (as
    kube-apiserver's loopback client). A client per lookup: they are rare (joins) and cached."""
    async def lookup(name: str) -> dict[str, Any] | None:
        from microkube.client import Client

        kubeconfig = data_dir / "kubeconfig"
        if not kubeconfig.exists():
            log.warning("bootstrap tokens cannot be checked yet: %s does not exist", kubeconfig)
            return None
        async with Client.from_kubeconfig(kubeconfig, user_agent="microkube-apiserver/loopback") as client:
            try:
                secret: dict[str, Any] = await client.get(bootstrap.SECRETS, name, bootstrap.TOKEN_NAMESPACE)
            except errors.NotFound:
                return None
        return secret
    return lookup


class BootstrapTokenAuthenticator:
    """``Authorization: Bearer <id>.<secret>`` against Secret kube-system/bootstrap-token-<id>: user
    system:bootstrap:<id>, groups system:bootstrappers and the token's auth-extra-groups."""

    def __init__(self, lookup: SecretLookup, cache_seconds: float = BOOTSTRAP_CACHE_SECONDS) -> None:
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = asyncio.Lock()

    async def _fields(self, token_id: str) -> dict[str, str]:
        now = time.monotonic()
        cached = self._cache.get(token_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._lock:
            secret = await self.lookup(bootstrap.TOKEN_SECRET_PREFIX + token_id)
        fields = bootstrap.secret_fields(secret) if secret is not None else {}
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[token_id] = (now + self.cache_seconds, fields)
        return fields

    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        token = bearer_token(credentials.headers)
        if token is None or bootstrap.TOKEN_RE.match(token) is None:
            return None
        token_id, secret = token.split(".", 1)
        fields = await self._fields(token_id)
        expected = bootstrap.usable_for(fields, "authentication", token_id) if fields else None
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            if fields and bootstrap.token_expired(fields):
                raise errors.Unauthenticated(f"bootstrap token {token_id} has expired")
            raise errors.Unauthenticated(f"bootstrap token {token_id} is not valid: it does not exist, was deleted "
                                         "or is not for authentication")
        extra = tuple(g.strip() for g in fields.get("auth-extra-groups", "").split(",")
                      if g.strip().startswith("system:bootstrappers:"))
        return UserInfo(bootstrap.BOOTSTRAP_USER_PREFIX + token_id,
                        groups=(bootstrap.BOOTSTRAPPERS, *extra, AUTHENTICATED))


def _cluster_info(attributes: Attributes) -> bool:
    return (attributes.verb == "get" and attributes.resource == "configmaps" and not attributes.subresource
            and attributes.api_group == "" and attributes.namespace == bootstrap.CLUSTER_INFO_NAMESPACE
            and attributes.name == bootstrap.CLUSTER_INFO)


class AllowAuthenticated:
    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        if bootstrap.BOOTSTRAPPERS in attributes.user.groups:
            if not attributes.is_resource_request and attributes.verb == "get":
                return Decision.ALLOW, ""
            if (attributes.is_resource_request and attributes.api_group == "certificates.k8s.io"
                    and attributes.resource == "certificatesigningrequests" and not attributes.subresource
                    and attributes.verb in BOOTSTRAP_VERBS):
                return Decision.ALLOW, ""
            if attributes.verb == "create" and (attributes.api_group, attributes.resource) in SELF_REVIEWS:
                return Decision.ALLOW, ""
            return Decision.DENY, ("bootstrap tokens may only create, get, list and watch "
                                   "certificatesigningrequests (a node joins, then uses its own certificate)")
        if AUTHENTICATED in attributes.user.groups:
            return Decision.ALLOW, ""
        if not attributes.is_resource_request and attributes.path in PUBLIC_PATHS:
            return Decision.ALLOW, ""
        if _cluster_info(attributes):
            return Decision.ALLOW, ""
        return Decision.DENY, ("the default authorizer allows authenticated users only; install an RBAC plugin "
                               "to grant finer permissions")


@hookimpl
def microkube_plugin_info() -> PluginInfo:
    return PluginInfo(name="auth", interfaces={"authentication": ("v1",), "authorization": ("v1",)})


@hookimpl
def microkube_authenticators(settings: ServerSettings) -> Sequence[Authenticator]:
    data_dir = Path(settings.data_dir)
    found: list[Authenticator] = [X509Authenticator(), TokenFileAuthenticator(data_dir)]
    sa_key = data_dir / "pki" / "sa.key"
    if sa_key.exists():
        found.append(ServiceAccountAuthenticator(TokenIssuer(sa_key)))
    reader = settings.options.get("object_reader")
    found.append(BootstrapTokenAuthenticator(reader_lookup(reader) if reader is not None
                                             else loopback_lookup(data_dir)))
    return found


@hookimpl(trylast=True)
def microkube_authorizer(settings: ServerSettings) -> Authorizer:
    return AllowAuthenticated()
