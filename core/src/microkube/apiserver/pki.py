"""The cluster PKI under DATA/pki: a CA, the serving certificate, the admin credentials, the SA key.

Created on first start and reused afterwards. The serving certificate is renewed on start when it
is within RENEW_BEFORE of expiry or no longer covers the hosts the server answers on (expired
certificates that only rotate by hand are a known pain of small distributions). A file that exists
but cannot be read is an error naming it: silently regenerating would break every client.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from microkube_interfaces import errors

CA_DAYS = 3650
CERT_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
DEFAULT_SANS = ("127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local")
SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class PKI:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    admin_token: Path

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.server_cert, self.server_key)
        context.load_verify_locations(self.ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL  # client certificates are verified when presented
        return context

    def issue_client_cert(self, common_name: str, organizations: tuple[str, ...] = (),
                          days: int = CERT_DAYS) -> tuple[bytes, bytes]:
        ca_cert, ca_key = _load_cert(self.ca_cert), _load_key(self.ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_name(common_name, organizations), key, ca_cert.subject, ca_key, days, client=True)
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_serving_cert(self, common_name: str, hosts: tuple[str, ...] | list[str],
                           days: int = CERT_DAYS) -> tuple[bytes, bytes]:
        """A CA-signed serving certificate (PEM cert, PEM key) whose SANs are ``hosts`` (IPs or DNS names),
        e.g. a kubelet's for its node addresses."""
        if not hosts:
            raise errors.Invalid.field("hosts", "a serving certificate needs at least one address or name")
        ca_cert, ca_key = _load_cert(self.ca_cert), _load_key(self.ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_name(common_name), key, ca_cert.subject, ca_key, days, hosts=tuple(hosts))
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


#: The API server's client identity towards kubelets (kubeadm's apiserver-kubelet-client).
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"


def kubelet_client_credentials(pki_dir: Path) -> tuple[Path, Path, Path]:
    """(CA cert, client cert, client key) the API server presents to kubelets, issued once from the cluster
    CA under ``pki_dir`` (CN=kube-apiserver-kubelet-client, O=system:masters) and renewed near expiry."""
    directory = Path(pki_dir)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    cert_path, key_path = directory / "apiserver-kubelet-client.crt", directory / "apiserver-kubelet-client.key"
    if not ca_cert.exists() or not ca_key.exists():
        raise errors.Permanent(f"no cluster CA in {directory} (ca.crt, ca.key): the API server cannot make its "
                               "kubelet client certificate")
    issuer = _load_cert(ca_cert)
    if cert_path.exists() and key_path.exists():
        current = _load_cert(cert_path)
        _load_key(key_path)
        if _fresh(current) and current.issuer == issuer.subject:
            return ca_cert, cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(_name(KUBELET_CLIENT_CN, ("system:masters",)), key, issuer.subject, _load_key(ca_key), CERT_DAYS,
                 client=True)
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ca_cert, cert_path, key_path


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise errors.Permanent(f"cannot read certificate {path}: {exc}; restore it or move the pki directory "
                               "away to create a new cluster CA (clients then need the new kubeconfig)") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise errors.Permanent(f"cannot read private key {path}: {exc}; restore it or move the pki directory "
                               "away to create a new cluster CA (clients then need the new kubeconfig)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise errors.Permanent(f"private key {path} is neither EC nor RSA")
    return key


def _sign(subject: x509.Name, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, days: int, *, ca: bool = False,
          client: bool = False, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                        critical=True)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def covers(cert: x509.Certificate, hosts: tuple[str, ...]) -> bool:
    """The certificate's subject alternative names include every host (IP addresses compared as addresses)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(
        sans.get_values_for_type(x509.DNSName))
    return all(str(ipaddress.ip_address(h)) in present if _is_ip(h) else h in present for h in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE


def ensure_pki(data_dir: Path, hosts: list[str] | tuple[str, ...] = ()) -> PKI:
    directory = Path(data_dir) / "pki"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    pki = PKI(directory, directory / "ca.crt", directory / "ca.key", directory / "apiserver.crt",
              directory / "apiserver.key", directory / "admin.crt", directory / "admin.key", directory / "sa.key",
              directory / "sa.pub", directory / "admin.token")
    if pki.ca_cert.exists() and pki.ca_key.exists():
        ca_cert, ca_key = _load_cert(pki.ca_cert), _load_key(pki.ca_key)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = _name("microkube-ca")
        ca_cert = _sign(subject, ca_key, subject, ca_key, CA_DAYS, ca=True)
        _write_private(pki.ca_key, _key_pem(ca_key))
        pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    all_hosts = tuple(dict.fromkeys((*DEFAULT_SANS, SERVICE_IP, *hosts)))
    renew = True
    if pki.server_cert.exists() and pki.server_key.exists():
        current = _load_cert(pki.server_cert)
        _load_key(pki.server_key)
        renew = not (_fresh(current) and covers(current, all_hosts) and current.issuer == ca_cert.subject)
    if renew:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_name("microkube-apiserver"), key, ca_cert.subject, ca_key, CERT_DAYS, hosts=all_hosts)
        _write_private(pki.server_key, _key_pem(key))
        pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    admin_renew = True
    if pki.admin_cert.exists() and pki.admin_key.exists():
        admin_renew = not _fresh(_load_cert(pki.admin_cert))
        _load_key(pki.admin_key)
    if admin_renew:
        cert_pem, key_pem = pki.issue_client_cert("admin", ("system:masters",))
        _write_private(pki.admin_key, key_pem)
        _write_private(pki.admin_cert, cert_pem)
    if pki.sa_key.exists():
        sa_key = _load_key(pki.sa_key)
    else:
        sa_key = ec.generate_private_key(ec.SECP256R1())
        _write_private(pki.sa_key, _key_pem(sa_key))
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    if not pki.admin_token.exists():
        _write_private(pki.admin_token, secrets.token_urlsafe(32).encode() + b"\n")
    return pki
