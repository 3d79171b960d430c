"""Static pods: pod manifests in a directory on the node, run by the kubelet without the API server, and
shown in the API as mirror pods (kube's ``kubernetes.io/config.mirror`` pods) whose status the kubelet keeps.

A static pod is named ``<name>-<node>``; its uid is a hash of the manifest and the node (so an edited
manifest is a new pod). A manifest that cannot be read or is not a Pod is logged once per change, named
by its file, and skipped; the other manifests still run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from microkube.timestamps import format_time, utcnow

log = logging.getLogger(__name__)

Object = dict[str, Any]
CONFIG_SOURCE = "kubernetes.io/config.source"
CONFIG_HASH = "kubernetes.io/config.hash"
CONFIG_MIRROR = "kubernetes.io/config.mirror"
CONFIG_SEEN = "kubernetes.io/config.seen"
SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    pass


def load_manifest(path: Path, node_name: str) -> Object:
    """The static pod of one manifest file, ready for a pod worker."""
    try:
        text = path.read_text()
        pod = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"static pod manifest {path}: cannot be read: {exc}") from None
    if not isinstance(pod, dict) or pod.get("kind") != "Pod" or pod.get("apiVersion") != "v1":
        raise ManifestError(f"static pod manifest {path}: must be one v1 Pod (apiVersion: v1, kind: Pod)")
    meta = pod.setdefault("metadata", {})
    if not meta.get("name"):
        raise ManifestError(f"static pod manifest {path}: metadata.name is required")
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise ManifestError(f"static pod manifest {path}: spec.containers must list at least one container")
    for container in spec["containers"]:
        if not isinstance(container, dict) or not container.get("name") or not container.get("image"):
            raise ManifestError(f"static pod manifest {path}: every container needs a name and an image")
    digest = hashlib.sha256(f"{node_name}\x00{text}".encode()).hexdigest()[:32]
    uid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    meta["name"] = f"{meta['name']}-{node_name}"
    meta.setdefault("namespace", "default")
    meta["uid"] = uid
    meta["annotations"] = {**(meta.get("annotations") or {}), CONFIG_SOURCE: "file", CONFIG_HASH: uid,
                           CONFIG_SEEN: format_time(utcnow())}
    spec["nodeName"] = node_name
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("enableServiceLinks", False)
    for container in spec["containers"] + list(spec.get("initContainers") or []):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
    pod.setdefault("status", {"phase": "Pending"})
    return pod


class ManifestDirectory:
    """Reads a manifest directory; ``scan()`` returns the pods it holds now, by uid."""

    def __init__(self, directory: Path, node_name: str) -> None:
        self.directory = directory
        self.node_name = node_name
        self._reported: dict[Path, str] = {}

    def scan(self) -> dict[str, Object]:
        pods: dict[str, Object] = {}
        if not self.directory.is_dir():
            return pods
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in SUFFIXES or path.name.startswith("."):
                continue
            try:
                pod = load_manifest(path, self.node_name)
            except ManifestError as exc:
                if self._reported.get(path) != str(exc):
                    log.error("%s", exc)
                    self._reported[path] = str(exc)
                continue
            self._reported.pop(path, None)
            pods[pod["metadata"]["uid"]] = pod
        return pods


def mirror_pod(pod: Object, node_uid: str) -> Object:
    """The API object standing for a static pod: same spec, the config.mirror annotation, owned by the Node."""
    meta = pod["metadata"]
    annotations = {**meta.get("annotations", {}), CONFIG_MIRROR: meta["uid"]}
    annotations.pop(CONFIG_SEEN, None)
    mirror: Object = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta.get("labels") or {}),
                     "annotations": annotations},
        "spec": pod["spec"],
    }
    if node_uid:
        mirror["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": pod["spec"]["nodeName"],
                                                  "uid": node_uid, "controller": True}]
    return mirror


def is_mirror(pod: Object) -> bool:
    return CONFIG_MIRROR in ((pod.get("metadata") or {}).get("annotations") or {})
