"""Node join with a bootstrap token against a real API server, with the certificate controllers running in
the test's event loop: identity of the issued certificate, what a bootstrap token may do, wrong and
expired tokens, CSRs left for a human, serving certificates, cluster-info signatures."""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from microkube import bootstrap
from microkube.apiserver.authplugin import AllowAuthenticated, BootstrapTokenAuthenticator, reader_lookup
from microkube.client import Client, Resource
from microkube.controllers import certificates
from microkube.testing import Kubectl, ServerProcess, running_controllers
from microkube_interfaces import errors
from microkube_interfaces.auth import Attributes, Credentials, Decision, UserInfo

WAIT = 30.0


@pytest.fixture
async def admin(microkube_server: ServerProcess) -> AsyncIterator[Client]:
    """An admin client, with csrapproving, csrsigning and bootstrapsigner running against the server."""
    pki = microkube_server.data_dir / "pki"
    client = Client.from_kubeconfig(microkube_server.kubeconfig)
    registrations = certificates.registrations({"cluster_signing_cert_file": pki / "ca.crt",
                                                "cluster_signing_key_file": pki / "ca.key"})
    try:
        async with running_controllers(client, *registrations):
            yield client
    finally:
        await client.close()
        await asyncio.sleep(0.05)  # lets aiohttp finish closing its TLS transports before the loop ends


async def eventually(check: Any, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        try:
            result = await check()
        except (errors.NotFound, errors.Unauthenticated, AssertionError):
            result = None
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def signed_token(admin: Client, server: ServerProcess, **kwargs: Any) -> str:
    """A new token, once cluster-info carries its signature."""
    token = await bootstrap.create_token(admin, **kwargs)
    await eventually(lambda: bootstrap.fetch_cluster_info(server.url, token), "the cluster-info signature")
    return token


async def whoami(client: Client) -> dict[str, Any]:
    review = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    user: dict[str, Any] = review["status"]["userInfo"]
    return user


def ca_pem(server: ServerProcess) -> bytes:
    return (server.data_dir / "pki" / "ca.crt").read_bytes()


def request_pem(common_name: str, organizations: tuple[str, ...] = (bootstrap.NODES_GROUP,)) -> str:
    subject = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    pem = bootstrap.make_request(ec.generate_private_key(ec.SECP256R1()), subject)
    return base64.b64encode(pem).decode()


def csr_body(common_name: str, organizations: tuple[str, ...] = (bootstrap.NODES_GROUP,),
             signer: str = bootstrap.CLIENT_SIGNER) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "test-csr-"},
            "spec": {"request": request_pem(common_name, organizations), "signerName": signer,
                     "usages": list(bootstrap.CLIENT_USAGES)}}


# -- against the real server ------------------------------------------------------------------------

async def test_join_gets_the_nodes_own_identity(admin: Client, microkube_server: ServerProcess,
                                                tmp_path: Path) -> None:
    token = await signed_token(admin, microkube_server, description="test join")
    digest = bootstrap.ca_cert_hash(ca_pem(microkube_server))
    kubeconfig = await bootstrap.join(microkube_server.url, token, node_name="node-a", data_dir=tmp_path,
                                      ca_cert_hash=digest, wait_seconds=WAIT)
    assert kubeconfig == tmp_path / "kubelet.kubeconfig"
    async with Client.from_kubeconfig(kubeconfig) as node:
        user = await whoami(node)
    assert user["username"] == "system:node:node-a"
    assert "system:nodes" in user["groups"]
    assert (tmp_path / "pki" / "kubelet-client.key").stat().st_mode & 0o777 == 0o600
    csrs = (await admin.list(bootstrap.CSRS))["items"]
    mine = [c for c in csrs if c["spec"]["username"] == f"system:bootstrap:{token.split('.')[0]}"]
    assert mine and mine[0]["status"]["conditions"][0]["reason"] == "AutoApproved"
    assert "system:bootstrappers" in mine[0]["spec"]["groups"]
    # joining again reuses the valid certificate: no new request
    before = (tmp_path / "pki" / "kubelet-client.crt").read_bytes()
    assert await bootstrap.join(microkube_server.url, token, node_name="node-a", data_dir=tmp_path) == kubeconfig
    assert (tmp_path / "pki" / "kubelet-client.crt").read_bytes() == before
    assert len((await admin.list(bootstrap.CSRS))["items"]) == len(csrs)


