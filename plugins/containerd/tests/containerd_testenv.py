"""A private containerd 1.6 for the pack's tests (notes §6 and §8); conftest.py exposes its fixtures.

``containerd_daemon`` (session): containerd with its own root, state, socket, runc root, CNI conf
(reference ``bridge`` + ``host-local`` on a bridge and subnet of its own), ``restrict_oom_score_adj`` and
netns mounts under the state dir; the busybox image imported as the sandbox image
(``microkube.local/pause:v1``, ``sleep infinity``) and as ``microkube.local/busybox:latest``. Teardown removes
every sandbox, stops containerd by pid, kills leftover shims of this instance, unmounts what is left under
the temp dir, and removes the shim sockets in /run/containerd/s, the libcni result cache entries and IPAM
state of this network, the bridge, the test cgroups, and restores ``net.ipv4.ip_forward``.

``runtime`` (function): the pack (``create_runtime({"endpoint": …, "ctr": …})``) on that containerd.
Skips when not root or when containerd is not installed (``apt-get install containerd``).

``cri_serve_runc`` (session): ``microkube cri-serve --runtime runc`` and its streaming server; it needs core and
the runc pack, which it imports only when set up, so that this module serves the containerd-only conformance
env (wheels of the interfaces and this pack, nothing else). The images come from ``busybox_archive``, a
one-layer OCI image of the host's static busybox built here with the standard library (this pack's tests
cannot lean on the runc pack's builder there).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from microkube_interfaces import cri

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
PAUSE_IMAGE = "microkube.local/pause:v1"
BUSYBOX_IMAGE = "microkube.local/busybox:latest"
#: Every test sandbox's cgroup_parent lives below this (removed at teardown).
CGROUP_BASE = f"/microkube-ctrd-test-{os.getpid()}"
SHIM_DIR = Path("/run/containerd/s")
CNI_RESULTS = Path("/var/lib/cni/results")
BUSYBOX = "/bin/busybox"


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _tar(entries: Sequence[tuple[str, bytes | None, str]]) -> bytes:
    """A tar of (name, data, symlink target) entries: a directory when data is None and there is no target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, target in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = 0, "root", "root"
            if target:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            else:
                info.size, info.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def busybox_archive(reference: str, cmd: tuple[str, ...] = ("sh",)) -> bytes:
    """An OCI image-layout tarball (``ctr images import`` reads it) of a one-layer image of the host's static
    busybox (``apt-get install busybox-static``) with ``cmd``, named ``reference``."""
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    layer = _tar([(d, None, "") for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "root", "run")]
                 + [("bin/busybox", Path(BUSYBOX).read_bytes(), "")]
                 + [(f"bin/{a}", None, "busybox") for a in sorted(set(applets) - {"busybox"}) if "/" not in a]
                 + [("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", ""),
                    ("etc/group", b"root:x:0:\nnogroup:x:65534:\n", "")])
    layer_digest, layer_blob = _blob(gzip.compress(layer, mtime=0))
    config_digest, config = _blob(_json({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": list(cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_blob(layer)[0]]}}))
    manifest_digest, manifest = _blob(_json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": len(layer_blob)}]}))
    index = _json({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest),
        "annotations": {"io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[-1]}}]})
    blobs = {layer_digest: layer_blob, config_digest: config, manifest_digest: manifest}
    return _tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', ""), ("index.json", index, ""),
                 ("blobs", None, ""), ("blobs/sha256", None, "")]
                + [(f"blobs/sha256/{d.split(':', 1)[1]}", data, "") for d, data in sorted(blobs.items())])


_counter = itertools.count()


def sandbox_factory(tmp_path: Path) -> Callable[[cri.PodSandboxMetadata], cri.PodSandboxConfig]:
    """The CRI suite's ``sandbox_config_factory``: logs under ``tmp_path``, a cgroup parent below CGROUP_BASE."""
    def make(meta: cri.PodSandboxMetadata) -> cri.PodSandboxConfig:
        return cri.PodSandboxConfig(
            metadata=meta, log_directory=str(tmp_path / "logs" / f"{meta.name}_{meta.attempt}"),
            linux=cri.LinuxPodSandboxConfig(cgroup_parent=f"{CGROUP_BASE}/conf{next(_counter)}"))

    return make


class BusyboxOverGrpc:
    """The CRI suite's image and sandbox fixtures for a runtime reached over CRI v1 gRPC whose busybox image the
    test env imported beforehand (containerd, or runc behind cri-serve)."""

    @pytest.fixture
    def test_image(self) -> str:
        return BUSYBOX_IMAGE

    @pytest.fixture
    async def prepare_image(self, cri_runtime: Any, test_image: str) -> None:
        assert await cri_runtime.images.image_status(cri.ImageSpec(test_image)) is not None

    @pytest.fixture
    def sandbox_config_factory(self, tmp_path: Path) -> Callable[[cri.PodSandboxMetadata], cri.PodSandboxConfig]:
        return sandbox_factory(tmp_path)


async def remove_all_and_close(pack: Any) -> None:
    """Stop and remove every sandbox the pack lists, then close it."""
    for sandbox in await pack.runtime.list_pod_sandbox():
        await pack.runtime.stop_pod_sandbox(sandbox.id)
        await pack.runtime.remove_pod_sandbox(sandbox.id)
    await pack.close()


@dataclass
class Daemon:
    dir: Path
    socket: Path
    endpoint: str
    network: str
    bridge: str
    subnet: str
    pid: int


def _config(d: Path, subnet: str, gateway: str) -> str:
    sock = d / "containerd.sock"
    return f"""version = 2
root = "{d}/data"
state = "{d}/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Image filesystem usage is sampled every stats_collect_period seconds (default 10); the first sample is taken
  # at start, before the test images are imported.
  stats_collect_period = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc-root"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"""


def _import(sock: Path, archive: Path) -> None:
    subprocess.run([CTR, "--address", str(sock), "-n", "k8s.io", "images", "import", str(archive)],
                   check=True, capture_output=True, timeout=120)


def _sync_call(sock: Path, method: str, request: object, response: type) -> object:
    import grpc  # type: ignore[import-untyped]

    with grpc.insecure_channel(f"unix://{sock}") as channel:
        call = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response.FromString)  # type: ignore[attr-defined]
        return call(request, timeout=60)


def _remove_all_sandboxes(sock: Path) -> None:
    from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb

    listed = _sync_call(sock, "ListPodSandbox", pb.ListPodSandboxRequest(), pb.ListPodSandboxResponse)
    for sandbox in listed.items:  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            _sync_call(sock, "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.id),
                       pb.StopPodSandboxResponse)
        with contextlib.suppress(Exception):
            _sync_call(sock, "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id),
                       pb.RemovePodSandboxResponse)


def _shim_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "containerd-shim" in cmdline and marker in cmdline:
                pids.append(int(proc.name))
    return pids


def _mounts_under(prefix: str) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].replace("\\040", " ")
            if mountpoint.startswith(prefix):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def _rmdir_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def remove_test_cgroups() -> None:
    root = Path("/sys/fs/cgroup")
    for hierarchy in [root, *[p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]]:
        _rmdir_tree(hierarchy / CGROUP_BASE.strip("/"))


@pytest.fixture(scope="session")
def containerd_daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("containerd tests need root")
    if not (Path(CONTAINERD).exists() and Path(CTR).exists()):
        pytest.skip("containerd is not installed (apt-get install containerd)")
    d = Path(tempfile.mkdtemp(prefix="mk-ctrd-"))
    tag = f"{os.getpid() % 10000:04d}"
    octet = 100 + os.getpid() % 100
    network, bridge = f"mkctrd{tag}", f"mkctrd{tag}"
    subnet, gateway = f"10.{octet}.{os.getpid() % 200 + 20}.0/24", f"10.{octet}.{os.getpid() % 200 + 20}.1"
    ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    shims_before = set(os.listdir(SHIM_DIR)) if SHIM_DIR.is_dir() else set()
    (d / "net.d").mkdir(parents=True)
    (d / "net.d" / "10-microkube.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": network,
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                              "dataDir": str(d / "cni-ipam")}},
                    {"type": "loopback"}]}))
    (d / "config.toml").write_text(_config(d, subnet, gateway))
    log = open(d / "containerd.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([CONTAINERD, "--config", str(d / "config.toml")], stdout=log, stderr=subprocess.STDOUT)
    sock = d / "containerd.sock"
    daemon = Daemon(d, sock, f"unix://{sock}", network, bridge, subnet, proc.pid)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {(d / 'containerd.log').read_text()[-3000:]}")
            time.sleep(0.05)
        (d / "pause.tar").write_bytes(busybox_archive(PAUSE_IMAGE, ("/bin/sleep", "infinity")))
        (d / "busybox.tar").write_bytes(busybox_archive(BUSYBOX_IMAGE))
        _import(sock, d / "pause.tar")
        _import(sock, d / "busybox.tar")
        yield daemon
    finally:
        with contextlib.suppress(Exception):
            _remove_all_sandboxes(sock)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for pid in _shim_pids(str(sock)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mountpoint in _mounts_under(str(d) + "/"):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        if SHIM_DIR.is_dir():
            for name in set(os.listdir(SHIM_DIR)) - shims_before:
                with contextlib.suppress(OSError):
                    (SHIM_DIR / name).unlink()
            with contextlib.suppress(OSError):
                SHIM_DIR.rmdir()  # only if nothing else uses it
                SHIM_DIR.parent.rmdir()
        if CNI_RESULTS.is_dir():
            for entry in CNI_RESULTS.glob(f"{network}-*"):
                with contextlib.suppress(OSError):
                    entry.unlink()
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
        remove_test_cgroups()
        Path("/proc/sys/net/ipv4/ip_forward").write_text(ip_forward)


@pytest.fixture
async def runtime(containerd_daemon: Daemon) -> AsyncIterator[object]:
    from microkube_containerd.runtime import create_runtime

    pack = create_runtime({"endpoint": containerd_daemon.endpoint, "ctr": CTR})
    yield pack
    await pack.close()


def cri_serve_runc_options(socket: Path) -> dict[str, str]:
    """The containerd pack's options for ``cri_serve_runc``: what runc declares (attach, terminals), and pods
    networked by the node agent."""
    from microkube_runc.runtime import CAPABILITIES

    return {"endpoint": f"unix://{socket}", "attach": str(CAPABILITIES.supports_attach).lower(),
            "tty": str(CAPABILITIES.supports_tty).lower(), "networks_pods": "false"}


@pytest.fixture(scope="session")
def cri_serve_runc() -> Iterator[Path]:
    """``microkube cri-serve --runtime runc`` on a private socket and root (busybox imported); yields the socket."""
    if os.geteuid() != 0:
        pytest.skip("runc through cri-serve needs root")
    import asyncio
    import concurrent.futures
    import sys

    from microkube_runc.busybox import import_busybox
    from microkube_runc.images import ImageStore

    d = Path(tempfile.mkdtemp(prefix="mk-criserve-"))
    # The image store alone (a RuncRuntime would make this process a child subreaper). A thread of its own:
    # this fixture may be set up from inside the test's running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(import_busybox(ImageStore(d / "runc" / "images")))).result()
    sock = d / "cri.sock"
    env = {k: v for k, v in os.environ.items() if k != "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD"}
    log = open(d / "cri-serve.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from microkube.cli import main; sys.exit(main())",
                             "cri-serve", "--runtime", "runc", "--socket", str(sock),
                             "--runtime-option", f"root={d / 'runc'}"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cri-serve did not start: {(d / 'cri-serve.log').read_text()[-3000:]}")
            time.sleep(0.05)
        yield sock
    finally:
        with contextlib.suppress(Exception):
            _remove_all_sandboxes(sock)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for mountpoint in _mounts_under(str(d) + "/"):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        remove_test_cgroups()
