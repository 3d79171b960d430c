"""The containerd pack against a real containerd 1.6 (and, with ``backend``, against ``microkube cri-serve``).

Every test takes ``backend``: ``containerd`` is the private containerd of conftest; ``cri-serve-runc`` is the
same client pointed at ``microkube cri-serve --runtime runc`` (the runc pack served as CRI v1 gRPC), which
proves the gRPC path both ways (exec streams and port-forward through cri-serve's streaming server too).
Differences are declared, not guessed: the client is told what runc lacks (``cri_serve_runc_options``), and the
runc pack leaves pod networking to the node agent.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from containerd_testenv import BUSYBOX_IMAGE, CGROUP_BASE, CTR, Daemon, busybox_archive, cri_serve_runc_options

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid, NotFound, Unsupported

pytestmark = [pytest.mark.root, pytest.mark.slow]

LONG_RUNNING = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; echo started; while :; do sleep 3600 & wait $!; done")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] ")


@pytest.fixture(params=["containerd", "cri-serve-runc"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pack(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    from microkube_containerd.runtime import create_runtime

    if backend == "containerd":
        daemon: Daemon = request.getfixturevalue("containerd_daemon")
        runtime = create_runtime({"endpoint": daemon.endpoint, "ctr": CTR})
    else:
        runtime = create_runtime(cri_serve_runc_options(request.getfixturevalue("cri_serve_runc")))
    yield runtime
    for sandbox in await runtime.runtime.list_pod_sandbox():
        if sandbox.metadata.namespace == "ctrd-test":
            await runtime.runtime.stop_pod_sandbox(sandbox.id)
            await runtime.runtime.remove_pod_sandbox(sandbox.id)
    await runtime.close()


def sandbox_config(log_dir: str, name: str = "pod") -> cri.PodSandboxConfig:
    uid = uuid.uuid4().hex
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="ctrd-test"),
        hostname=name, log_directory=log_dir, labels={"app": name, "test": "containerd"},
        annotations={"note": "hello"},
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=f"{CGROUP_BASE}/pod{uid}"))


def container_config(name: str, command: tuple[str, ...], **kwargs: Any) -> cri.ContainerConfig:
    return cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(BUSYBOX_IMAGE),
                               command=command, log_path=f"{name}_0.log", labels={"container": name}, **kwargs)


@pytest.fixture
def log_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="mk-ctrd-logs-") as d:
        yield d


async def wait_for_state(runtime: Any, cid: str, state: cri.ContainerState) -> cri.ContainerStatus:
    for _ in range(300):
        status: cri.ContainerStatus = await runtime.container_status(cid)
        if status.state == state:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"container {cid} never reached {state.name}: {status}")


async def test_version_and_status(pack: Any) -> None:
    version = await pack.runtime.version()
    assert version.runtime_api_version == "v1" and version.runtime_name
    status = await pack.runtime.status()
    assert status.condition(cri.RUNTIME_READY) is not None and status.condition(cri.RUNTIME_READY).status


async def test_sandbox_lifecycle(pack: Any, backend: str, log_dir: str) -> None:
    rt = pack.runtime
    config = sandbox_config(log_dir)
    sid = await rt.run_pod_sandbox(config)
    status = await rt.pod_sandbox_status(sid, verbose=True)
    assert status.state == cri.PodSandboxState.SANDBOX_READY
    assert status.metadata == config.metadata and status.labels["app"] == "pod"
    assert status.annotations["note"] == "hello" and status.created_at > 0
    assert os.path.exists(status.info["netns"]) and int(status.info["pid"]) > 0  # noqa: ASYNC240
    if backend == "containerd":
        assert pack.capabilities.networks_pods_itself
        assert status.network.ip.startswith("10.")  # containerd ran the CNI bridge itself
    listed = await rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={"test": "containerd"}))
    assert sid in [s.id for s in listed]
    assert await rt.list_pod_sandbox(cri.PodSandboxFilter(id=sid, state=cri.PodSandboxState.SANDBOX_NOTREADY)) == []
    await rt.stop_pod_sandbox(sid)
    assert (await rt.pod_sandbox_status(sid)).state == cri.PodSandboxState.SANDBOX_NOTREADY
    await rt.stop_pod_sandbox(sid)  # idempotent
    await rt.remove_pod_sandbox(sid)
    await rt.remove_pod_sandbox(sid)
    with pytest.raises(NotFound):
        await rt.pod_sandbox_status(sid)
    cgroup = config.linux.cgroup_parent.strip("/")
    assert not [p for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup}") if p.exists()]  # noqa: ASYNC240


async def test_container_lifecycle_logs_exec_stats(pack: Any, log_dir: str) -> None:
    rt = pack.runtime
    config = sandbox_config(log_dir)
    sid = await rt.run_pod_sandbox(config)
    cid = await rt.create_container(sid, container_config(
        "app", LONG_RUNNING, envs=(cri.KeyValue("GREETING", "hi there"),),
        linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20,
                                                                             oom_score_adj=-998))), config)
    assert (await rt.container_status(cid)).state == cri.ContainerState.CONTAINER_CREATED
    await rt.start_container(cid)
    status = await wait_for_state(rt, cid, cri.ContainerState.CONTAINER_RUNNING)
    assert status.metadata.name == "app" and status.labels["container"] == "app" and status.started_at > 0
    listed = await rt.list_containers(cri.ContainerFilter(pod_sandbox_id=sid))
    assert [c.id for c in listed] == [cid] and listed[0].image.image
    result = await rt.exec_sync(cid, ["sh", "-c", "echo $GREETING; echo oops >&2; cat /sys/fs/cgroup/memory/"
                                                  "memory.limit_in_bytes; exit 3"], timeout=30)
    assert result.exit_code == 3 and result.stderr == b"oops\n"
    assert result.stdout.splitlines() == [b"hi there", str(64 << 20).encode()]
    stats = await rt.container_stats(cid)
    assert stats.id == cid and stats.memory is not None and stats.memory.working_set_bytes > 0
    assert cid in [s.id for s in await rt.list_container_stats(cri.ContainerFilter(pod_sandbox_id=sid))]
    await rt.update_container_resources(cid, cri.LinuxContainerResources(memory_limit_in_bytes=128 << 20))
    limit = await rt.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"], timeout=30)
    assert limit.stdout.strip() == str(128 << 20).encode()
    await rt.stop_container(cid, 10)
    status = await wait_for_state(rt, cid, cri.ContainerState.CONTAINER_EXITED)
    assert status.exit_code == 0 and status.finished_at >= status.started_at
    log = Path(log_dir, "app_0.log").read_text().splitlines()  # noqa: ASYNC240
    assert log and LOG_LINE.match(log[0]) and log[0].endswith(" stdout F started")
    await rt.stop_container(cid, 0)
    await rt.remove_container(cid)
    await rt.remove_container(cid)
    with pytest.raises(NotFound):
        await rt.container_status(cid)


async def test_job_exit_code(pack: Any, log_dir: str) -> None:
    rt = pack.runtime
    config = sandbox_config(log_dir)
    sid = await rt.run_pod_sandbox(config)
    cid = await rt.create_container(sid, container_config("job", ("sh", "-c", "echo done; exit 3")), config)
    await rt.start_container(cid)
    status = await wait_for_state(rt, cid, cri.ContainerState.CONTAINER_EXITED)
    assert status.exit_code == 3 and status.reason == cri.REASON_ERROR


async def test_errors_are_mapped(pack: Any, log_dir: str) -> None:
    rt = pack.runtime
    missing = "0" * 64
    with pytest.raises(NotFound):
        await rt.container_status(missing)
    with pytest.raises(NotFound):
        await rt.start_container(missing)
    with pytest.raises(NotFound):
        await rt.exec_sync(missing, ["true"])
    config = sandbox_config(log_dir)
    with pytest.raises(NotFound):
        await rt.create_container(missing, container_config("x", ("true",)), config)
    with pytest.raises(Invalid, match=r"metadata\.uid"):
        await rt.run_pod_sandbox(cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="x", uid="",
                                                                                      namespace="ctrd-test")))
    await rt.stop_container(missing, 0)  # idempotent
    await rt.remove_container(missing)
    await rt.stop_pod_sandbox(missing)
    await rt.remove_pod_sandbox(missing)
    # An RPC the server does not implement (newer than containerd 1.6; cri-serve has no checkpointing).
    from microkube_containerd.client import RUNTIME
    from microkube_interfaces.criapi.runtime.v1 import api_pb2 as pb

    with pytest.raises(Unsupported):
        await pack.client.call(RUNTIME, "CheckpointContainer", pb.CheckpointContainerRequest(container_id=missing),
                               pb.CheckpointContainerResponse)


async def test_images(pack: Any, backend: str, containerd_daemon: Daemon) -> None:
    images = pack.images
    present = await images.image_status(cri.ImageSpec(BUSYBOX_IMAGE))
    assert present is not None and present.id.startswith("sha256:") and BUSYBOX_IMAGE in present.repo_tags
    assert present.size > 0
    assert BUSYBOX_IMAGE in [t for i in await images.list_images() for t in i.repo_tags]
    assert await images.image_status(cri.ImageSpec("microkube.local/absent:v9")) is None
    await images.remove_image(cri.ImageSpec("microkube.local/absent:v9"))  # idempotent
    info = await images.image_fs_info()
    assert info.image_filesystems and info.image_filesystems[0].mountpoint
    if backend != "containerd":
        return
    extra = "microkube.local/extra:v1"
    archive = containerd_daemon.dir / "extra.tar"
    archive.write_bytes(busybox_archive(extra, ("echo", "extra")))
    imported = await images.import_archive(str(archive))
    assert [i.reference for i in imported] == [extra] and imported[0].id
    found = await images.image_status(cri.ImageSpec(extra))
    assert found is not None and found.id == imported[0].id
    await images.remove_image(cri.ImageSpec(extra))
    assert await images.image_status(cri.ImageSpec(extra)) is None
    assert await images.image_status(cri.ImageSpec(BUSYBOX_IMAGE)) is not None
    with pytest.raises(Invalid):
        await images.import_archive(str(containerd_daemon.dir / "nothing.tar"))


async def test_exec_stream_and_port_forward(pack: Any, log_dir: str) -> None:
    rt = pack.runtime
    config = sandbox_config(log_dir)
    sid = await rt.run_pod_sandbox(config)
    cid = await rt.create_container(sid, container_config(
        "server", ("sh", "-c", "while :; do echo hello-from-pod | nc -l -p 8080; done")), config)
    await rt.start_container(cid)
    await wait_for_state(rt, cid, cri.ContainerState.CONTAINER_RUNNING)
    stream = await rt.exec(cid, ["sh", "-c", "read line; echo got:$line; echo err >&2; exit 7"], stdin=True)
    try:
        await stream.write_stdin(b"ping\n")
        out = b""
        while chunk := await stream.read_stdout():
            out += chunk
        err = b""
        while chunk := await stream.read_stderr():
            err += chunk
        assert out == b"got:ping\n" and err == b"err\n"
        assert await stream.wait() == 7
    finally:
        await stream.close()
    for _ in range(50):  # nc may not listen yet
        port = await rt.port_forward(sid, 8080)
        try:
            data = await port.read()
            if data:
                assert data == b"hello-from-pod\n"
                break
        finally:
            await port.close()
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("port-forward never reached the pod's port 8080")


async def test_options_streaming_and_networks_pods() -> None:
    """``streaming=false`` / ``networks_pods=false`` (an endpoint such as cri-serve): declared and refused locally."""
    from microkube_containerd.runtime import create_runtime

    pack = create_runtime({"endpoint": "unix:///nonexistent/cri.sock", "streaming": "false", "networks_pods": False})
    try:
        caps = pack.capabilities
        assert not (caps.supports_exec_streaming or caps.supports_attach or caps.supports_tty
                    or caps.supports_port_forward or caps.networks_pods_itself)
        with pytest.raises(Unsupported):
            await pack.runtime.exec("0" * 64, ["true"])
        with pytest.raises(Unsupported):
            await pack.runtime.attach("0" * 64)
        with pytest.raises(Unsupported):
            await pack.runtime.port_forward("0" * 64, 80)
    finally:
        await pack.close()
    assert create_runtime({"endpoint": "unix:///nonexistent/cri.sock"}).capabilities.supports_attach
    with pytest.raises(Invalid, match="streaming"):
        create_runtime({"streaming": "maybe"})
    with pytest.raises(Invalid, match=r"attach=true: needs streaming=true"):
        create_runtime({"streaming": "false", "attach": "true"})


async def test_options_attach_and_tty() -> None:
    """``attach=false`` / ``tty=false`` (a runtime behind the endpoint without them, e.g. runc behind cri-serve):
    exec streams and port-forward stay, attach, tty execs and tty containers are refused locally."""
    from microkube_containerd.runtime import create_runtime

    pack = create_runtime({"endpoint": "unix:///nonexistent/cri.sock", "attach": "false", "tty": False})
    try:
        caps = pack.capabilities
        assert caps.supports_exec_streaming and caps.supports_port_forward
        assert not (caps.supports_attach or caps.supports_tty)
        with pytest.raises(Unsupported, match="attach"):
            await pack.runtime.attach("0" * 64)
        with pytest.raises(Unsupported, match="tty"):
            await pack.runtime.exec("0" * 64, ["true"], tty=True)
        config = container_config("t", ("true",), tty=True)
        with pytest.raises(Unsupported, match="tty"):
            await pack.runtime.create_container("0" * 64, config, sandbox_config("/tmp"))
    finally:
        await pack.close()
