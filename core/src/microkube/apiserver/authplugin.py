"""The built-in authentication and authorization plugin.

Authenticators: a verified TLS client certificate (CN = user, O = groups); bearer tokens from
DATA/pki/admin.token and the optional DATA/tokens.csv (``token,user,uid,"group1,group2"``, like
kube-apiserver's --token-auth-file); service-account JWTs. The default authorizer lets every
authenticated user do anything and anonymous users reach only health and version endpoints; an RBAC
plugin replaces it through ``microkube_authorizer``.
"""

from __future__ import annotations

import csv
import hmac
from collections.abc import Mapping, Sequence
from pathlib import Path

from microkube.apiserver.tokens import TokenIssuer
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Authenticator, Authorizer, Credentials, Decision, UserInfo
from microkube_interfaces.hookspecs import PluginInfo, ServerSettings
from microkube_interfaces.markers import hookimpl

AUTHENTICATED = "system:authenticated"
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})


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


class AllowAuthenticated:
    async def authorize(self, attributes: Attributes) -> tuple[Decision, str]:
        if AUTHENTICATED in attributes.user.groups:
            return Decision.ALLOW, ""
        if not attributes.is_resource_request and attributes.path in PUBLIC_PATHS:
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
    return found


@hookimpl(trylast=True)
def microkube_authorizer(settings: ServerSettings) -> Authorizer:
    return AllowAuthenticated()
