"""The runc RuntimeService against real runc and the busybox image: sandboxes, containers, logs, exec, OOM, restart.

Each test gets a private state/image root under tmp_path and a private cgroup parent (under this process's memory
cgroup); the fixture removes every sandbox, then checks that no runc container, cgroup directory or mount remains.
Tests of what differs between OCI runtimes (versions, adoption by another instance or process, cleanup, stdin FIFOs)
run with crun too (``ociRuntime: crun``, when Debian's crun is installed); the CRI suite covers the rest for both.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid, NotFound, PluginError, Retryable
from microkube_runc import cgroups
from microkube_runc.busybox import BUSYBOX, import_busybox
from microkube_runc.runtime import CRUN_WRAPPER, DEFAULT_CRUN, RuncRuntime, RuncRuntimePack, create_runtime

RUNC = shutil.which("runc") or "/usr/sbin/runc"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runc containers, namespaces, cgroups, mounts"),
    pytest.mark.skipif(not os.path.exists(RUNC) or not os.path.exists(BUSYBOX), reason="needs runc and busybox"),
]
#: The pack's options per OCI runtime.
RUNTIME_OPTIONS: dict[str, dict[str, str]] = {"runc": {"runc": RUNC}, "crun": {"ociRuntime": "crun"}}
needs_crun = pytest.mark.skipif(not os.path.exists(DEFAULT_CRUN), reason="crun is not installed (Debian package crun)")
#: Runs a test with runc and with crun (an indirect parameter of the ``node`` fixture).
both_runtimes = pytest.mark.parametrize("node", ["runc", pytest.param("crun", marks=needs_crun)], indirect=True)

_counter = itertools.count()
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")
SLEEPER = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done")


class Node:
    def __init__(self, tmp: Path, oci_runtime: str = "runc") -> None:
        self.tmp = tmp
        self.root = tmp / "runc"
        self.parent = os.path.join(cgroups.own_cgroup("memory"), f"mktest-{os.getpid()}-{next(_counter)}")
        self.logs = tmp / "logs"
        self.oci_runtime = oci_runtime
        self.options: dict[str, str] = {"root": str(self.root), "cgroupParent": self.parent,
                                        **RUNTIME_OPTIONS[oci_runtime]}
        self.pack: RuncRuntimePack = create_runtime(self.options)
        self.others: list[RuncRuntime] = []

    @property
    def rt(self) -> RuncRuntime:
        return self.pack.runtime

    def sandbox_config(self, name: str = "pod", hostname: str = "") -> cri.PodSandboxConfig:
        return cri.PodSandboxConfig(cri.PodSandboxMetadata(name, f"uid-{name}", "default"), hostname=hostname,
                                    log_directory=str(self.logs / name), labels={"app": name})

    async def sandbox(self, name: str = "pod", hostname: str = "") -> tuple[str, cri.PodSandboxConfig]:
        config = self.sandbox_config(name, hostname)
        return await self.rt.run_pod_sandbox(config), config

    async def run(self, sid: str, sandbox: cri.PodSandboxConfig, name: str, command: tuple[str, ...],
                  resources: cri.LinuxContainerResources | None = None, *, start: bool = True) -> str:
        config = cri.ContainerConfig(
            cri.ContainerMetadata(name), cri.ImageSpec("busybox"), command=command, log_path=f"{name}/0.log",
            envs=(cri.KeyValue("GREETING", "hi"),), labels={"c": name},
            linux=cri.LinuxContainerConfig(resources=resources or cri.LinuxContainerResources()))
        cid = await self.rt.create_container(sid, config, sandbox)
        if start:
            await self.rt.start_container(cid)
        return cid

    async def wait_exited(self, cid: str, limit: float = 10) -> cri.ContainerStatus:
        deadline = time.monotonic() + limit
        while True:
            status = await self.rt.container_status(cid)
            if status.state == cri.ContainerState.CONTAINER_EXITED or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.02)

    def leftovers(self) -> list[str]:
        found: list[str] = []
        runc_root = self.root / "state" / "runc"
        if runc_root.exists():
            listing = subprocess.run([self.rt.runc, "--root", str(runc_root), "list", "-q"], capture_output=True,
                                     text=True, check=False)
            found += [f"{self.oci_runtime} container {c}" for c in listing.stdout.split()]
        found += [f"cgroup {p}" for p in cgroups.exists_anywhere(self.parent) if any(p.iterdir()) and any(
            child.is_dir() for child in p.iterdir())]
        mounts = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if str(self.tmp) in line.split()[4]]
        return found

    async def cleanup(self) -> None:
        for rt in [self.rt, *self.others]:
            for sandbox in await rt.list_pod_sandbox():
                await rt.remove_pod_sandbox(sandbox.id)
        leftovers = self.leftovers()
        for rt in [self.rt, *self.others]:
            await rt.close()
        cgroups.remove_tree(self.parent)
        assert leftovers == []


@pytest.fixture
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path, getattr(request, "param", "runc"))
    await import_busybox(n.pack.images)
    try:
        yield n
    finally:
        await n.cleanup()


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def ismount(path: str | Path) -> bool:
    return os.path.ismount(path)


def log_records(path: str) -> list[tuple[str, str, str]]:
    records = []
    for line in Path(path).read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, line
        records.append((match[1], match[2], match[3]))
    return records


@both_runtimes
async def test_version_status_and_factory(node: Node) -> None:
    version = await node.rt.version()
    assert version.runtime_name == node.oci_runtime and version.runtime_version.startswith("1.")
    status = await node.rt.status()
    assert status.condition(cri.RUNTIME_READY) == cri.RuntimeCondition(cri.RUNTIME_READY, True)
    network = status.condition(cri.NETWORK_READY)
    assert network is not None and not network.status
    assert not node.pack.capabilities.networks_pods_itself
    assert isinstance(node.pack, cri.Runtime) and isinstance(node.rt, cri.RuntimeService)
    assert isinstance(node.pack.images, cri.ImageService)


async def test_sandbox_run_stop_remove_idempotent(node: Node) -> None:
    sid, _ = await node.sandbox("web", hostname="web-0")
    status = await node.rt.pod_sandbox_status(sid, verbose=True)
    assert status.state == cri.PodSandboxState.SANDBOX_READY
    assert status.metadata.name == "web"
    netns, pid = status.info["netns"], int(status.info["pid"])
    assert netns == node.rt.netns_path(sid) and ismount(netns)
    assert os.stat(netns).st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    assert os.readlink(f"/proc/{pid}/ns/uts") != os.readlink("/proc/self/ns/uts")
    pod_cgroup = status.info["cgroup"]
    assert pid in cgroups.procs(pod_cgroup)
    listed = await node.rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={"app": "web"}))
    assert [s.id for s in listed] == [sid]
    assert await node.rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={"app": "other"})) == []

    await node.rt.stop_pod_sandbox(sid)
    await node.rt.stop_pod_sandbox(sid)
    assert (await node.rt.pod_sandbox_status(sid)).state == cri.PodSandboxState.SANDBOX_NOTREADY
    assert not exists(f"/proc/{pid}")
    ready = cri.PodSandboxFilter(state=cri.PodSandboxState.SANDBOX_READY)
    assert await node.rt.list_pod_sandbox(ready) == []

    await node.rt.remove_pod_sandbox(sid)
    await node.rt.remove_pod_sandbox(sid)
    await node.rt.stop_pod_sandbox("unknown")
    await node.rt.remove_pod_sandbox("unknown")
    with pytest.raises(NotFound):
        await node.rt.pod_sandbox_status(sid)
    assert not exists(netns)
    assert cgroups.exists_anywhere(pod_cgroup) == []
    with pytest.raises(Invalid):
        await node.rt.run_pod_sandbox(cri.PodSandboxConfig(cri.PodSandboxMetadata("", "", "")))


async def test_container_output_goes_to_cri_log(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "echo", ("sh", "-c", "echo hello $GREETING; echo oops >&2; printf tail"),
                         start=False)
    status = await node.rt.container_status(cid)
    assert status.state == cri.ContainerState.CONTAINER_CREATED and status.started_at == 0
    await node.rt.start_container(cid)
    status = await node.wait_exited(cid)
    assert status.state == cri.ContainerState.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (0, cri.REASON_COMPLETED)
    assert 0 < status.created_at <= status.started_at <= status.finished_at
    assert status.log_path == str(node.logs / "pod" / "echo" / "0.log")
    records = log_records(status.log_path)
    assert sorted(records) == sorted([("stdout", "F", "hello hi"), ("stderr", "F", "oops"), ("stdout", "F", "tail")])
    listed = await node.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=sid))
    assert [(c.id, c.state, c.metadata.name) for c in listed] == [(cid, cri.ContainerState.CONTAINER_EXITED, "echo")]
    assert await node.rt.list_containers(cri.ContainerFilter(state=cri.ContainerState.CONTAINER_RUNNING)) == []
    await node.rt.remove_container(cid)
    await node.rt.remove_container(cid)
    with pytest.raises(NotFound):
        await node.rt.container_status(cid)


async def test_failing_command_reports_error(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "fail", ("sh", "-c", "echo bad >&2; exit 3"))
    status = await node.wait_exited(cid)
    assert (status.exit_code, status.reason) == (3, cri.REASON_ERROR)
    assert log_records(status.log_path) == [("stderr", "F", "bad")]
    with pytest.raises(NotFound):
        await node.rt.create_container(sid, cri.ContainerConfig(cri.ContainerMetadata("x"), cri.ImageSpec(
            "example.com/absent:v1")), sandbox)


async def test_exec_sync_and_streaming_exec(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "app", SLEEPER)
    result = await node.rt.exec_sync(cid, ["sh", "-c", "echo out $GREETING; echo err >&2; exit 7"], timeout=10)
    assert (result.stdout, result.stderr, result.exit_code) == (b"out hi\n", b"err\n", 7)
    with pytest.raises(Retryable):
        await node.rt.exec_sync(cid, ["sleep", "30"], timeout=1)
    stream = await node.rt.exec(cid, ["sh", "-c", "tr a-z A-Z; echo done >&2"], stdin=True)
    assert isinstance(stream, cri.ContainerStream)
    await stream.write_stdin(b"hello\n")
    await stream.close_stdin()
    assert await stream.read_stdout() == b"HELLO\n"
    assert await stream.read_stderr() == b"done\n"
    assert await stream.wait() == 0
    await stream.close()
    stats = await node.rt.container_stats(cid)
    assert stats.cpu is not None and stats.cpu.usage_core_nano_seconds > 0
    assert stats.memory is not None and stats.memory.working_set_bytes > 0
    await node.rt.update_container_resources(cid, cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20))
    limit = await node.rt.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    assert limit.stdout.strip() == str(64 << 20).encode()


async def test_stop_with_timeout_kills_a_process_ignoring_sigterm(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    stubborn = await node.run(sid, sandbox, "stubborn", ("sh", "-c", "trap '' TERM; while :; do sleep 1; done"))
    polite = await node.run(sid, sandbox, "polite", SLEEPER)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await node.rt.stop_container(stubborn, 1)
    elapsed = time.monotonic() - started
    status = await node.rt.container_status(stubborn)
    assert status.state == cri.ContainerState.CONTAINER_EXITED and status.exit_code == 137
    assert 0.9 < elapsed < 5
    started = time.monotonic()
    await node.rt.stop_container(polite, 10)
    assert time.monotonic() - started < 3
    status = await node.rt.container_status(polite)
    assert (status.exit_code, status.reason) == (0, cri.REASON_COMPLETED)
    await node.rt.stop_container(polite, 10)
    await node.rt.stop_container("unknown", 1)


async def test_memory_limit_oom_killed(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "hog", ("sh", "-c", "x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived"),
                         cri.LinuxContainerResources(memory_limit_in_bytes=16 << 20))
    status = await node.wait_exited(cid, 20)
    assert status.state == cri.ContainerState.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (137, cri.REASON_OOM_KILLED)


async def test_containers_share_network_namespace_and_hostname(node: Node) -> None:
    sid, sandbox = await node.sandbox("shared", hostname="shared-host")
    first = await node.run(sid, sandbox, "one", SLEEPER)
    second = await node.run(sid, sandbox, "two", SLEEPER)
    probe = ["sh", "-c", "readlink /proc/self/ns/net; hostname; cat /etc/hostname"]
    one, two = await node.rt.exec_sync(first, probe), await node.rt.exec_sync(second, probe)
    assert one.exit_code == 0 and one.stdout == two.stdout
    net, hostname, file_hostname = one.stdout.decode().split()
    assert hostname == file_hostname == "shared-host"
    assert net == f"net:[{os.stat(node.rt.netns_path(sid)).st_ino}]"
    pid_one = (await node.rt.exec_sync(first, ["readlink", "/proc/self/ns/pid"])).stdout
    pid_two = (await node.rt.exec_sync(second, ["readlink", "/proc/self/ns/pid"])).stdout
    assert pid_one != pid_two


@both_runtimes
async def test_new_runtime_instance_sees_and_manages_running_containers(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "app", SLEEPER)
    again = create_runtime(node.options).runtime
    node.others.append(again)
    assert [s.id for s in await again.list_pod_sandbox()] == [sid]
    assert (await again.pod_sandbox_status(sid)).state == cri.PodSandboxState.SANDBOX_READY
    listed = await again.list_containers()
    assert [(c.id, c.state) for c in listed] == [(cid, cri.ContainerState.CONTAINER_RUNNING)]
    assert (await again.exec_sync(cid, ["echo", "still here"])).stdout == b"still here\n"
    await again.stop_container(cid, 5)
    status = await again.container_status(cid)
    assert (status.state, status.exit_code, status.reason) == (
        cri.ContainerState.CONTAINER_EXITED, 0, cri.REASON_COMPLETED)
    await again.remove_pod_sandbox(sid)
    assert await node.rt.list_pod_sandbox() == []


@both_runtimes
async def test_remove_pod_sandbox_leaves_nothing(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cids = [await node.run(sid, sandbox, f"c{i}", SLEEPER) for i in range(2)]
    pids = [node.rt.container_pid(c) for c in cids]
    status = await node.rt.pod_sandbox_status(sid, verbose=True)
    pids.append(int(status.info["pid"]))
    pod_cgroup, netns = status.info["cgroup"], status.info["netns"]
    rootfs = [node.root / "state" / "containers" / c / "rootfs" for c in cids]
    assert all(ismount(r) for r in rootfs)
    await node.rt.remove_pod_sandbox(sid)
    assert await node.rt.list_containers() == []
    assert await node.rt.list_pod_sandbox() == []
    assert [p for p in pids if exists(f"/proc/{p}")] == []
    assert cgroups.exists_anywhere(pod_cgroup) == []
    assert not exists(netns)
    assert not any(r.exists() for r in rootfs)
    assert node.leftovers() == []


def test_plugin_registers_the_runc_runtime(tmp_path: Path) -> None:
    from microkube_interfaces import Registrar
    from microkube_runc import plugin

    registrar = Registrar()
    plugin.microkube_register(registrar)
    registration = registrar.runtimes.get("runc")
    assert registration.plugin == "runc" and registration.versions == ("v1",)
    pack = registration.factory({"root": str(tmp_path / "r")})
    assert isinstance(pack, cri.Runtime) and pack.capabilities.supports_exec_streaming
    assert (tmp_path / "r" / "state" / "netns").is_dir() and (tmp_path / "r" / "images" / "blobs").is_dir()


CRASHING_AGENT = """
import asyncio, json, os, sys
from microkube_interfaces import cri
from microkube_runc.runtime import create_runtime

