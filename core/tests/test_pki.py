"""The cluster PKI, kubeconfig, service-account tokens and the built-in authenticators/authorizer."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from microkube.apiserver import pki as pki_module
from microkube.apiserver.authplugin import AllowAuthenticated, ServiceAccountAuthenticator, TokenFileAuthenticator
from microkube.apiserver.kubeconfig import write_kubeconfig
from microkube.apiserver.pki import ensure_pki
from microkube.apiserver.tokens import TokenIssuer
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Credentials, Decision, UserInfo


def test_pki_is_created_once_and_private(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, ["10.1.2.3", "node-a"])
    ca = first.ca_cert.read_bytes()
    server = first.server_cert.read_bytes()
    for private in (first.ca_key, first.server_key, first.admin_key, first.sa_key, first.admin_token):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE(first.directory.stat().st_mode) == 0o700
    second = ensure_pki(tmp_path, ["10.1.2.3", "node-a"])
    assert second.ca_cert.read_bytes() == ca and second.server_cert.read_bytes() == server
    cert = x509.load_pem_x509_certificate(server)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "node-a" in sans.get_values_for_type(x509.DNSName)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)


def test_serving_cert_renews_for_new_hosts_and_near_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_pki(tmp_path, [])
    original = first.server_cert.read_bytes()
    assert ensure_pki(tmp_path, ["192.0.2.10"]).server_cert.read_bytes() != original  # a new host
    renewed = first.server_cert.read_bytes()
    monkeypatch.setattr(pki_module, "CERT_DAYS", 10)  # issue a certificate that expires soon
    ensure_pki(tmp_path, ["192.0.2.11"])
    short = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    assert short.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=11)
    monkeypatch.setattr(pki_module, "CERT_DAYS", 365)
    ensure_pki(tmp_path, ["192.0.2.11"])  # within 30 days of expiry: renewed on start
    fresh = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    assert fresh.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    assert renewed != first.server_cert.read_bytes()


def test_corrupt_key_is_an_error_and_left_alone(tmp_path: Path) -> None:
    created = ensure_pki(tmp_path, [])
    created.ca_key.write_bytes(b"garbage")
    with pytest.raises(errors.Permanent) as error:
        ensure_pki(tmp_path, [])
    assert "ca.key" in str(error.value)
    assert created.ca_key.read_bytes() == b"garbage"


async def test_tls_handshake_shows_client_identity(tmp_path: Path) -> None:
    created = ensure_pki(tmp_path, [])
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=created.server_ssl_context())
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(created.ca_cert))
    client.load_cert_chain(created.admin_cert, created.admin_key)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    writer.close()
    anonymous = ssl.create_default_context(cafile=str(created.ca_cert))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=anonymous)
    writer.close()
    await asyncio.sleep(0.1)
    server.close()
    subject = dict(x[0] for x in seen[0]["subject"])  # type: ignore[index]
    assert subject["commonName"] == "admin" and subject["organizationName"] == "system:masters"
    assert seen[1] is None or seen[1] == {}


def test_kubeconfig(tmp_path: Path) -> None:
    created = ensure_pki(tmp_path, [])
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:6443", created)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "microkube"
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    write_kubeconfig(path, "https://127.0.0.1:6443", created, use_token=True)
    assert yaml.safe_load(path.read_text())["users"][0]["user"]["token"] == created.admin_token.read_text().strip()


def test_service_account_tokens(tmp_path: Path) -> None:
    created = ensure_pki(tmp_path, [])
    issuer = TokenIssuer(created.sa_key)
    token, expires = issuer.issue("ns", "robot", "uid-1", ["api"], 3600)
    claims = issuer.verify(token, ["api"])
    assert claims["sub"] == "system:serviceaccount:ns:robot" and expires.endswith("Z")
    with pytest.raises(errors.Unauthenticated, match="audience"):
        issuer.verify(token, ["other"])
    header, body, signature = token.split(".")
    with pytest.raises(errors.Unauthenticated, match="signature"):
        issuer.verify(f"{header}.{body}.{signature[::-1]}", ["api"])
    expired, _ = issuer.issue("ns", "robot", "uid-1", ["api"], -10)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        issuer.verify(expired, ["api"])
    other = ensure_pki(tmp_path / "other", [])
    with pytest.raises(errors.Unauthenticated):
        TokenIssuer(other.sa_key).verify(token, ["api"])
    assert serialization.load_pem_public_key(created.sa_pub.read_bytes())


async def test_authenticators_and_default_authorizer(tmp_path: Path) -> None:
    created = ensure_pki(tmp_path, [])
    (tmp_path / "tokens.csv").write_text('t0ken,alice,u-1,"dev,ops"\n')
    tokens = TokenFileAuthenticator(tmp_path)
    admin_token = created.admin_token.read_text().strip()
    admin = await tokens.authenticate(Credentials({"Authorization": f"Bearer {admin_token}"}))
    assert admin is not None and admin.name == "admin"
    alice = await tokens.authenticate(Credentials({"authorization": "Bearer t0ken"}))
    assert alice is not None and alice.groups[:2] == ("dev", "ops")
    assert await tokens.authenticate(Credentials({"Authorization": "Bearer nope"})) is None
    issuer = TokenIssuer(created.sa_key)
    token, _ = issuer.issue("ns", "robot", "u", [issuer.issuer], 3600)
    robot = await ServiceAccountAuthenticator(issuer).authenticate(Credentials({"Authorization": f"Bearer {token}"}))
    assert robot is not None and robot.name == "system:serviceaccount:ns:robot"
    authorizer = AllowAuthenticated()
    decision, _ = await authorizer.authorize(Attributes(user=alice, verb="get", resource="pods"))
    assert decision is Decision.ALLOW
    anonymous = UserInfo("system:anonymous", groups=("system:unauthenticated",))
    assert (await authorizer.authorize(Attributes(user=anonymous, verb="get", resource="pods")))[0] is Decision.DENY
    assert (await authorizer.authorize(Attributes(user=anonymous, verb="get", path="/healthz")))[0] is Decision.ALLOW
