"""The Kubernetes 1.32 OpenAPI definitions, read once from the kubernetes-validate data files.

The package is located without importing it (importing pulls jsonschema and friends: ~100 ms); its
``v1.32.0-local/_definitions.json`` holds upstream release-1.32 definitions with every
``x-kubernetes-*`` extension. Refs look like ``#/$defs/io.k8s.api.core.v1.PodSpec``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import orjson

KUBERNETES_VERSION = "v1.32.0"
REF_PREFIX = "#/$defs/"


def _data_dir() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate==1.32.0 is not installed; pip install microkube")
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"


@functools.cache
def load_definitions(strict: bool = False) -> dict[str, dict[str, Any]]:
    """All definitions keyed by name (``io.k8s.api.core.v1.Pod``). Cached; treat as read-only."""
    suffix = "-local-strict" if strict else "-local"
    path = _data_dir() / f"{KUBERNETES_VERSION}{suffix}" / "_definitions.json"
    doc = orjson.loads(path.read_bytes())
    defs: dict[str, dict[str, Any]] = doc["$defs"]
    return defs


def ref_name(ref: str) -> str:
    """``#/$defs/io.k8s.api.core.v1.PodSpec`` → ``io.k8s.api.core.v1.PodSpec``."""
    return ref[len(REF_PREFIX):] if ref.startswith(REF_PREFIX) else ref


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (also one wrapped in ``allOf``) to the referenced definition."""
    defs = load_definitions()
    while True:
        if "$ref" in node:
            node = defs[ref_name(node["$ref"])]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node
