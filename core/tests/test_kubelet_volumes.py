"""Pod volumes set up by the kubelet's volume manager, against a real API server."""

from __future__ import annotations

import base64
import os
import socket
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from microkube.client import Client, Resource
from microkube.kubelet.volumes import NODES, SERVICEACCOUNTS, VolumeError, VolumeManager
from microkube_interfaces import cri

CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
TOKENREVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", namespaced=False)


def _pod(volumes: list[dict[str, Any]], containers: list[dict[str, Any]] | None = None,
         uid: str = "0f0e-uid-1") -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "default", "uid": uid, "labels": {"app": "web"},
                         "annotations": {"a": "1"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "builder", "volumes": volumes,
                     "containers": containers or [{"name": "app", "image": "busybox",
                                                   "resources": {"limits": {"memory": "64Mi"}}}]}}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _config(client: Client, data: dict[str, str], binary: dict[str, bytes] | None = None) -> None:
    body: dict[str, Any] = {"metadata": {"name": "app-config"}, "data": data}
    if binary:
        body["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    await client.create(CONFIGMAPS, body, "default")


async def test_configmap_volume_layout_modes_and_atomic_update(client: Client, tmp_path: Path) -> None:
    await _config(client, {"app.conf": "mode=prod\n", "level": "3"}, {"blob.bin": b"\x00\xff"})
    manager = VolumeManager(client, tmp_path / "kubelet", "node-a")
    pod = _pod([{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o600}},
                {"name": "picked", "configMap": {"name": "app-config",
                                                 "items": [{"key": "level", "path": "sub/lvl", "mode": 0o400}]}}])
    paths = await manager.setup(pod)
    cfg = Path(paths["cfg"])
    assert cfg == tmp_path / "kubelet/pods/0f0e-uid-1/volumes/kubernetes.io~configmap/cfg"
    assert (cfg / "app.conf").read_text() == "mode=prod\n" and (cfg / "blob.bin").read_bytes() == b"\x00\xff"
    assert os.readlink(cfg / "app.conf") == "..data/app.conf"
    first = os.readlink(cfg / "..data")
    assert first.startswith("..") and (cfg / first).is_dir()
    assert _mode(cfg / "app.conf") == 0o600
    picked = Path(paths["picked"])
    assert sorted(os.listdir(picked)) == sorted(["..data", os.readlink(picked / "..data"), "sub"])
    assert (picked / "sub/lvl").read_text() == "3" and _mode(picked / "sub/lvl") == 0o400

    assert await manager.setup(pod) == paths  # idempotent: nothing rewritten
    assert os.readlink(cfg / "..data") == first

    config = await client.get(CONFIGMAPS, "app-config", "default")
    config["data"] = {"app.conf": "mode=dev\n", "new": "yes"}
    config.pop("binaryData")
    await client.update(CONFIGMAPS, config)
    with pytest.raises(VolumeError, match='volume "picked" : configmap references non-existent config key: level'):
        await manager.refresh(pod)
    assert (picked / "sub/lvl").read_text() == "3"  # a volume whose source broke keeps its last contents
    second = os.readlink(cfg / "..data")
    assert second != first and not (cfg / first).exists()
    assert (cfg / "app.conf").read_text() == "mode=dev\n" and (cfg / "new").read_text() == "yes"
    assert not (cfg / "blob.bin").is_symlink() and not (cfg / "level").exists()
    assert sorted(p for p in os.listdir(cfg) if not p.startswith("..")) == ["app.conf", "new"]

    mounts = manager.mounts(pod, {"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]}, paths)
    assert mounts == [cri.Mount(container_path="/etc/app", host_path=str(cfg), readonly=True)]
    await manager.teardown("0f0e-uid-1")
    assert not (tmp_path / "kubelet/pods/0f0e-uid-1").exists()
    await manager.teardown("0f0e-uid-1")


async def test_secret_volume(client: Client, tmp_path: Path) -> None:
    await client.create(SECRETS, {"metadata": {"name": "creds"},
                                  "data": {"password": base64.b64encode(b"s3cret").decode(),
                                           "user": base64.b64encode(b"admin").decode()}}, "default")
    manager = VolumeManager(client, tmp_path, "node-a")
    pod = _pod([{"name": "s", "secret": {"secretName": "creds"}},
                {"name": "one", "secret": {"secretName": "creds", "items": [{"key": "user", "path": "u"}]}}])
    paths = await manager.setup(pod)
    secret_dir = Path(paths["s"])
    assert secret_dir.parent.name == "kubernetes.io~secret"
    assert (secret_dir / "password").read_text() == "s3cret" and _mode(secret_dir / "password") == 0o644
    assert sorted(p for p in os.listdir(paths["one"]) if not p.startswith("..")) == ["u"]
    await manager.teardown("0f0e-uid-1")


async def test_missing_sources_fail_cleanly_and_optional_ones_are_fine(client: Client, tmp_path: Path) -> None:
    manager = VolumeManager(client, tmp_path, "node-a")
    optional = _pod([{"name": "maybe", "configMap": {"name": "absent", "optional": True}},
                     {"name": "maybe-secret", "secret": {"secretName": "absent", "optional": True}}])
    paths = await manager.setup(optional)
    assert [p for p in os.listdir(paths["maybe"]) if not p.startswith("..")] == []

    pod = _pod([{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "app-config"}}],
               uid="uid-2")
    with pytest.raises(VolumeError) as caught:
        await manager.setup(pod)
    assert str(caught.value) == 'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found'
    assert caught.value.reason == "FailedMount" and caught.value.volume == "cfg"
    assert not (tmp_path / "pods/uid-2/volumes/kubernetes.io~empty-dir/scratch").exists()

    await _config(client, {"present": "1"})
    keyed = _pod([{"name": "cfg", "configMap": {"name": "app-config", "items": [{"key": "gone", "path": "g"}]}}],
                 uid="uid-3")
    with pytest.raises(VolumeError, match="configmap references non-existent config key: gone"):
        await manager.setup(keyed)
    missing_secret = _pod([{"name": "s", "secret": {"secretName": "nope"}}], uid="uid-4")
    with pytest.raises(VolumeError, match='volume "s" : secret "nope" not found'):
        await manager.setup(missing_secret)
    assert os.listdir(tmp_path / "pods") == ["0f0e-uid-1"]  # the failed pods left nothing behind
    assert await manager.cleanup_orphans(set()) == ["0f0e-uid-1"]
    assert os.listdir(tmp_path / "pods") == []


async def test_unsupported_volume_types_are_refused_visibly(client: Client, tmp_path: Path) -> None:
    manager = VolumeManager(client, tmp_path, "node-a")
    pvc = _pod([{"name": "data", "persistentVolumeClaim": {"claimName": "db"}}])
    with pytest.raises(VolumeError, match='volume "data" : volume type persistentVolumeClaim is not supported on '
                                          'this node yet'):
        await manager.setup(pvc)
    bundle = _pod([{"name": "ca", "projected": {"sources": [{"clusterTrustBundle": {"name": "x", "path": "ca"}}]}}])
    with pytest.raises(VolumeError, match="clusterTrustBundle projections are not supported on this node yet"):
        await manager.setup(bundle)


async def test_downward_api_volume(client: Client, tmp_path: Path) -> None:
    await client.create(NODES, {"metadata": {"name": "node-a"}})
    await client.patch(NODES, "node-a", {"status": {"allocatable": {"cpu": "2", "memory": "4Gi"}}},
                       subresource="status")
    manager = VolumeManager(client, tmp_path, "node-a")
    items = [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
             {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
             {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
             {"path": "meta/uid", "fieldRef": {"fieldPath": "metadata.uid"}, "mode": 0o600},
             {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory",
                                                  "divisor": "1Mi"}},
             {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                                  "divisor": "1m"}}]
    pod = _pod([{"name": "info", "downwardAPI": {"items": items}}])
    info = Path((await manager.setup(pod))["info"])
    assert info.parent.name == "kubernetes.io~downward-api"
    assert (info / "name").read_text() == "web-1" and (info / "labels").read_text() == 'app="web"'
    assert (info / "app").read_text() == "web" and (info / "meta/uid").read_text() == "0f0e-uid-1"
    assert _mode(info / "meta/uid") == 0o600 and _mode(info / "name") == 0o644
    assert (info / "mem").read_text() == "64" and (info / "cpu").read_text() == "2000"  # node allocatable

    pod["metadata"]["labels"] = {"app": "web", "version": "2"}
    await manager.refresh(pod)
    assert (info / "labels").read_text() == 'app="web"\nversion="2"'
    await manager.teardown("0f0e-uid-1")


async def test_projected_volume_with_service_account_token(client: Client, tmp_path: Path) -> None:
    await _config(client, {"ca.crt": "CERT"})
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "builder"}}, "default")
    clock = Clock()
    manager = VolumeManager(client, tmp_path, "node-a", clock=clock)
    projected = {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "app-config", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}
    pod = _pod([{"name": "kube-api-access-x1", "projected": projected}])
    access = Path((await manager.setup(pod))["kube-api-access-x1"])
    assert access.parent.name == "kubernetes.io~projected"
    assert (access / "ca.crt").read_text() == "CERT" and (access / "namespace").read_text() == "default"
    token = (access / "token").read_text()
    _header, claims_b64, _ = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    assert claims["kubernetes.io"]["pod"] == {"name": "web-1", "uid": "0f0e-uid-1"}
    assert claims["exp"] - claims["iat"] == 3607

    review = await client.create(TOKENREVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                                "spec": {"token": token}})
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == "system:serviceaccount:default:builder"

    clock.now += 3607 * 0.5
    await manager.refresh(pod)
    assert (access / "token").read_text() == token  # not yet due
    clock.now += 3607 * 0.31
    await manager.refresh(pod)
    rotated = (access / "token").read_text()
    assert rotated != token and rotated.count(".") == 2

    orphan = _pod([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}], uid="uid-9")
    orphan["spec"]["serviceAccountName"] = "ghost"
    with pytest.raises(VolumeError, match='failed to fetch token: serviceaccount "ghost" not found'):
        await manager.setup(orphan)
    await manager.teardown("0f0e-uid-1")