async def main() -> None:
    rt = create_runtime(json.loads(sys.argv[1])).runtime
    sandbox = cri.PodSandboxConfig(cri.PodSandboxMetadata("crash", "uid-crash", "default"), log_directory=sys.argv[2])
    sid = await rt.run_pod_sandbox(sandbox)
    command = ("sh", "-c", "echo before; sleep 2; echo after; trap 'exit 4' TERM; while :; do sleep 1 & wait $!; done")
    config = cri.ContainerConfig(cri.ContainerMetadata("app"), cri.ImageSpec("busybox"), command=command,
                                 log_path="app.log")
    cid = await rt.create_container(sid, config, sandbox)
    await rt.start_container(cid)
    await asyncio.sleep(0.3)
    print(sid, cid, flush=True)
    os._exit(0)  # the node agent dies without any cleanup

asyncio.run(main())
"""


@both_runtimes
async def test_runtime_process_crash_and_restart(node: Node) -> None:
    """Another process runs a pod and dies; this process's runtime adopts it: logs continue, stop and exit code work."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_AGENT, json.dumps(node.options), str(node.logs),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    sid, cid = out.decode().split()
    assert [s.id for s in await node.rt.list_pod_sandbox()] == [sid]
    assert (await node.rt.pod_sandbox_status(sid)).state == cri.PodSandboxState.SANDBOX_READY
    status = await node.rt.container_status(cid)
    assert status.state == cri.ContainerState.CONTAINER_RUNNING
    deadline = time.monotonic() + 10
    while ("stdout", "F", "after") not in log_records(status.log_path) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert log_records(status.log_path) == [("stdout", "F", "before"), ("stdout", "F", "after")]
    await node.rt.stop_container(cid, 5)
    status = await node.rt.container_status(cid)
    assert (status.state, status.exit_code, status.reason) == (cri.ContainerState.CONTAINER_EXITED, 4,
                                                               cri.REASON_ERROR)