async def test_a_bootstrap_token_may_only_request_certificates(admin: Client, microkube_server: ServerProcess
                                                               ) -> None:
    token = await bootstrap.create_token(admin)
    context = bootstrap._tls_context(ca_pem(microkube_server))
    async with Client(microkube_server.url, ssl_context=context, token=token) as joining:
        assert (await whoami(joining))["username"] == f"system:bootstrap:{token.split('.')[0]}"
        created = await joining.create(bootstrap.CSRS, csr_body("system:node:perm"))
        assert created["spec"]["username"] == f"system:bootstrap:{token.split('.')[0]}"
        await joining.get(bootstrap.CSRS, created["metadata"]["name"])
        await joining.list(bootstrap.CSRS)
        with pytest.raises(errors.Forbidden, match="bootstrap tokens may only create, get, list and watch"):
            await joining.list(Resource("", "v1", "pods"), "default")
        with pytest.raises(errors.Forbidden):
            await joining.get(bootstrap.SECRETS, f"bootstrap-token-{token.split('.')[0]}", "kube-system")
        with pytest.raises(errors.Forbidden):
            await joining.delete(bootstrap.CSRS, created["metadata"]["name"])
    # anonymous: cluster-info only
    async with Client(microkube_server.url, ssl_context=context) as anonymous:
        await eventually(lambda: anonymous.get(bootstrap.CONFIGMAPS, "cluster-info", "kube-public"), "cluster-info")
        with pytest.raises(errors.Unauthenticated):
            await anonymous.get(bootstrap.CONFIGMAPS, "kube-root-ca.crt", "kube-public")
        with pytest.raises(errors.Unauthenticated):
            await anonymous.list(bootstrap.CONFIGMAPS, "kube-public")


