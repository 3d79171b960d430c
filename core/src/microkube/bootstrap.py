"""Joining a node with one token (kubeadm's TLS bootstrap) and issuing node credentials.

Bootstrap tokens are ``<id>.<secret>`` (6 and 16 characters of ``[a-z0-9]``), stored as Secrets
``kube-system/bootstrap-token-<id>`` of type ``bootstrap.kubernetes.io/token``. The joining agent:

1. reads ``kube-public/cluster-info`` anonymously without trusting the server yet, and checks the
   detached HS256 JWS the bootstrapsigner controller put there for its token id (key: the token
   secret) — only someone who knows the token could have made it — and, if given, the CA's public key
   hash; from then on it trusts that CA;
2. with the token as bearer (user ``system:bootstrap:<id>``, group ``system:bootstrappers``) creates a
   CertificateSigningRequest for ``system:node:<name>`` (signer kube-apiserver-client-kubelet) whose key
   never leaves the node, and waits until the csrapproving and csrsigning controllers issue it;
3. writes ``kubelet.kubeconfig`` with its own certificate and forgets the token.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import string
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from microkube.apiserver.pki import covers
from microkube.client import Client, Resource
from microkube_interfaces import errors

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
TOKEN_FORMAT = "<6 characters [a-z0-9]>.<16 characters [a-z0-9]>, e.g. abcdef.0123456789abcdef"
TOKEN_SECRET_TYPE = "bootstrap.kubernetes.io/token"
TOKEN_SECRET_PREFIX = "bootstrap-token-"
TOKEN_NAMESPACE = "kube-system"
BOOTSTRAPPERS = "system:bootstrappers"
BOOTSTRAP_USER_PREFIX = "system:bootstrap:"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
DEFAULT_EXTRA_GROUP = "system:bootstrappers:microkube:default-node-token"
CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO = "cluster-info"
JWS_PREFIX = "jws-kubeconfig-"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"
CLIENT_USAGES = ("digital signature", "client auth")
SERVING_USAGES = ("digital signature", "key encipherment", "server auth")
KUBELET_KUBECONFIG = "kubelet.kubeconfig"
CLIENT_CERT, CLIENT_KEY = "kubelet-client.crt", "kubelet-client.key"
SERVING_CERT, SERVING_KEY = "kubelet-serving.crt", "kubelet-serving.key"
CA_FILE = "ca.crt"
#: Certificates this close to expiry are issued again instead of reused.
RENEW_BEFORE = datetime.timedelta(days=30)
DEFAULT_WAIT = 120.0

SECRETS = Resource("", "v1", "secrets")
CONFIGMAPS = Resource("", "v1", "configmaps")
CSRS = Resource("certificates.k8s.io", "v1", "certificatesigningrequests", namespaced=False)


class UnsignedToken(errors.Unauthenticated):
    """cluster-info has no signature for this token id (yet: the bootstrapsigner may not have run)."""


# -- tokens ---------------------------------------------------------------------------------------

def parse_token(text: str) -> tuple[str, str]:
    """(id, secret) of a bootstrap token; errors.Invalid naming the expected format."""
    match = TOKEN_RE.match((text or "").strip())
    if match is None:
        raise errors.Invalid.field("token", f"a bootstrap token has the form {TOKEN_FORMAT}; get one with "
                                   "`microkube token create` on the server")
    return match.group(1), match.group(2)


def generate_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return (("".join(secrets.choice(alphabet) for _ in range(6))) + "." +
            "".join(secrets.choice(alphabet) for _ in range(16)))


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration ("24h", "90m", "1h30m", "3600s", "0" = never)."""
    value = text.strip()
    if value == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise errors.Invalid.field("ttl", f"{text!r} is not a duration; use e.g. 24h, 90m, 1h30m or 0 for no expiry")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def token_secret(token: str, *, ttl_seconds: float = 86400.0, description: str = "",
                 groups: tuple[str, ...] = (DEFAULT_EXTRA_GROUP,), now: datetime.datetime | None = None
                 ) -> dict[str, Any]:
    """The Secret that makes ``token`` valid for authentication and cluster-info signing."""
    token_id, token_value = parse_token(token)
    data = {"token-id": token_id, "token-secret": token_value, "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true"}
    if ttl_seconds:
        moment = (now or datetime.datetime.now(datetime.UTC)) + datetime.timedelta(seconds=ttl_seconds)
        data["expiration"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if description:
        data["description"] = description
    if groups:
        data["auth-extra-groups"] = ",".join(groups)
    return {"apiVersion": "v1", "kind": "Secret", "type": TOKEN_SECRET_TYPE,
            "metadata": {"name": TOKEN_SECRET_PREFIX + token_id, "namespace": TOKEN_NAMESPACE},
            "data": {k: _b64(v) for k, v in data.items()}}


def secret_fields(secret: dict[str, Any]) -> dict[str, str]:
    """The decoded data of a bootstrap-token Secret ({} if it is not one)."""
    if secret.get("type") != TOKEN_SECRET_TYPE:
        return {}
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    for key, value in (secret.get("stringData") or {}).items():
        out.setdefault(key, str(value))
    return out


def token_expired(fields: dict[str, str], now: datetime.datetime | None = None) -> bool:
    expiration = fields.get("expiration")
    if not expiration:
        return False
    try:
        moment = datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return True  # an unreadable expiry is treated as expired, as kube-apiserver does
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment <= (now or datetime.datetime.now(datetime.UTC))


def usable_for(fields: dict[str, str], usage: str, token_id: str) -> str | None:
    """The token secret if this Secret's token ``token_id`` may be used for ``usage`` (authentication or
    signing) now, else None."""
    if fields.get("token-id") != token_id or fields.get(f"usage-bootstrap-{usage}") != "true":
        return None
    if token_expired(fields):
        return None
    value = fields.get("token-secret", "")
    return value if re.fullmatch(r"[a-z0-9]{16}", value) else None


async def create_token(client: Client, *, ttl_seconds: float = 86400.0, description: str = "",
                       token: str | None = None) -> str:
    token = token or generate_token()
    await client.create(SECRETS, token_secret(token, ttl_seconds=ttl_seconds, description=description),
                        TOKEN_NAMESPACE, field_manager="microkube-token")
    return token


async def list_tokens(client: Client) -> list[dict[str, str]]:
    """One row per bootstrap token: id, expiration ("" = never), usages, description, groups."""
    found = await client.list(SECRETS, TOKEN_NAMESPACE)
    rows = []
    for secret in found.get("items") or []:
        fields = secret_fields(secret)
        if not fields or not secret["metadata"]["name"].startswith(TOKEN_SECRET_PREFIX):
            continue
        usages = [u for u in ("authentication", "signing") if fields.get(f"usage-bootstrap-{u}") == "true"]
        rows.append({"id": fields.get("token-id", ""), "expiration": fields.get("expiration", ""),
                     "expired": "yes" if token_expired(fields) else "no", "usages": ",".join(usages),
                     "description": fields.get("description", ""), "groups": fields.get("auth-extra-groups", "")})
    return sorted(rows, key=lambda r: r["id"])


async def delete_token(client: Client, token_or_id: str) -> str:
    token_id = token_or_id.split(".", 1)[0]
    if not re.fullmatch(r"[a-z0-9]{6}", token_id):
        raise errors.Invalid.field("id", f"{token_or_id!r} is not a token id (6 characters [a-z0-9]) or a token")
    try:
        await client.delete(SECRETS, TOKEN_SECRET_PREFIX + token_id, TOKEN_NAMESPACE)
    except errors.NotFound:
        raise errors.NotFound(f"bootstrap token {token_id} does not exist (see `microkube token list`)") from None
    return token_id


# -- cluster-info and its signatures ---------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_detached(content: str, token_id: str, token_secret_value: str) -> str:
    """A detached JWS (``header..signature``, HS256, kid = token id) over ``content``, as kubeadm's
    bootstrapsigner writes into cluster-info."""
    header = _b64url(orjson.dumps({"alg": "HS256", "kid": token_id}))
    signing_input = f"{header}.{_b64url(content.encode())}".encode()
    signature = hmac.new(token_secret_value.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}..{_b64url(signature)}"


def verify_detached(jws: str, content: str, token_id: str, token_secret_value: str) -> bool:
    parts = jws.split(".")
    if len(parts) != 3 or parts[1]:
        return False
    try:
        header = orjson.loads(_unb64url(parts[0]))
        signature = _unb64url(parts[2])
    except (ValueError, orjson.JSONDecodeError):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or header.get("kid", token_id) != token_id:
        return False
    signing_input = f"{parts[0]}.{_b64url(content.encode())}".encode()
    expected = hmac.new(token_secret_value.encode(), signing_input, hashlib.sha256).digest()
    return hmac.compare_digest(expected, signature)


def cluster_info_kubeconfig(server_url: str, ca_pem: bytes) -> str:
    """cluster-info's data.kubeconfig: the server and its CA, no credentials."""
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "", "cluster": {"server": server_url,
                                                    "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
              "contexts": [], "current-context": "", "preferences": {}, "users": []}
    text: str = yaml.safe_dump(config, sort_keys=True)
    return text


def ca_cert_hash(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of the first certificate's SubjectPublicKeyInfo (kubeadm's --discovery-token-ca-cert-hash)."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _check_hash(expected: str) -> str:
    algorithm, _, digest = expected.strip().partition(":")
    if algorithm.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise errors.Invalid.field("ca_cert_hash", f"{expected!r} must be sha256:<64 hex digits> (printed by "
                                   "`microkube token create`)")
    return f"sha256:{digest.lower()}"


async def fetch_cluster_info(server_url: str, token: str, ca_cert_hash_value: str | None = None) -> tuple[str, bytes]:
    """(kubeconfig text, CA PEM) from the server's cluster-info, verified with the token (and CA hash)."""
    token_id, token_value = parse_token(token)
    expected_hash = _check_hash(ca_cert_hash_value) if ca_cert_hash_value else None
    url = f"{server_url.rstrip('/')}{CONFIGMAPS.path(CLUSTER_INFO_NAMESPACE, CLUSTER_INFO)}"
    try:
        # deliberately unverified TLS: what comes back is trusted only once its signature checks out
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                         timeout=aiohttp.ClientTimeout(total=30)) as session, \
                session.get(url, headers={"Accept": "application/json"}) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise errors.Retryable(f"cannot reach the API server at {server_url}: {exc}; check --server and that the "
                               "server listens on an address this machine can reach", after=2) from None
    if status == 404:
        raise errors.NotFound(f"{server_url} has no {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO} ConfigMap yet: its "
                              "controller manager (bootstrapsigner) publishes it; is it running?")
    if status >= 400:
        raise errors.Unauthenticated(f"{server_url} refused to show {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO} "
                                     f"anonymously (HTTP {status}); is it a microkube or Kubernetes API server?")
    try:
        data = orjson.loads(body).get("data") or {}
    except (orjson.JSONDecodeError, AttributeError):
        raise errors.Invalid.field("server", f"{server_url} did not answer with a ConfigMap") from None
    kubeconfig = data.get("kubeconfig") or ""
    signature = data.get(JWS_PREFIX + token_id)
    if not signature:
        raise UnsignedToken(
            f"the join token does not match this cluster: {server_url} has no cluster-info signature for token id "
            f"{token_id!r} (the token does not exist, has expired, or was deleted; create one with "
            "`microkube token create` on the server)")
    if not verify_detached(signature, kubeconfig, token_id, token_value):
        raise errors.Unauthenticated(
            f"the join token does not match this cluster: the cluster-info signature for token id {token_id!r} "
            f"does not verify with this token's secret (a mistyped token, or {server_url} is not the cluster "
            "that issued it)")
    try:
        config = yaml.safe_load(kubeconfig)
        ca_pem = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        actual_hash = ca_cert_hash(ca_pem)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise errors.Invalid.field("cluster-info", f"the signed cluster-info kubeconfig has no usable CA: {exc}") \
            from None
    if expected_hash is not None and not hmac.compare_digest(actual_hash, expected_hash):
        raise errors.Unauthenticated(f"the cluster CA's public key hash is {actual_hash}, not {expected_hash} as "
                                     "--ca-cert-hash says: this is not the expected cluster")
    return kubeconfig, ca_pem


