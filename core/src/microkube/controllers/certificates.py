"""Certificate controllers of kube-controller-manager: csrapproving, csrsigning and bootstrapsigner.

- csrapproving approves (condition Approved, reason AutoApproved) the CertificateSigningRequests of
  node bootstrap and renewal: kubelet client certificates requested by a bootstrap token
  (group system:bootstrappers) or by the node itself, and kubelet serving certificates a node requests
  for its own name with IP/DNS SANs only. Anything else waits for a human (`kubectl certificate approve`).
- csrsigning signs approved requests of the kubelet and kube-apiserver-client signers with the cluster CA
  (--cluster-signing-cert-file/--cluster-signing-key-file); a request a signer must refuse gets Failed.
- bootstrapsigner keeps kube-public/cluster-info signed for every bootstrap token Secret with
  usage-bootstrap-signing: one detached JWS per token id, removed when the token is deleted or expires.
  If cluster-info is missing it publishes it (the controller manager's server URL and the cluster CA);
  an existing kubeconfig there is kept, so an operator may point it at an advertised address.
"""

from __future__ import annotations

import base64
import datetime
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from microkube import bootstrap
from microkube.client import Resource
from microkube_interfaces import errors
from microkube_interfaces.controllers import ControllerContext, ControllerRegistration, Outcome, Reconciler, ResourceRef

log = logging.getLogger(__name__)

CSRS = ResourceRef("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest",
                   namespaced=False)
CONFIGMAPS = ResourceRef("", "v1", "configmaps", "ConfigMap")
SECRETS = ResourceRef("", "v1", "secrets", "Secret")
CSR_RESOURCE = Resource("certificates.k8s.io", "v1", "certificatesigningrequests", namespaced=False)
CONFIGMAP_RESOURCE = Resource("", "v1", "configmaps")
API_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
SIGNERS = (bootstrap.CLIENT_SIGNER, bootstrap.SERVING_SIGNER, API_CLIENT_SIGNER)
CLUSTER_INFO_KEY = f"{bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO}"
#: Allowed usage sets, as kube-controller-manager's approver accepts them.
CLIENT_USAGE_SETS = (frozenset({"digital signature", "client auth"}),
                     frozenset({"digital signature", "key encipherment", "client auth"}))
SERVING_REQUIRED = frozenset({"server auth"})
SERVING_ALLOWED = frozenset({"digital signature", "key encipherment", "server auth"})
#: Longest wait before bootstrapsigner looks again (a token may expire in between).
MAX_RESYNC = 3600.0


def _conditions(csr: dict[str, Any]) -> set[str]:
    return {c.get("type", "") for c in (csr.get("status") or {}).get("conditions") or []
            if c.get("status", "True") == "True"}


def _subject(request: x509.CertificateSigningRequest) -> tuple[list[str], list[str], bool]:
    """(common names, organizations, whether the subject has any other attribute)."""
    common = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    other = any(a.oid not in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME) for a in request.subject)
    return common, orgs, other