async def test_host_path_types(client: Client, tmp_path: Path) -> None:
    manager = VolumeManager(client, tmp_path / "kubelet", "node-a")
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("x")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(host / "sock"))
    try:
        ok = [("mkdir", str(host / "new/dir"), "DirectoryOrCreate"), ("dir", str(host), "Directory"),
              ("touch", str(host / "touched"), "FileOrCreate"), ("file", str(host / "file"), "File"),
              ("sock", str(host / "sock"), "Socket"), ("null", "/dev/null", "CharDevice"),
              ("any", str(host / "does-not-exist"), "")]
        pod = _pod([{"name": name, "hostPath": {"path": path, "type": kind}} for name, path, kind in ok])
        paths = await manager.setup(pod)
        assert paths["mkdir"] == str(host / "new/dir") and (host / "new/dir").is_dir()
        assert (host / "touched").is_file()
        assert not (host / "does-not-exist").exists()
    finally:
        listener.close()

    wrong = [("Directory", str(host / "file"), "is not a directory"), ("File", str(host), "is not a file"),
             ("Directory", str(host / "nope"), "does not exist"), ("Socket", str(host / "file"), "is not a socket"),
             ("BlockDevice", "/dev/null", "is not a block device"),
             ("CharDevice", str(host / "file"), "is not a character device"),
             ("DirectoryOrCreate", str(host / "file"), "is not a directory"),
             ("Fancy", str(host), "Fancy is an invalid volume type")]
    for kind, path, problem in wrong:
        with pytest.raises(VolumeError) as caught:
            await manager.setup(_pod([{"name": "h", "hostPath": {"path": path, "type": kind}}]))
        assert problem in str(caught.value) and 'volume "h"' in str(caught.value)
        if kind != "Fancy":
            assert path in str(caught.value)
    await manager.teardown("0f0e-uid-1")