# -- certificates -----------------------------------------------------------------------------------

def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _split_hosts(addresses: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(a.strip() for a in addresses if a and a.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def node_subject(node_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                      x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name)])


def make_request(key: ec.EllipticCurvePrivateKey, subject: x509.Name, addresses: list[str] | tuple[str, ...] = ()
                 ) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    names = _split_hosts(addresses)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


_KEY_USAGE_FLAGS = {"digital signature": "digital_signature", "content commitment": "content_commitment",
                    "key encipherment": "key_encipherment", "data encipherment": "data_encipherment",
                    "key agreement": "key_agreement", "cert sign": "key_cert_sign", "crl sign": "crl_sign"}
_EXTENDED_USAGES = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
                    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
                    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING}


def sign_request(request: x509.CertificateSigningRequest, usages: list[str] | tuple[str, ...], ca_pem: bytes,
                 ca_key_pem: bytes, *, seconds: float | None = None) -> bytes:
    """A PEM certificate for ``request`` from the CA: the request's subject and SANs, ``usages`` as key and
    extended key usages, valid ``seconds`` (default one year, never past the CA's own expiry)."""
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise errors.Permanent("the cluster CA key is neither EC nor RSA")
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(seconds=seconds or 365 * 86400), ca_cert.not_valid_after_utc)
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    for usage in usages:
        if usage in _KEY_USAGE_FLAGS:
            flags[_KEY_USAGE_FLAGS[usage]] = True
    builder = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(ca_cert.subject)
               .public_key(request.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**flags), critical=True))
    extended = [_EXTENDED_USAGES[u] for u in usages if u in _EXTENDED_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(sans, critical=False)
    except x509.ExtensionNotFound:
        pass
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _usable_cert(cert_path: Path, key_path: Path, common_name: str, *, addresses: list[str] | tuple[str, ...] = (),
                 ca_pem: bytes | None = None) -> bool:
    """Whether an existing certificate/key pair is for ``common_name``, far from expiry, signed by the CA
    (when known), matches its key and covers ``addresses``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != common_name:
        return False
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - now < min(RENEW_BEFORE, (cert.not_valid_after_utc - cert.not_valid_before_utc) / 5):
        return False
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo):
        return False
    if ca_pem is not None:
        ca = x509.load_pem_x509_certificate(ca_pem)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return not addresses or covers(cert, tuple(addresses))


def write_kubeconfig(path: Path, server_url: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
                     user: str) -> Path:
    """A kubeconfig (0600) with the CA and the client certificate embedded."""
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "microkube", "cluster": {
            "server": server_url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"client-certificate-data": base64.b64encode(cert_pem).decode(),
                                          "client-key-data": base64.b64encode(key_pem).decode()}}],
        "contexts": [{"name": "microkube", "context": {"cluster": "microkube", "user": user}}],
        "current-context": "microkube", "preferences": {},
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)
    return path


def _kubeconfig_server(path: Path) -> str | None:
    try:
        config = yaml.safe_load(path.read_text())
        return str(config["clusters"][0]["cluster"]["server"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


# -- CSRs -----------------------------------------------------------------------------------------

async def request_certificate(client: Client, request_pem: bytes, signer: str, usages: tuple[str, ...], *,
                              generate_name: str = "node-csr-", wait_seconds: float = DEFAULT_WAIT) -> bytes:
    """Create a CSR and wait until it carries a certificate (PEM); a clear error if it is denied or fails, or
    if nothing signs it within ``wait_seconds``."""
    created = await client.create(CSRS, {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": generate_name},
        "spec": {"request": base64.b64encode(request_pem).decode(), "signerName": signer, "usages": list(usages)}})
    name = created["metadata"]["name"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.1
    current = created
    while True:
        status = current.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Denied", "Failed") and condition.get("status", "True") == "True":
                raise errors.Forbidden(f"certificate signing request {name} was {condition['type'].lower()}: "
                                       f"{condition.get('reason', '')} {condition.get('message', '')}".rstrip())
        if status.get("certificate"):
            return base64.b64decode(status["certificate"])
        if loop.time() >= deadline:
            approved = any(c.get("type") == "Approved" for c in status.get("conditions") or [])
            raise errors.Retryable(
                f"certificate signing request {name} ({signer}) was not "
                f"{'signed' if approved else 'approved'} within {wait_seconds:.0f} s: a controller manager with the "
                "csrapproving and csrsigning controllers and the cluster CA key must run (microkube server runs "
                f"one), or approve it by hand: kubectl certificate approve {name}", after=5)
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)
        current = await client.get(CSRS, name)


def _tls_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


async def join(server_url: str, token: str, *, node_name: str, data_dir: Path, ca_cert_hash: str | None = None,
               wait_seconds: float = DEFAULT_WAIT) -> Path:
    """Join the cluster at ``server_url`` as node ``node_name`` with a bootstrap token; returns the path of
    ``data_dir/kubelet.kubeconfig`` (the node's own client certificate, user system:node:<name>)."""
    parse_token(token)
    if ca_cert_hash:
        _check_hash(ca_cert_hash)
    data_dir = Path(data_dir)
    pki = data_dir / "pki"
    kubeconfig = data_dir / KUBELET_KUBECONFIG
    server_url = server_url.rstrip("/")
    ca_path = pki / CA_FILE
    if kubeconfig.exists() and _kubeconfig_server(kubeconfig) == server_url and ca_path.exists() and \
            _usable_cert(pki / CLIENT_CERT, pki / CLIENT_KEY, NODE_USER_PREFIX + node_name,
                         ca_pem=ca_path.read_bytes()) and \
            (ca_cert_hash is None or ca_cert_hash_matches(ca_path.read_bytes(), ca_cert_hash)):
        return kubeconfig
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        # as kubeadm's discovery: retry until the server answers and cluster-info carries our signature
        try:
            _, ca_pem = await fetch_cluster_info(server_url, token, ca_cert_hash)
            break
        except (errors.NotFound, errors.Retryable, UnsignedToken):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
    key = _new_key()
    request_pem = make_request(key, node_subject(node_name))
    async with Client(server_url, ssl_context=_tls_context(ca_pem), token=token.strip(),
                      user_agent=f"microkube-agent/{node_name} (bootstrap)") as client:
        try:
            cert_pem = await request_certificate(client, request_pem, CLIENT_SIGNER, CLIENT_USAGES,
                                                   wait_seconds=wait_seconds)
        except errors.Unauthenticated as exc:
            raise errors.Unauthenticated(f"the API server refused the join token: {exc}; it may have expired or "
                                         "been deleted (microkube token list)") from None
    key_pem = _key_pem(key)
    _write(pki / CA_FILE, ca_pem)
    _write(pki / CLIENT_KEY, key_pem, 0o600)
    _write(pki / CLIENT_CERT, cert_pem)
    return write_kubeconfig(kubeconfig, server_url, ca_pem, cert_pem, key_pem, NODE_USER_PREFIX + node_name)


def ca_cert_hash_matches(ca_pem: bytes, expected: str) -> bool:
    return hmac.compare_digest(ca_cert_hash(ca_pem), _check_hash(expected))


async def serving_certificate(client: Client, node_name: str, addresses: list[str], data_dir: Path,
                              *, wait_seconds: float = DEFAULT_WAIT) -> tuple[Path, Path]:
    """The node's kubelet serving certificate (signer kubernetes.io/kubelet-serving, SANs = ``addresses``),
    requested with the node's own credentials (``client``); (cert, key) paths under ``data_dir/pki``.
    A valid one that covers the addresses is reused."""
    if not addresses:
        raise errors.Invalid.field("addresses", "a serving certificate needs at least one IP address or DNS name")
    pki = Path(data_dir) / "pki"
    cert_path, key_path = pki / SERVING_CERT, pki / SERVING_KEY
    ca_path = pki / CA_FILE
    if _usable_cert(cert_path, key_path, NODE_USER_PREFIX + node_name, addresses=addresses,
                    ca_pem=ca_path.read_bytes() if ca_path.exists() else None):
        return cert_path, key_path
    key = _new_key()
    cert_pem = await request_certificate(client, make_request(key, node_subject(node_name), addresses),
                                         SERVING_SIGNER, SERVING_USAGES, wait_seconds=wait_seconds)
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert_pem)
    return cert_path, key_path


def local_credentials(server_data_dir: Path, node_name: str, node_dir: Path, addresses: list[str]
                      ) -> tuple[Path, Path, Path]:
    """For a node on the server's own machine (CA key readable): its client kubeconfig and serving certificate
    issued directly from the server's PKI, no token. Returns (kubeconfig, serving cert, serving key)."""
    server_pki = Path(server_data_dir) / "pki"
    try:
        ca_pem = (server_pki / "ca.crt").read_bytes()
        ca_key_pem = (server_pki / "ca.key").read_bytes()
    except OSError as exc:
        raise errors.Permanent(f"cannot read the cluster CA in {server_pki}: {exc.strerror}; start `microkube server` "
                               "with this data dir first, or join with a token") from None
    server_url = _kubeconfig_server(Path(server_data_dir) / "kubeconfig")
    if server_url is None:
        raise errors.Permanent(f"{server_data_dir}/kubeconfig is missing or unreadable: the server writes it when it "
                               "starts; start it first")
    pki = Path(node_dir) / "pki"
    kubeconfig = Path(node_dir) / KUBELET_KUBECONFIG
    user = NODE_USER_PREFIX + node_name
    if not (kubeconfig.exists() and _kubeconfig_server(kubeconfig) == server_url and
            _usable_cert(pki / CLIENT_CERT, pki / CLIENT_KEY, user, ca_pem=ca_pem)):
        key = _new_key()
        request = x509.load_pem_x509_csr(make_request(key, node_subject(node_name)))
        cert_pem = sign_request(request, CLIENT_USAGES, ca_pem, ca_key_pem)
        _write(pki / CA_FILE, ca_pem)
        _write(pki / CLIENT_KEY, _key_pem(key), 0o600)
        _write(pki / CLIENT_CERT, cert_pem)
        write_kubeconfig(kubeconfig, server_url, ca_pem, cert_pem, _key_pem(key), user)
    cert_path, key_path = pki / SERVING_CERT, pki / SERVING_KEY
    if not _usable_cert(cert_path, key_path, user, addresses=addresses, ca_pem=ca_pem):
        if not addresses:
            raise errors.Invalid.field("addresses", "a serving certificate needs at least one IP address or DNS name")
        key = _new_key()
        request = x509.load_pem_x509_csr(make_request(key, node_subject(node_name), addresses))
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, sign_request(request, SERVING_USAGES, ca_pem, ca_key_pem))
    return kubeconfig, cert_path, key_path