async def test_port_forward_into_the_pod_network_namespace(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "server", ("nc", "-ll", "-p", "8080", "-e", "tr", "a-z", "A-Z"))
    stream: cri.PortStream | None = None
    deadline = time.monotonic() + 5
    while stream is None:
        try:
            stream = await node.rt.port_forward(sid, 8080)
        except Retryable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert isinstance(stream, cri.PortStream)
    await stream.write(b"ping\n")
    assert await asyncio.wait_for(stream.read(), 5) == b"PING\n"
    await stream.close()
    await stream.close()
    with pytest.raises(Retryable):
        await node.rt.port_forward(sid, 8081)
    assert (await node.rt.exec_sync(cid, ["cat", "/sys/class/net/lo/operstate"])).stdout.strip() in (b"unknown", b"up")
    with pytest.raises(NotFound):
        await node.rt.port_forward("unknown", 8080)


async def test_reopen_container_log_after_rotation(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "ticker", ("sh", "-c", "while :; do echo tick; sleep 0.05; done"))
    log_path = (await node.rt.container_status(cid)).log_path
    await asyncio.sleep(0.3)
    os.rename(log_path, log_path + ".1")
    await node.rt.reopen_container_log(cid)
    await asyncio.sleep(0.3)
    assert log_records(log_path + ".1") and log_records(log_path)
    assert set(log_records(log_path)) == {("stdout", "F", "tick")}
    stats = await node.rt.list_container_stats(cri.ContainerFilter(pod_sandbox_id=sid))
    assert [s.id for s in stats] == [cid]
    await node.rt.stop_container(cid, 0)
    with pytest.raises(Invalid):
        await node.rt.reopen_container_log(cid)