async def test_mounts_subpaths_and_their_safety(client: Client, tmp_path: Path) -> None:
    manager = VolumeManager(client, tmp_path, "node-a")
    pod = _pod([{"name": "scratch", "emptyDir": {}}, {"name": "host", "hostPath": {"path": str(tmp_path)}}])
    paths = await manager.setup(pod)
    scratch = Path(paths["scratch"])
    assert _mode(scratch) == 0o777 and scratch.parent.name == "kubernetes.io~empty-dir"
    os.symlink("/etc", scratch / "escape")

    container = {"name": "app", "env": [{"name": "POD", "value": "web-1"}, {"name": "SUB", "value": "$(POD)/logs"}],
                 "volumeMounts": [
                     {"name": "scratch", "mountPath": "/data", "subPath": "a/b"},
                     {"name": "scratch", "mountPath": "/logs", "subPathExpr": "$(SUB)", "readOnly": True},
                     {"name": "host", "mountPath": "/host", "mountPropagation": "HostToContainer"}]}
    mounts = manager.mounts(pod, container, paths)
    assert mounts[0] == cri.Mount("/data", str(scratch / "a/b"))
    assert (scratch / "a/b").is_dir() and (scratch / "web-1/logs").is_dir()
    assert _mode(scratch / "a") == _mode(scratch / "a/b") == 0o777
    assert mounts[1] == cri.Mount("/logs", str(scratch / "web-1/logs"), readonly=True)
    assert mounts[2].propagation == cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER
    with_env = manager.mounts(pod, {"name": "app", "volumeMounts": [container["volumeMounts"][1]]}, paths,
                              env=[cri.KeyValue("SUB", "from-env")])
    assert with_env[0].host_path == str(scratch / "from-env")

    bad = [({"name": "scratch", "mountPath": "/x", "subPath": "../../etc"}, "must not contain '..'"),
           ({"name": "scratch", "mountPath": "/x", "subPath": "/etc"}, "must not be an absolute path"),
           ({"name": "scratch", "mountPath": "/x", "subPath": "escape/passwd"}, "outside the volume"),
           ({"name": "scratch", "mountPath": "/x", "subPathExpr": "$(NOPE)"}, "missing value for NOPE"),
           ({"name": "other", "mountPath": "/x"}, 'cannot find volume "other" to mount into container "app"'),
           ({"name": "host", "mountPath": "/x", "mountPropagation": "Bidirectional"}, "only to privileged")]
    for mount, problem in bad:
        with pytest.raises(VolumeError) as caught:
            manager.mounts(pod, {"name": "app", "volumeMounts": [mount]}, paths)
        assert problem in str(caught.value) and caught.value.reason == "CreateContainerConfigError"
    privileged = {"name": "app", "securityContext": {"privileged": True},
                  "volumeMounts": [{"name": "host", "mountPath": "/x", "mountPropagation": "Bidirectional"}]}
    assert manager.mounts(pod, privileged, paths)[0].propagation == cri.MountPropagation.PROPAGATION_BIDIRECTIONAL
    await manager.teardown("0f0e-uid-1")
    assert not (tmp_path / "pods/0f0e-uid-1").exists()


def _mounted(path: Path) -> list[str]:
    target = str(path)
    return [line for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[1] == target]


@pytest.mark.root
async def test_memory_empty_dir_is_tmpfs_until_teardown(client: Client, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    manager = VolumeManager(client, tmp_path, "node-a")
    pod = _pod([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                {"name": "shm", "emptyDir": {"medium": "Memory"}}])
    try:
        paths = await manager.setup(pod)
        await manager.setup(pod)  # idempotent: mounted once
        cache, shm = Path(paths["cache"]), Path(paths["shm"])
        lines = _mounted(cache)
        assert len(lines) == 1 and lines[0].split()[2] == "tmpfs" and "size=8192k" in lines[0]
        assert "size=65536k" in _mounted(shm)[0]  # the pod's memory limit
        assert _mode(cache) == 0o777
        (cache / "f").write_text("in memory")
        assert await manager.cleanup_orphans({"0f0e-uid-1"}) == []
        assert await manager.cleanup_orphans(set()) == ["0f0e-uid-1"]
        assert _mounted(cache) == [] and _mounted(shm) == []
        assert not (tmp_path / "pods/0f0e-uid-1").exists()
    finally:
        await manager.teardown("0f0e-uid-1")
