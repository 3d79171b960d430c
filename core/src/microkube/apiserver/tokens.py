"""Service-account tokens: ES256 JWTs signed with the cluster's SA key (TokenRequest, authentication)."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from microkube_interfaces import errors

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    def __init__(self, private_key_path: Path, issuer: str = ISSUER) -> None:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise errors.Permanent(f"service-account key {private_key_path} must be an EC P-256 key")
        self.key = key
        self.public_key = key.public_key()
        self.issuer = issuer
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = _b64(_digest(der))

    def issue(self, namespace: str, name: str, uid: str, audiences: list[str], expiration_seconds: int,
              bound_object: dict[str, Any] | None = None) -> tuple[str, str]:
        now = int(time.time())
        expires = now + expiration_seconds
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": f"system:serviceaccount:{namespace}:{name}", "aud": audiences,
            "exp": expires, "iat": now, "nbf": now, "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        if bound_object and bound_object.get("kind") == "Pod":
            claims["kubernetes.io"]["pod"] = {"name": bound_object.get("name", ""), "uid": bound_object.get("uid", "")}
        header = {"alg": "ES256", "kid": self.key_id, "typ": "JWT"}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return f"{signing_input}.{_b64(signature)}", expires_at

    def verify(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        try:
            header_b64, claims_b64, signature_b64 = token.split(".")
            header = orjson.loads(_unb64(header_b64))
            claims: dict[str, Any] = orjson.loads(_unb64(claims_b64))
            signature = _unb64(signature_b64)
        except (ValueError, orjson.JSONDecodeError):
            raise errors.Unauthenticated("the token is not a valid JWT") from None
        if header.get("alg") != "ES256" or len(signature) != 64:
            raise errors.Unauthenticated("the token's signature algorithm is not ES256")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self.public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise errors.Unauthenticated("the token's signature is invalid") from None
        if claims.get("iss") != self.issuer:
            raise errors.Unauthenticated("the token was issued by another issuer")
        if int(claims.get("exp", 0)) < time.time():
            raise errors.Unauthenticated("the token has expired")
        wanted = audiences or [self.issuer]
        token_audiences = claims.get("aud") or []
        if isinstance(token_audiences, str):
            token_audiences = [token_audiences]
        if not set(wanted) & set(token_audiences):
            raise errors.Unauthenticated("the token's audience is not accepted by this server")
        return claims


def _digest(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()