async def test_wrong_and_expired_tokens_are_refused(admin: Client, microkube_server: ServerProcess,
                                                   tmp_path: Path) -> None:
    token = await signed_token(admin, microkube_server)
    token_id = token.split(".")[0]
    wrong = f"{token_id}.{'0' * 16}"
    with pytest.raises(errors.Unauthenticated, match="the join token does not match this cluster"):
        await bootstrap.join(microkube_server.url, wrong, node_name="node-w", data_dir=tmp_path)
    with pytest.raises(errors.Unauthenticated, match="no cluster-info signature for token id 'zzzzzz'"):
        await bootstrap.join(microkube_server.url, "zzzzzz.0123456789abcdef", node_name="node-w", data_dir=tmp_path,
                             wait_seconds=0.5)
    with pytest.raises(errors.Unauthenticated, match="as --ca-cert-hash says"):
        await bootstrap.join(microkube_server.url, token, node_name="node-w", data_dir=tmp_path,
                             ca_cert_hash="sha256:" + "0" * 64)
    with pytest.raises(errors.Invalid, match="token"):
        await bootstrap.join(microkube_server.url, "not-a-token", node_name="node-w", data_dir=tmp_path)
    assert not (tmp_path / "kubelet.kubeconfig").exists()
    context = bootstrap._tls_context(ca_pem(microkube_server))
    async with Client(microkube_server.url, ssl_context=context, token=wrong) as client:
        with pytest.raises(errors.Unauthenticated):
            await client.list(bootstrap.CSRS)
    # expired: refused by the authenticator, and unsigned in cluster-info
    expired = bootstrap.generate_token()
    secret = bootstrap.token_secret(expired, ttl_seconds=60,
                                    now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
    await admin.create(bootstrap.SECRETS, secret, "kube-system")
    async with Client(microkube_server.url, ssl_context=context, token=expired) as client:
        with pytest.raises(errors.Unauthenticated, match="expired"):
            await client.list(bootstrap.CSRS)
    await signed_token(admin, microkube_server)  # cluster-info written after the expired token existed
    data = (await admin.get(bootstrap.CONFIGMAPS, "cluster-info", "kube-public"))["data"]
    assert f"jws-kubeconfig-{expired.split('.')[0]}" not in data
    # a deleted token's signature goes away
    await bootstrap.delete_token(admin, token_id)

    async def unsigned() -> bool:
        data = (await admin.get(bootstrap.CONFIGMAPS, "cluster-info", "kube-public"))["data"]
        return f"jws-kubeconfig-{token_id}" not in data
    await eventually(unsigned, "the deleted token's signature to go")


async def test_other_requests_wait_for_a_human(admin: Client, microkube_server: ServerProcess,
                                               tmp_path: Path) -> None:
    token = await signed_token(admin, microkube_server)
    node_config = await bootstrap.join(microkube_server.url, token, node_name="node-h", data_dir=tmp_path,
                                       wait_seconds=WAIT)
    context = bootstrap._tls_context(ca_pem(microkube_server))
    async with Client.from_kubeconfig(node_config) as node, \
            Client(microkube_server.url, ssl_context=context, token=token) as joining:
        other_node = await node.create(bootstrap.CSRS, csr_body("system:node:node-other"))
        extra_org = await joining.create(bootstrap.CSRS, csr_body("system:node:node-x",
                                                                  (bootstrap.NODES_GROUP, "system:masters")))
        renewal = await node.create(bootstrap.CSRS, csr_body("system:node:node-h"))

        async def issued(name: str) -> bool:
            return bool((await admin.get(bootstrap.CSRS, name)).get("status", {}).get("certificate"))
        await eventually(lambda: issued(renewal["metadata"]["name"]), "the renewal to be issued")
    for pending in (other_node, extra_org):
        current = await admin.get(bootstrap.CSRS, pending["metadata"]["name"])
        assert not current.get("status", {}).get("conditions"), current
    kubectl = Kubectl(str(find_kubectl_or_skip()), microkube_server.kubeconfig, tmp_path / "home")
    name = other_node["metadata"]["name"]
    assert "Pending" in kubectl("get", "csr", name)
    kubectl("certificate", "approve", name)
    await eventually(lambda: issued(name), "the hand-approved request to be signed")
    approved = await admin.get(bootstrap.CSRS, name)
    condition = approved["status"]["conditions"][0]
    assert condition["type"] == "Approved" and condition["reason"] == "KubectlApprove"
    cert = x509.load_pem_x509_certificate(base64.b64decode(approved["status"]["certificate"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:node-other"
    assert "Approved,Issued" in kubectl("get", "csr", name)
    # the signer refuses what its signer name does not allow, even when a human approved it
    kubectl("certificate", "approve", extra_org["metadata"]["name"])

    async def failed() -> bool:
        status = (await admin.get(bootstrap.CSRS, extra_org["metadata"]["name"])).get("status", {})
        return any(c["type"] == "Failed" for c in status.get("conditions") or [])
    await eventually(failed, "the signer to refuse extra organizations")
    # denied stays unsigned; approval and denial exclude each other
    denied = await admin.create(bootstrap.CSRS, csr_body("system:node:node-d"))
    kubectl("certificate", "deny", denied["metadata"]["name"])
    result = kubectl.run("certificate", "approve", denied["metadata"]["name"], check=False)
    assert result.returncode != 0 and "Denied" in result.stderr + result.stdout


def find_kubectl_or_skip() -> str:
    from microkube.testing import find_kubectl

    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    return binary


async def test_serving_certificate_verifies_against_the_ca(admin: Client, microkube_server: ServerProcess,
                                                           tmp_path: Path) -> None:
    token = await signed_token(admin, microkube_server)
    kubeconfig = await bootstrap.join(microkube_server.url, token, node_name="node-s", data_dir=tmp_path,
                                      wait_seconds=WAIT)
    addresses = ["127.0.0.1", "node-s.example", "::1"]
    async with Client.from_kubeconfig(kubeconfig) as node:
        cert_path, key_path = await bootstrap.serving_certificate(node, "node-s", addresses, tmp_path,
                                                                  wait_seconds=WAIT)
        again = await bootstrap.serving_certificate(node, "node-s", addresses[:2], tmp_path)
    assert again == (cert_path, key_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem(microkube_server)))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["node-s.example"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert key_path.stat().st_mode & 0o777 == 0o600
    csr = next(c for c in (await admin.list(bootstrap.CSRS))["items"]
               if c["spec"]["signerName"] == bootstrap.SERVING_SIGNER and c["spec"]["username"] == "system:node:node-s")
    assert csr["status"]["conditions"][0]["reason"] == "AutoApproved"


async def test_cluster_info_signature(admin: Client, microkube_server: ServerProcess) -> None:
    token = await signed_token(admin, microkube_server)
    other = await signed_token(admin, microkube_server)
    token_id, secret = bootstrap.parse_token(token)
    async with aiohttp.ClientSession() as session, session.get(
            f"{microkube_server.url}/api/v1/namespaces/kube-public/configmaps/cluster-info", ssl=False) as response:
        assert response.status == 200
        data = (await response.json())["data"]
    kubeconfig, ca = await bootstrap.fetch_cluster_info(microkube_server.url, token)
    assert ca == ca_pem(microkube_server) and kubeconfig == data["kubeconfig"]
    assert "users" not in kubeconfig or "token" not in kubeconfig
    jws = data[f"jws-kubeconfig-{token_id}"]
    assert bootstrap.verify_detached(jws, data["kubeconfig"], token_id, secret)
    assert not bootstrap.verify_detached(jws, data["kubeconfig"], token_id, bootstrap.parse_token(other)[1])
    assert not bootstrap.verify_detached(jws, data["kubeconfig"] + "\n", token_id, secret)


def test_local_credentials(microkube_server: ServerProcess, tmp_path: Path) -> None:
    kubeconfig, cert, key = bootstrap.local_credentials(microkube_server.data_dir, "node-l", tmp_path,
                                                        ["127.0.0.1", "node-l"])
    assert bootstrap.local_credentials(microkube_server.data_dir, "node-l", tmp_path,
                                       ["127.0.0.1"]) == (kubeconfig, cert, key)

    async def check() -> dict[str, Any]:
        async with Client.from_kubeconfig(kubeconfig) as node:
            return await whoami(node)
    user = asyncio.run(check())
    assert user["username"] == "system:node:node-l" and "system:nodes" in user["groups"]
    served = x509.load_pem_x509_certificate(cert.read_bytes())
    served.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem(microkube_server)))


# -- units ------------------------------------------------------------------------------------------

def test_token_format() -> None:
    token = bootstrap.generate_token()
    assert bootstrap.TOKEN_RE.match(token)
    assert bootstrap.parse_token(f" {token}\n") == tuple(token.split("."))
    for bad in ("", "abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde", "abcdef:0123456789abcdef"):
        with pytest.raises(errors.Invalid, match=r"<6 characters \[a-z0-9\]>\.<16 characters"):
            bootstrap.parse_token(bad)
    assert bootstrap.parse_duration("24h") == 86400
    assert bootstrap.parse_duration("1h30m") == 5400
    assert bootstrap.parse_duration("0") == 0
    with pytest.raises(errors.Invalid, match="24h"):
        bootstrap.parse_duration("1 day")


def test_secret_usage_and_expiry() -> None:
    token = "abcdef.0123456789abcdef"
    fields = bootstrap.secret_fields(bootstrap.token_secret(token, ttl_seconds=3600))
    assert bootstrap.usable_for(fields, "authentication", "abcdef") == "0123456789abcdef"
    assert bootstrap.usable_for(fields, "authentication", "abcdeg") is None
    assert bootstrap.usable_for({**fields, "usage-bootstrap-signing": "false"}, "signing", "abcdef") is None
    past = bootstrap.secret_fields(bootstrap.token_secret(
        token, ttl_seconds=60, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2)))
    assert bootstrap.token_expired(past) and bootstrap.usable_for(past, "signing", "abcdef") is None
    assert not bootstrap.token_expired(bootstrap.secret_fields(bootstrap.token_secret(token, ttl_seconds=0)))


class FakeReader:
    def __init__(self, secrets: list[dict[str, Any]]) -> None:
        self.secrets = secrets

    async def list(self, resource: str, namespace: str = "", *, consistent: bool = True) -> list[dict[str, Any]]:
        assert (resource, namespace) == ("secrets", "kube-system")
        return self.secrets


async def test_authenticator_through_an_object_reader() -> None:
    token = "abcdef.0123456789abcdef"
    reader = FakeReader([bootstrap.token_secret(token)])
    authenticator = BootstrapTokenAuthenticator(reader_lookup(reader), cache_seconds=0)
    user = await authenticator.authenticate(Credentials(headers={"Authorization": f"Bearer {token}"}))
    assert user is not None and user.name == "system:bootstrap:abcdef"
    assert set(user.groups) == {"system:bootstrappers", bootstrap.DEFAULT_EXTRA_GROUP, "system:authenticated"}
    assert await authenticator.authenticate(Credentials(headers={"Authorization": "Bearer other-token"})) is None
    with pytest.raises(errors.Unauthenticated, match="abcdef is not valid"):
        await authenticator.authenticate(Credentials(headers={"Authorization": "Bearer abcdef.0000000000000000"}))
    reader.secrets = []
    with pytest.raises(errors.Unauthenticated):
        await authenticator.authenticate(Credentials(headers={"Authorization": f"Bearer {token}"}))


async def test_default_authorizer_for_bootstrappers_and_anonymous() -> None:
    authorizer = AllowAuthenticated()
    joining = UserInfo("system:bootstrap:abcdef", groups=("system:bootstrappers", "system:authenticated"))
    anonymous = UserInfo("system:anonymous", groups=("system:unauthenticated",))

    async def decide(user: UserInfo, verb: str, resource: str, group: str = "", namespace: str = "",
                     name: str = "", subresource: str = "") -> Decision:
        return (await authorizer.authorize(Attributes(user, verb, namespace, group, "v1", resource, subresource,
                                                      name)))[0]
    for verb in ("create", "get", "list", "watch"):
        assert await decide(joining, verb, "certificatesigningrequests", "certificates.k8s.io") is Decision.ALLOW
    assert await decide(joining, "update", "certificatesigningrequests", "certificates.k8s.io",
                        subresource="approval") is Decision.DENY
    assert await decide(joining, "list", "pods", namespace="default") is Decision.DENY
    assert await decide(anonymous, "get", "configmaps", namespace="kube-public", name="cluster-info") \
        is Decision.ALLOW
    assert await decide(anonymous, "list", "configmaps", namespace="kube-public") is Decision.DENY
    assert await decide(anonymous, "get", "configmaps", namespace="default", name="cluster-info") is Decision.DENY