# -- `microkube token` ------------------------------------------------------------------------------

async def token_command(args: Any, data_dir: Path) -> int:
    """``microkube token create|list|delete`` against the server of ``--kubeconfig`` or DATA_DIR/kubeconfig."""
    import sys

    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else Path(data_dir) / "kubeconfig"
    if not kubeconfig.is_file():
        raise errors.Invalid.field("kubeconfig", f"{kubeconfig} does not exist: run this on the server (--data-dir "
                                   "of `microkube server`) or give an admin --kubeconfig")
    if args.action == "delete" and not args.id:
        raise errors.Invalid.field("id", "token delete needs the token or its id (see `microkube token list`)")
    ttl = parse_duration(args.ttl) if args.action == "create" else 0.0
    try:
        client = Client.from_kubeconfig(kubeconfig, user_agent="microkube-token")
    except (KeyError, IndexError, ValueError, OSError, yaml.YAMLError) as exc:
        raise errors.Invalid.field("kubeconfig", f"{kubeconfig} is not a usable kubeconfig: {exc}") from None
    async with client:
        if args.action == "create":
            token = await create_token(client, ttl_seconds=ttl, description=args.description)
            config = yaml.safe_load(kubeconfig.read_text())
            cluster = config["clusters"][0]["cluster"]
            ca_pem = base64.b64decode(cluster["certificate-authority-data"])
            server = str(cluster["server"])
            print(token)
            print(f"microkube agent --server {server} --token {token} --ca-cert-hash {ca_cert_hash(ca_pem)}",
                  flush=True)
            host = server.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
            if host in ("localhost", "127.0.0.1", "::1"):
                print(f"note: {server} is this machine's loopback address; from another machine use an address of "
                      "this server it can reach (start the server with --listen 0.0.0.0:PORT --advertise-host IP)",
                      file=sys.stderr)
        elif args.action == "list":
            rows = [("ID", "EXPIRES", "EXPIRED", "USAGES", "DESCRIPTION")]
            for row in await list_tokens(client):
                rows.append((row["id"], row["expiration"] or "<never>", row["expired"], row["usages"],
                             row["description"]))
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for line in rows:
                print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        else:
            print(f"bootstrap token {await delete_token(client, args.id)} deleted")
    return 0
