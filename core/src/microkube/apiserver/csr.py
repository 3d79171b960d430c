"""certificates.k8s.io/v1 CertificateSigningRequest: validation, printing and the request-bound fields.

As in kube-apiserver: ``spec.username``, ``uid``, ``groups`` and ``extra`` are always the identity of
the user who created the request (whatever the body said), the spec never changes after create, the
``status`` subresource may not add or remove Approved/Denied conditions (only ``approval`` may), and a
request is never both Approved and Denied.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography import x509

from microkube.apiserver import validation
from microkube.apiserver.printers import AGE, NAME, age
from microkube.timestamps import format_time, utcnow
from microkube_interfaces.admission import AdmissionRequest
from microkube_interfaces.errors import FieldError, Invalid
from microkube_interfaces.resources import Object, PrinterColumn

GROUP = "certificates.k8s.io"
KIND = "CertificateSigningRequest"
KNOWN_USAGES = ("signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc")
CONDITION_TYPES = ("Approved", "Denied", "Failed")
APPROVAL_TYPES = ("Approved", "Denied")
SIGNER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[^/]+$")
MIN_EXPIRATION_SECONDS = 600

COLUMNS = (
    NAME, AGE,
    PrinterColumn("SignerName", "string", ""), PrinterColumn("Requestor", "string", ""),
    PrinterColumn("RequestedDuration", "string", ""), PrinterColumn("Condition", "string", ""),
)


def conditions_of(obj: Object) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def has_condition(obj: Object, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status", "True") == "True" for c in conditions_of(obj))


def parse_request(obj: Object) -> x509.CertificateSigningRequest:
    """The PEM CSR of ``spec.request`` (base64 in JSON); ValueError if it is not one."""
    raw = (obj.get("spec") or {}).get("request") or ""
    try:
        pem = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 of a PEM-encoded CERTIFICATE REQUEST") from None
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        raise ValueError("must be a PEM-encoded CERTIFICATE REQUEST")
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise ValueError(f"cannot parse the certificate request: {exc}") from None
    if not request.is_signature_valid:
        raise ValueError("the certificate request's signature is invalid")
    return request


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def condition_summary(obj: Object) -> str:
    found = [c["type"] for c in conditions_of(obj) if c.get("type") and c.get("status", "True") == "True"]
    if not found:
        return "Pending"
    if (obj.get("status") or {}).get("certificate"):
        found.append("Issued")
    return ",".join(found)


class CSRStrategy:
    def default(self, obj: Object) -> None:
        return None

    def validate(self, obj: Object, old: Object | None) -> None:
        errs = validation.Errors()
        try:
            validation.validate(GROUP, KIND, obj, old)
        except Invalid as exc:
            errs.items.extend(exc.causes)
        spec = obj.get("spec") or {}
        if old is not None and spec != (old.get("spec") or {}):
            errs.forbidden("spec", "field is immutable")
        elif old is None:
            _validate_spec(errs, spec, obj)
        _validate_status(errs, obj.get("status") or {}, (old or {}).get("status") or {})
        if errs.items:
            raise Invalid(f'{KIND} "{(obj.get("metadata") or {}).get("name", "")}" is invalid', errs.items)

    def table_cells(self, obj: Object) -> list[Any]:
        spec = obj.get("spec") or {}
        seconds = spec.get("expirationSeconds")
        return [obj["metadata"].get("name", ""), age(obj), spec.get("signerName", ""), spec.get("username", ""),
                _duration(int(seconds)) if seconds else "<none>", condition_summary(obj)]


def _validate_spec(errs: validation.Errors, spec: dict[str, Any], obj: Object) -> None:
    if not spec.get("request"):
        errs.required("spec.request")
    else:
        try:
            parse_request(obj)
        except ValueError as exc:
            errs.invalid("spec.request", "<request>", str(exc))
    signer = spec.get("signerName") or ""
    if not signer:
        errs.required("spec.signerName", "e.g. kubernetes.io/kube-apiserver-client-kubelet")
    elif not SIGNER_NAME.match(signer):
        errs.invalid("spec.signerName", signer, "must be a fully qualified domain and path of the form "
                     "'example.com/signer-name'")
    usages = spec.get("usages") or []
    if not usages:
        errs.required("spec.usages", "e.g. [digital signature, client auth]")
    seen: set[str] = set()
    for i, usage in enumerate(usages):
        if usage not in KNOWN_USAGES:
            errs.unsupported(f"spec.usages[{i}]", usage, KNOWN_USAGES)
        elif usage in seen:
            errs.duplicate(f"spec.usages[{i}]", usage)
        seen.add(usage)
    seconds = spec.get("expirationSeconds")
    if seconds is not None and (not isinstance(seconds, int) or seconds < MIN_EXPIRATION_SECONDS):
        errs.invalid("spec.expirationSeconds", seconds, f"may not specify a duration less than "
                     f"{MIN_EXPIRATION_SECONDS} seconds")


def _validate_status(errs: validation.Errors, status: dict[str, Any], old_status: dict[str, Any]) -> None:
    types: set[str] = set()
    for i, condition in enumerate(status.get("conditions") or []):
        kind = condition.get("type") or ""
        if not kind:
            errs.required(f"status.conditions[{i}].type")
        elif kind in types and kind in CONDITION_TYPES:
            errs.duplicate(f"status.conditions[{i}].type", kind)
        types.add(kind)
        if condition.get("status", "True") not in ("True", "False", "Unknown"):
            errs.unsupported(f"status.conditions[{i}].status", condition.get("status"), ("True", "False", "Unknown"))
    if {"Approved", "Denied"} <= types:
        errs.invalid("status.conditions", "Approved,Denied", "Approved and Denied conditions are mutually exclusive")
    old_types = {c.get("type") for c in old_status.get("conditions") or []}
    for kind in APPROVAL_TYPES:
        if kind in old_types and kind not in types:
            errs.forbidden("status.conditions", f"updates may not remove a condition of type {kind!r}")
    certificate = status.get("certificate")
    if certificate:
        try:
            pem = base64.b64decode(certificate, validate=True)
            x509.load_pem_x509_certificates(pem)
        except (binascii.Error, ValueError):
            errs.invalid("status.certificate", "<certificate data>", "must be base64 of PEM-encoded CERTIFICATE "
                         "blocks")
        old_certificate = old_status.get("certificate")
        if old_certificate and old_certificate != certificate:
            errs.forbidden("status.certificate", "updates may not modify existing certificate content")
        if "Failed" in types or "Denied" in types:
            errs.forbidden("status.certificate", "a certificate may not be issued for a Denied or Failed request")


def _stamp(conditions: list[dict[str, Any]]) -> None:
    now = format_time(utcnow())
    for condition in conditions:
        condition.setdefault("status", "True")
        condition.setdefault("lastUpdateTime", now)
        condition.setdefault("lastTransitionTime", condition["lastUpdateTime"])


class CSRAdmission:
    """The request-bound fields of a CertificateSigningRequest and the approval rules of its subresources."""

    name = "CertificateSigningRequest"

    async def mutate(self, request: AdmissionRequest) -> None:
        if request.resource.group != GROUP or request.resource.kind != KIND or request.object is None:
            return
        obj, old = request.object, request.old_object
        if request.operation == "CREATE":
            spec = obj.setdefault("spec", {})
            user = request.user
            spec["username"] = user.name
            if user.uid:
                spec["uid"] = user.uid
            else:
                spec.pop("uid", None)
            spec["groups"] = list(user.groups)
            if user.extra:
                spec["extra"] = {k: list(v) for k, v in user.extra.items()}
            else:
                spec.pop("extra", None)
            obj.pop("status", None)
            return
        if request.operation != "UPDATE" or old is None:
            return
        obj["spec"] = old.get("spec") or {}
        conditions = conditions_of(obj)
        if request.subresource == "status":
            # approval conditions are the approval subresource's: keep the stored ones
            kept = [c for c in conditions if c.get("type") not in APPROVAL_TYPES]
            conditions = [c for c in conditions_of(old) if c.get("type") in APPROVAL_TYPES] + kept
        elif request.subresource == "approval":
            approvals = [c for c in conditions if c.get("type") in APPROVAL_TYPES]
            conditions = approvals + [c for c in conditions_of(old) if c.get("type") not in APPROVAL_TYPES]
            if (old.get("status") or {}).get("certificate"):
                obj.setdefault("status", {})["certificate"] = old["status"]["certificate"]
        _stamp(conditions)
        if conditions:
            obj.setdefault("status", {})["conditions"] = conditions

    async def validate(self, request: AdmissionRequest) -> None:
        if (request.resource.group != GROUP or request.resource.kind != KIND or request.subresource != "approval"
                or request.object is None):
            return
        errs: list[FieldError] = []
        if not any(c.get("type") in APPROVAL_TYPES for c in conditions_of(request.object)):
            errs.append(FieldError("status.conditions", "Required value: an Approved or Denied condition",
                                   "FieldValueRequired"))
        try:
            CSRStrategy().validate(request.object, request.old_object)
        except Invalid as exc:
            errs.extend(exc.causes)
        if errs:
            raise Invalid(f'{KIND} "{request.name}" is invalid', errs)