def _sans(request: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _node_subject_problem(request: x509.CertificateSigningRequest) -> str | None:
    common, orgs, other = _subject(request)
    if len(common) != 1 or not common[0].startswith(bootstrap.NODE_USER_PREFIX) or \
            common[0] == bootstrap.NODE_USER_PREFIX:
        return "the subject's common name must be system:node:<node name>"
    if orgs != [bootstrap.NODES_GROUP] or other:
        return "the subject must be exactly O=system:nodes, CN=system:node:<node name>"
    return None


def node_client_problem(request: x509.CertificateSigningRequest, usages: list[str]) -> str | None:
    """Why a request does not fit kubernetes.io/kube-apiserver-client-kubelet, or None."""
    problem = _node_subject_problem(request)
    if problem is not None:
        return problem
    if _sans(request) is not None:
        return "a kubelet client certificate may not carry subject alternative names"
    if frozenset(usages) not in CLIENT_USAGE_SETS or len(set(usages)) != len(usages):
        return "usages must be [digital signature, client auth] (optionally key encipherment)"
    return None


def node_serving_problem(request: x509.CertificateSigningRequest, usages: list[str]) -> str | None:
    """Why a request does not fit kubernetes.io/kubelet-serving, or None."""
    problem = _node_subject_problem(request)
    if problem is not None:
        return problem
    sans = _sans(request)
    if sans is None or not len(sans):
        return "a kubelet serving certificate needs at least one IP address or DNS name"
    if any(not isinstance(name, x509.IPAddress | x509.DNSName) for name in sans):
        return "a kubelet serving certificate may carry only IP addresses and DNS names"
    if not set(usages) >= SERVING_REQUIRED or not set(usages) <= SERVING_ALLOWED:
        return "usages must be [digital signature, key encipherment, server auth] or a subset with server auth"
    return None


def _parse(csr: dict[str, Any]) -> x509.CertificateSigningRequest | None:
    try:
        request = x509.load_pem_x509_csr(base64.b64decode((csr.get("spec") or {}).get("request") or ""))
    except ValueError:
        return None
    return request if request.is_signature_valid else None


class CSRApprovingController:
    name = "csrapproving"

    def __init__(self, context: ControllerContext) -> None:
        self.client = context.client
        self.csrs = context.cache(CSRS)

    def decision(self, csr: dict[str, Any]) -> str | None:
        """The approval message for a request this controller approves, or None to leave it alone."""
        spec = csr.get("spec") or {}
        signer = spec.get("signerName")
        username = spec.get("username", "")
        groups = spec.get("groups") or []
        usages = list(spec.get("usages") or [])
        if signer not in (bootstrap.CLIENT_SIGNER, bootstrap.SERVING_SIGNER):
            return None
        request = _parse(csr)
        if request is None:
            return None
        common = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if signer == bootstrap.CLIENT_SIGNER:
            if node_client_problem(request, usages) is not None:
                return None
            if username == common[0] and bootstrap.NODES_GROUP in groups:
                return "Auto approving self kubelet client certificate after SubjectAccessReview."
            if bootstrap.BOOTSTRAPPERS in groups and username.startswith(bootstrap.BOOTSTRAP_USER_PREFIX):
                return "Auto approving kubelet client certificate after SubjectAccessReview."
            return None
        if node_serving_problem(request, usages) is None and username == common[0] and \
                bootstrap.NODES_GROUP in groups:
            return "Auto approving kubelet serving certificate after SubjectAccessReview."
        return None

    async def reconcile(self, key: str) -> Outcome:
        csr = self.csrs.get(key)
        if csr is None or _conditions(csr) & {"Approved", "Denied", "Failed"} or \
                (csr.get("status") or {}).get("certificate"):
            return Outcome.done()
        message = self.decision(csr)
        if message is None:
            return Outcome.done()
        approved = {**csr, "status": {**(csr.get("status") or {}), "conditions": [
            *((csr.get("status") or {}).get("conditions") or []),
            {"type": "Approved", "status": "True", "reason": "AutoApproved", "message": message}]}}
        try:
            await self.client.update(CSR_RESOURCE, approved, subresource="approval",
                                     field_manager="csrapproving-controller")
        except errors.NotFound:
            return Outcome.done()
        except errors.Conflict as exc:  # a newer version is on its way through the informer
            return Outcome.retry(exc)
        return Outcome.done()


class CSRSigningController:
    name = "csrsigning"

    def __init__(self, context: ControllerContext, ca_pem: bytes, ca_key_pem: bytes) -> None:
        self.client = context.client
        self.csrs = context.cache(CSRS)
        self.ca_pem = ca_pem
        self.ca_key_pem = ca_key_pem

    async def reconcile(self, key: str) -> Outcome:
        csr = self.csrs.get(key)
        if csr is None:
            return Outcome.done()
        spec = csr.get("spec") or {}
        conditions = _conditions(csr)
        if spec.get("signerName") not in SIGNERS or "Approved" not in conditions or \
                conditions & {"Denied", "Failed"} or (csr.get("status") or {}).get("certificate"):
            return Outcome.done()
        usages = list(spec.get("usages") or [])
        request = _parse(csr)
        problem = "the request is not a valid PEM certificate request" if request is None else None
        if request is not None and spec["signerName"] == bootstrap.CLIENT_SIGNER:
            problem = node_client_problem(request, usages)
        elif request is not None and spec["signerName"] == bootstrap.SERVING_SIGNER:
            problem = node_serving_problem(request, usages)
        elif request is not None and ("server auth" in usages or "client auth" not in usages):
            problem = "kubernetes.io/kube-apiserver-client certificates must have usage client auth, not server auth"
        status = dict(csr.get("status") or {})
        if problem is not None or request is None:
            status["conditions"] = [*(status.get("conditions") or []), {
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": problem}]
        else:
            seconds = spec.get("expirationSeconds")
            certificate = bootstrap.sign_request(request, usages, self.ca_pem, self.ca_key_pem,
                                                 seconds=float(seconds) if seconds else None)
            status["certificate"] = base64.b64encode(certificate).decode()
        try:
            await self.client.update(CSR_RESOURCE, {**csr, "status": status}, subresource="status",
                                     field_manager="csrsigning-controller")
        except errors.NotFound:
            return Outcome.done()
        except errors.Conflict as exc:
            return Outcome.retry(exc)
        return Outcome.done()


class BootstrapSignerController:
    name = "bootstrapsigner"

    def __init__(self, context: ControllerContext, ca_pem: bytes | None, server_url: str | None) -> None:
        self.client = context.client
        self.configmaps = context.cache(CONFIGMAPS)
        self.secrets = context.cache(SECRETS)
        self.ca_pem = ca_pem
        self.server_url = server_url or getattr(context.client, "url", None)
        enqueue = context.enqueue

        def on_secret(event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            if obj.get("type") == bootstrap.TOKEN_SECRET_TYPE or (old or {}).get("type") == bootstrap.TOKEN_SECRET_TYPE:
                enqueue(CLUSTER_INFO_KEY)

        self.secrets.add_handler(on_secret)
        enqueue(CLUSTER_INFO_KEY)

    def signing_tokens(self) -> tuple[dict[str, str], float | None]:
        """token id → secret of every token valid for signing now, and seconds until the next one expires."""
        tokens: dict[str, str] = {}
        now = datetime.datetime.now(datetime.UTC)
        next_expiry: float | None = None
        for secret in self.secrets.items(bootstrap.TOKEN_NAMESPACE):
            fields = bootstrap.secret_fields(secret)
            token_id = fields.get("token-id", "")
            if secret["metadata"].get("name") != bootstrap.TOKEN_SECRET_PREFIX + token_id:
                continue
            value = bootstrap.usable_for(fields, "signing", token_id)
            if value is None:
                continue
            tokens[token_id] = value
            expiration = fields.get("expiration")
            if expiration:
                left = (datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00")) - now).total_seconds()
                next_expiry = left if next_expiry is None else min(next_expiry, left)
        return tokens, next_expiry

    async def reconcile(self, key: str) -> Outcome:
        if key != CLUSTER_INFO_KEY:
            return Outcome.done()
        current = self.configmaps.get(CLUSTER_INFO_KEY)
        data: dict[str, str] = dict((current or {}).get("data") or {})
        if not data.get("kubeconfig"):
            if self.ca_pem is None or not self.server_url:
                log.warning("bootstrapsigner: %s has no kubeconfig and no cluster CA is configured "
                            "(--cluster-signing-cert-file) to publish one", CLUSTER_INFO_KEY)
                return Outcome.after(MAX_RESYNC)
            data["kubeconfig"] = bootstrap.cluster_info_kubeconfig(self.server_url, self.ca_pem)
        tokens, next_expiry = self.signing_tokens()
        wanted = {k: v for k, v in data.items() if not k.startswith(bootstrap.JWS_PREFIX)}
        for token_id, value in tokens.items():
            existing = data.get(bootstrap.JWS_PREFIX + token_id)
            if existing and bootstrap.verify_detached(existing, data["kubeconfig"], token_id, value):
                wanted[bootstrap.JWS_PREFIX + token_id] = existing
            else:
                wanted[bootstrap.JWS_PREFIX + token_id] = bootstrap.sign_detached(data["kubeconfig"], token_id, value)
        after = MAX_RESYNC if next_expiry is None else min(MAX_RESYNC, max(1.0, next_expiry + 1.0))
        if current is not None and wanted == (current.get("data") or {}):
            return Outcome.after(after)
        try:
            if current is None:
                await self.client.create(CONFIGMAP_RESOURCE, {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": bootstrap.CLUSTER_INFO, "namespace": bootstrap.CLUSTER_INFO_NAMESPACE},
                    "data": wanted}, bootstrap.CLUSTER_INFO_NAMESPACE, field_manager="bootstrapsigner")
            else:
                await self.client.update(CONFIGMAP_RESOURCE, {**current, "data": wanted},
                                         field_manager="bootstrapsigner")
        except (errors.AlreadyExists, errors.Conflict) as exc:
            return Outcome.retry(exc)
        return Outcome.after(after)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise errors.Permanent(f"cannot read {what} {path}: {exc.strerror}") from None


def registrations(options: dict[str, Any]) -> list[ControllerRegistration]:
    """The three certificate controllers. csrsigning runs only with a CA (``cluster_signing_cert_file`` and
    ``cluster_signing_key_file``, the controller manager's --cluster-signing-* options), as in
    kube-controller-manager; bootstrapsigner publishes cluster-info with that CA and ``cluster_info_server``
    (default: the URL the controller manager reaches the API server at)."""
    cert_file = options.get("cluster_signing_cert_file")
    key_file = options.get("cluster_signing_key_file")
    if bool(cert_file) != bool(key_file):
        raise errors.Invalid.field("cluster-signing-key-file", "--cluster-signing-cert-file and "
                                   "--cluster-signing-key-file must be given together")
    ca_pem = _read(cert_file, "--cluster-signing-cert-file") if cert_file else None
    ca_key_pem = _read(key_file, "--cluster-signing-key-file") if key_file else None
    if ca_pem is not None and ca_key_pem is not None:
        try:
            x509.load_pem_x509_certificate(ca_pem)
            serialization.load_pem_private_key(ca_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise errors.Permanent(f"--cluster-signing-cert-file {cert_file} / --cluster-signing-key-file "
                                   f"{key_file}: not a PEM certificate and private key: {exc}") from None
    server_url = options.get("cluster_info_server")

    def approving(context: ControllerContext) -> Reconciler:
        return CSRApprovingController(context)

    def signer(context: ControllerContext) -> Reconciler:
        return BootstrapSignerController(context, ca_pem, server_url)

    found = [ControllerRegistration("csrapproving", CSRS, approving, workers=1),
             ControllerRegistration("bootstrapsigner", CONFIGMAPS, signer, workers=1)]
    if ca_pem is not None and ca_key_pem is not None:
        cert, key = ca_pem, ca_key_pem

        def signing(context: ControllerContext) -> Reconciler:
            return CSRSigningController(context, cert, key)

        found.insert(1, ControllerRegistration("csrsigning", CSRS, signing, workers=1))
    return found
