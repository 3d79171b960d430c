"""Writing kubeconfig files for the cluster's users."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from microkube.apiserver.pki import PKI


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server_url: str, pki: PKI, *, user: str = "admin", use_token: bool = False) -> None:
    """Write a kubeconfig (mode 0600, atomically) that reaches ``server_url`` as the admin."""
    credentials = ({"token": pki.admin_token.read_text().strip()} if use_token else
                   {"client-certificate-data": _b64(pki.admin_cert), "client-key-data": _b64(pki.admin_key)})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "microkube", "cluster": {"server": server_url,
                                                       "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "microkube", "context": {"cluster": "microkube", "user": user}}],
        "current-context": "microkube",
        "preferences": {},
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