@both_runtimes
async def test_stdin_without_stdin_once_outlives_attachments_and_the_runtime(node: Node) -> None:
    """stdin: true without stdinOnce: the process never reads end of file, detaching keeps its stdin open, and a
    new runtime instance (a restarted node agent) attaches and writes to it again."""
    sid, sandbox = await node.sandbox()
    config = cri.ContainerConfig(cri.ContainerMetadata("reader"), cri.ImageSpec("busybox"),
                                 command=("sh", "-c", "while read line; do echo got $line; done; echo ended"),
                                 log_path="reader/0.log", stdin=True)
    cid = await node.rt.create_container(sid, config, sandbox)
    await node.rt.start_container(cid)
    first = await node.rt.attach(cid, stdin=True)
    await first.write_stdin(b"one\n")
    assert await first.read_stdout() == b"got one\n"
    await first.close_stdin()
    await first.close()
    await node.rt.close()  # the first instance goes away with its descriptors

    again = create_runtime(node.options).runtime
    node.others.append(again)
    await again.list_containers()  # adopts the running container
    second = await again.attach(cid, stdin=True)
    await second.write_stdin(b"two\n")
    assert await second.read_stdout() == b"got two\n"
    await second.close()
    assert (await again.container_status(cid)).state == cri.ContainerState.CONTAINER_RUNNING
    records = log_records(str(node.logs / "pod" / "reader" / "0.log"))
    assert [text for _, _, text in records] == ["got one", "got two"]


def _alive(pid: int, start_ticks: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start_ticks


async def _read_until(stream: cri.ContainerStream, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        chunk = await asyncio.wait_for(stream.read_stdout(), 20)
        assert chunk, f"end of output before {wanted!r}: {seen!r}"
        seen += chunk
    return seen


@both_runtimes
async def test_a_tty_container_keeps_its_terminal_across_runtime_restarts(node: Node) -> None:
    """A tty container's terminal outlives the runtime instance that made it (a holder process keeps the master
    open): a new instance attaches and drives the same shell; removing the container ends the holder."""
    sid, sandbox = await node.sandbox()
    config = cri.ContainerConfig(cri.ContainerMetadata("shell"), cri.ImageSpec("busybox"), command=("sh",),
                                 log_path="shell/0.log", stdin=True, tty=True)
    cid = await node.rt.create_container(sid, config, sandbox)
    await node.rt.start_container(cid)
    first = await node.rt.attach(cid, stdin=True)
    await first.write_stdin(b"echo $((2+3))\n")
    await _read_until(first, b"5\r\n")
    await first.close()
    holder = json.loads((node.root / "state" / "containers" / cid / "container.json").read_text())["stdio_holder"]
    await node.rt.close()

    again = create_runtime(node.options).runtime
    node.others.append(again)
    second = await again.attach(cid, stdin=True)
    await second.write_stdin(b"echo $((6*7))\n")
    await _read_until(second, b"42\r\n")
    await second.close()
    assert (await again.container_status(cid)).state == cri.ContainerState.CONTAINER_RUNNING
    await again.remove_container(cid)
    assert not _alive(holder["pid"], holder["start_ticks"]), "the stdio holder outlived its container"


@both_runtimes
async def test_output_written_while_no_runtime_runs_is_kept(node: Node) -> None:
    """A container writing while no runtime instance pumps its output (a node agent restarting) neither fails
    its writes nor loses lines: a holder keeps its pipes readable and the next instance drains them."""
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "ticker", ("sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); "
                                                               "sleep 0.05; done"))
    log = node.logs / "pod" / "ticker" / "0.log"

    def ticks() -> list[int]:
        return [int(text.split()[1]) for _, _, text in log_records(str(log)) if text.startswith("tick ")]

    await _eventually(lambda: len(ticks()) >= 3)
    await node.rt.close()
    await asyncio.sleep(1.0)  # output written meanwhile waits in the pipe
    again = create_runtime(node.options).runtime
    node.others.append(again)
    await again.list_containers()  # adopts the container and pumps its output again
    await _eventually(lambda: bool(ticks()) and ticks()[-1] >= 40)
    seen = ticks()
    assert seen == list(range(len(seen))), f"lines lost: {sorted(set(range(seen[-1] + 1)) - set(seen))}"
    assert (await again.container_status(cid)).state == cri.ContainerState.CONTAINER_RUNNING


async def _eventually(check: Callable[[], bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_attach_needs_a_container_with_stdin_for_input(node: Node) -> None:
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "app", SLEEPER)
    with pytest.raises(Invalid) as info:
        await node.rt.attach(cid, stdin=True)
    assert "stdin" in str(info.value)
    output_only = await node.rt.attach(cid)
    await output_only.close()



@both_runtimes
async def test_tty_exec_follows_resizes(node: Node) -> None:
    """A terminal's size reaches a tty exec, and again whenever the client resizes (kubectl exec -it in a resized
    window); crun's own relay would drop the later resizes. runc applies a resize asynchronously (on SIGWINCH), and
    right after its start ``stty`` may fail on its terminal, so the exec is asked until it shows the new size."""
    sid, sandbox = await node.sandbox()
    cid = await node.run(sid, sandbox, "app", SLEEPER)
    stream = await node.rt.exec(cid, ["sh", "-c", "while read line; do stty size; echo end; done"], tty=True,
                                stdin=True)
    buffer = b""

    async def answer() -> bytes:
        """What one query printed before its ``end`` line (the echoed query included)."""
        nonlocal buffer
        while (match := re.search(rb"(?m)^end\r?$", buffer)) is None:
            chunk = await asyncio.wait_for(stream.read_stdout(), 10)
            assert chunk, f"the exec ended: {buffer!r}"
            buffer += chunk
        printed, buffer = buffer[:match.start()], buffer[match.end():]
        return printed

    async def size_becomes(expected: bytes) -> None:
        seen = []
        for _ in range(50):
            await stream.write_stdin(b"size\n")
            seen.append(await answer())
            if re.search(rb"(?m)^" + expected + rb"\r?$", seen[-1]):
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"the exec's terminal never became {expected!r}: {seen}")

    await stream.resize(100, 30)
    await size_becomes(b"30 100")
    await stream.resize(120, 40)
    await size_becomes(b"40 120")
    await stream.close_stdin()
    assert await asyncio.wait_for(stream.wait(), 10) == 0
    await stream.close()

def test_oci_runtime_option_names_the_accepted_values(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as info:
        create_runtime({"root": str(tmp_path / "r"), "ociRuntime": "youki"})
    assert [c.field for c in info.value.causes] == ["ociRuntime"]
    assert "runc, crun" in str(info.value) and "'youki'" in str(info.value)


def test_crun_missing_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as info:
        create_runtime({"root": str(tmp_path / "r"), "ociRuntime": "crun", "runc": str(tmp_path / "no-crun")})
    assert "no-crun" in str(info.value) and "apt-get install crun" in str(info.value)


@needs_crun
async def test_switching_runtime_over_live_containers_is_refused(node: Node) -> None:
    await node.sandbox()
    with pytest.raises(Invalid) as info:
        create_runtime({**node.options, "ociRuntime": "crun", "runc": ""})
    assert [c.field for c in info.value.causes] == ["ociRuntime"] and "made by runc" in str(info.value)
    (node.root / "state" / "oci-runtime").unlink()  # a state dir from before crun: runc made its containers
    with pytest.raises(Invalid):
        create_runtime({**node.options, "ociRuntime": "crun", "runc": ""})


@needs_crun
def test_crun_wrapper_is_written_once_and_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not cgroups.hybrid_v2_controllers():
        pytest.skip("this host's cgroups are not hybrid: crun runs without the wrapper")
    options = {"root": str(tmp_path / "r"), "ociRuntime": "crun"}
    wrapper = tmp_path / "r" / "state" / CRUN_WRAPPER
    assert create_runtime(options).runtime.runc == str(wrapper)
    assert os.access(wrapper, os.X_OK) and DEFAULT_CRUN in wrapper.read_text()
    first = wrapper.stat()
    create_runtime(options)
    again = wrapper.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    wrapper.write_text("#!/bin/sh\nexit 1\n")
    create_runtime(options)
    version = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("crun version")
    assert cgroups.hybrid_v2_controllers()  # the host keeps its cgroup2 mount
    # ... also a host whose mounts are shared (systemd's), made here in a scratch mount namespace.
    shared = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --make-rshared / && "$0" --version >/dev/null && '
                             'grep -c " /sys/fs/cgroup/unified " /proc/self/mountinfo', str(wrapper)],
                            capture_output=True, text=True, check=False)
    assert (shared.returncode, shared.stdout.strip()) == (0, "1"), shared.stderr

    monkeypatch.setattr(cgroups, "hybrid_v2_controllers", list)
    assert create_runtime({"root": str(tmp_path / "plain"), "ociRuntime": "crun"}).runtime.runc == DEFAULT_CRUN
