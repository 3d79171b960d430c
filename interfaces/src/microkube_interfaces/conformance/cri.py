"""The cri/v1 conformance suite (microkube_interfaces.cri), after Kubernetes' CRI v1 and what ``critest`` validates.

A vendor subclasses ``CRIConformance`` (runtime and image rules in one class; ``CRIRuntimeConformance`` and
``CRIImageConformance`` hold the two halves for vendors that only want one) and supplies:

- ``cri_runtime``: a ready ``cri.Runtime`` (``.runtime``, ``.images``, ``.capabilities``), cleaned up afterwards;
- ``prepare_image``: makes ``test_image`` present in the runtime (the default pulls it when absent);
- optionally ``test_image`` (default ``busybox``: an image with busybox's ``sh``, ``sleep``, ``echo``, ``cat``, ``id``,
  ``nc``, ``head``, ``tr``, ``ps``, ``readlink``, ``hostname``), ``cri_capabilities`` (a ``CRICapabilities``; default:
  derived from ``cri_runtime.capabilities``), ``sandbox_config_factory`` (metadata → the base
  ``PodSandboxConfig``, e.g. to add a ``cgroup_parent``), ``removable_image`` (makes a second image present and
  returns its reference, for the removal rule) and ``pullable_image`` (a ``PullSource`` on a registry the vendor
  runs, for the pull rule).

The suite looks at containers from inside (``exec_sync`` of busybox commands: namespaces by ``readlink
/proc/self/ns/*``, capabilities from ``/proc/1/status``, cgroup limits from ``/sys/fs/cgroup``) and at the runtime's
answers, so it holds for any runtime. Optional behaviour is gated by ``CRICapabilities``; a capability the runtime
declares False is checked the other way: the call raises Unsupported (``RuntimeCapabilities``' promise).

Every test's docstring names the rule it enforces: "CRI <Call>" is the RPC's contract in ``api.proto`` (and the
Protocol's docstring in ``microkube_interfaces.cri``), "critest <area>" the cri-tools validation it mirrors. After
each test nothing the test created remains: its sandboxes are removed and the runtime must list none of them, nor
any of their containers. Needs root when the runtime does (real containers); depends on pytest only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from microkube_interfaces import cri
from microkube_interfaces.conformance._helpers import assert_implements, expect_error
from microkube_interfaces.errors import Invalid, MicrokubeError, NotFound, Retryable, Unsupported

T = TypeVar("T")
RULE = "cri/v1"

#: Makes names unique to this test process (runtimes may be shared by concurrent test processes).
_RUN = f"{os.getpid():x}{os.urandom(2).hex()}"
_counter = itertools.count()

#: A main process that exits 0 at once on SIGTERM (PID 1 of a container ignores signals it does not handle).
SLEEPER = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done")
#: One that ignores SIGTERM: only SIGKILL stops it.
STUBBORN = ("sh", "-c", "trap '' TERM; while :; do sleep 1; done")

#: ``<RFC3339Nano> <stdout|stderr> <F|P> <text>`` (RFC 3339 nano may trim trailing zeros and use an offset).
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) (F|P) (.*)$", re.S)

# /proc/<pid>/status CapEff bits.
CAP_CHOWN, CAP_NET_ADMIN, CAP_SYS_ADMIN = 0, 12, 21


# ------------------------------------------------------------------------------------ capabilities


@dataclass(frozen=True)
class CRICapabilities:
    """What the suite may expect of a runtime beyond the required calls; a vendor turns off what it lacks."""

    #: ``exec`` returns a ContainerStream (RuntimeCapabilities.supports_exec_streaming).
    exec_streaming: bool = True
    #: ``attach`` to a container's main process (supports_attach).
    attach: bool = True
    #: Containers and execs with a terminal (``ContainerConfig.tty``, ``exec(tty=True)``; supports_tty).
    tty: bool = True
    #: ``ContainerStream.close_stdin`` gives the exec'd or attached process end of file. A runtime whose stream
    #: protocol cannot signal it declares False; its ``close_stdin`` then raises Unsupported.
    stdin_close: bool = True
    #: ``ContainerStream.close`` of an exec that has not exited kills the exec'd process.
    exec_close_kills: bool = True
    #: ``port_forward`` into the sandbox's network namespace (supports_port_forward).
    port_forward: bool = True
    #: ``container_stats`` / ``list_container_stats`` (supports_stats).
    stats: bool = True
    #: ``update_container_resources`` (supports_update_resources).
    update_resources: bool = True
    #: The runtime networks pods itself: a sandbox gets a pod IP (RuntimeCapabilities.networks_pods_itself).
    networked: bool = False
    #: ``PodSandboxConfig.port_mappings`` publish host ports (on 127.0.0.1 for the test); needs ``networked``.
    port_mappings: bool = False
    #: Sandboxes in the host's network / PID / IPC namespace (NamespaceMode.NODE).
    host_network: bool = True
    host_pid: bool = True
    host_ipc: bool = True
    #: Containers sharing the pod's PID namespace (NamespaceMode.POD).
    pod_pid_namespace: bool = True
    #: ``LinuxPodSandboxConfig.sysctls`` applied (namespaced ones: ``kernel.shm*``, ``net.*``).
    sysctls: bool = True
    #: ``privileged`` containers (every capability of the bounding set).
    privileged: bool = True
    #: Linux capabilities added and dropped per container, visible in CapEff.
    linux_capabilities: bool = True
    #: ``run_as_user`` / ``run_as_group`` / ``supplemental_groups``.
    run_as_user: bool = True
    #: ``readonly_rootfs``.
    readonly_rootfs: bool = True
    #: Memory and CPU limits visible in the container's cgroup; OOM kills reported as OOMKilled.
    memory_limits: bool = True
    cpu_limits: bool = True
    oom_killed: bool = True
    #: ``reopen_container_log`` after the log file was renamed.
    reopen_log: bool = True
    #: ``pull_image`` (with a ``pullable_image`` the vendor supplies).
    pull: bool = True

    @classmethod
    def from_runtime(cls, capabilities: cri.RuntimeCapabilities, **overrides: Any) -> CRICapabilities:
        """The runtime's declared capabilities, then ``overrides``."""
        derived: dict[str, Any] = {
            "exec_streaming": capabilities.supports_exec_streaming,
            "attach": capabilities.supports_attach,
            "tty": capabilities.supports_tty,
            "port_forward": capabilities.supports_port_forward,
            "stats": capabilities.supports_stats,
            "update_resources": capabilities.supports_update_resources,
            "networked": capabilities.networks_pods_itself,
        }
        derived.update(overrides)
        return cls(**derived)


@dataclass(frozen=True)
class PullSource:
    """An image the runtime can pull: a reference on a registry the vendor runs, and its credentials."""

    reference: str
    auth: cri.AuthConfig | None = None


SandboxConfigFactory = Callable[[cri.PodSandboxMetadata], cri.PodSandboxConfig]


# -------------------------------------------------------------------------------------------- kit


async def wait_for(probe: Callable[[], Awaitable[T | None]], what: str, limit: float = 20.0) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail naming ``what`` after ``limit``."""
    deadline = time.monotonic() + limit
    delay = 0.01
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def log_records(path: str) -> list[tuple[str, str, str]]:
    """(stream, tag, text) of every line of a CRI log file; fails on a line not in CRI log format."""
    try:
        text = Path(path).read_bytes().decode()
    except FileNotFoundError:
        return []
    records = []
    for line in text.split("\n")[:-1]:  # the part after the last newline may be a record being written
        match = LOG_LINE.match(line)
        assert match, f"not a CRI log line in {path}: {line[:200]!r}"
        records.append((match[2], match[3], match[4]))
    return records


def reassemble(records: list[tuple[str, str, str]], stream: str) -> list[str]:
    """The lines of ``stream``: P records joined with the F record that ends them."""
    lines, partial = [], ""
    for name, tag, text in records:
        if name != stream:
            continue
        partial += text
        if tag == "F":
            lines.append(partial)
            partial = ""
    assert not partial, f"{stream} ends with a P record and no F"
    return lines


@dataclass(frozen=True)
class Pod:
    id: str
    config: cri.PodSandboxConfig


@dataclass
class PodKit:
    """Sandboxes and containers for one test; ``cleanup`` removes every sandbox made here and checks the runtime."""

    pack: cri.Runtime
    image: str
    factory: SandboxConfigFactory
    tmp: Path
    token: str = field(default_factory=lambda: f"{_RUN}-{next(_counter)}")
    made: list[str] = field(default_factory=list)

    @property
    def rt(self) -> cri.RuntimeService:
        return self.pack.runtime

    def sandbox_config(self, name: str = "pod", *, attempt: int = 0, hostname: str = "",
                       dns: cri.DNSConfig | None = None, sysctls: dict[str, str] | None = None,
                       namespaces: cri.NamespaceOption | None = None, labels: dict[str, str] | None = None,
                       annotations: dict[str, str] | None = None, privileged: bool = False,
                       port_mappings: tuple[cri.PortMapping, ...] = ()) -> cri.PodSandboxConfig:
        meta = cri.PodSandboxMetadata(f"{name}-{self.token}", f"uid-{name}-{self.token}", "conformance", attempt)
        base = self.factory(meta)
        linux = base.linux
        if sysctls:
            linux = replace(linux, sysctls={**linux.sysctls, **sysctls})
        if namespaces is not None:
            linux = replace(linux, security_context=replace(linux.security_context, namespace_options=namespaces))
        if privileged:
            linux = replace(linux, security_context=replace(linux.security_context, privileged=True))
        return replace(
            base, hostname=hostname or base.hostname, dns_config=dns or base.dns_config, linux=linux,
            labels={**base.labels, "conformance": self.token, **(labels or {})},
            annotations={**base.annotations, **(annotations or {})}, port_mappings=port_mappings or base.port_mappings)

    async def sandbox(self, name: str = "pod", **options: Any) -> Pod:
        config = self.sandbox_config(name, **options)
        return await self.run_sandbox(config)

    async def run_sandbox(self, config: cri.PodSandboxConfig) -> Pod:
        sid = await self.rt.run_pod_sandbox(config)
        assert sid, "run_pod_sandbox returned an empty id"
        self.made.append(sid)
        return Pod(sid, config)

    def container_config(self, pod: Pod, name: str, command: tuple[str, ...] = SLEEPER, **changes: Any
                         ) -> cri.ContainerConfig:
        security: cri.LinuxContainerSecurityContext = changes.pop("security", cri.LinuxContainerSecurityContext())
        resources: cri.LinuxContainerResources = changes.pop("resources", cri.LinuxContainerResources())
        pod_ns = pod.config.linux.security_context.namespace_options
        if pod_ns.pid == cri.NamespaceMode.NODE and security.namespace_options.pid == cri.NamespaceMode.CONTAINER:
            security = replace(security, namespace_options=replace(security.namespace_options,
                                                                   pid=cri.NamespaceMode.NODE))
        security = replace(security, namespace_options=replace(
            security.namespace_options, network=pod_ns.network, ipc=pod_ns.ipc))
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name), image=cri.ImageSpec(self.image), command=command,
            log_path=f"{name}.log", labels={"conformance": self.token, "container": name},
            linux=cri.LinuxContainerConfig(resources=resources, security_context=security))
        return replace(config, **changes)

    async def container(self, pod: Pod, name: str, command: tuple[str, ...] = SLEEPER, *, start: bool = True,
                        **changes: Any) -> str:
        config = self.container_config(pod, name, command, **changes)
        cid = await self.rt.create_container(pod.id, config, pod.config)
        assert cid, "create_container returned an empty id"
        if start:
            await self.rt.start_container(cid)
        return cid

    async def status(self, cid: str) -> cri.ContainerStatus:
        return await self.rt.container_status(cid)

    async def exited(self, cid: str, limit: float = 20.0) -> cri.ContainerStatus:
        async def probe() -> cri.ContainerStatus | None:
            status = await self.rt.container_status(cid)
            return status if status.state == cri.ContainerState.CONTAINER_EXITED else None

        return await wait_for(probe, f"container {cid} to exit", limit)

    async def handles_term(self, cid: str) -> None:
        """Wait until the container's main process (PID 1 of its PID namespace) catches or ignores SIGTERM: a
        SIGTERM sent before SLEEPER's or STUBBORN's shell ran its ``trap`` would end it the default way (143)."""

        async def probe() -> bool:
            status = await self.sh(cid, "cat /proc/1/status")
            masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigCgt:",
                                                                                                  "SigIgn:"))]
            return any(mask & (1 << (15 - 1)) for mask in masks)

        await wait_for(probe, f"container {cid}'s main process to handle SIGTERM")

    async def sh(self, cid: str, script: str, timeout: int = 20) -> str:  # noqa: ASYNC109 (exec_sync's)
        """stdout of ``sh -c script`` in the container; fails on a non-zero exit, showing stderr."""
        result = await self.rt.exec_sync(cid, ["sh", "-c", script], timeout=timeout)
        assert result.exit_code == 0, f"{script!r} exited {result.exit_code}: {result.stderr!r}"
        return result.stdout.decode().strip()

    async def logged(self, cid: str, expect: Callable[[list[tuple[str, str, str]]], bool],
                     what: str) -> list[tuple[str, str, str]]:
        path = (await self.rt.container_status(cid)).log_path

        async def probe() -> list[tuple[str, str, str]] | None:
            records = log_records(path)
            return records if expect(records) else None

        return await wait_for(probe, what)

    async def cleanup(self) -> None:
        for sid in self.made:
            await self.rt.remove_pod_sandbox(sid)
        sandboxes = await self.rt.list_pod_sandbox()
        left = [s.id for s in sandboxes if s.id in self.made or self.token in s.metadata.name]
        containers = [c.id for c in await self.rt.list_containers() if c.pod_sandbox_id in self.made]
        assert not left, f"left behind: sandboxes {left}"
        assert not containers, f"left behind: containers {containers}"


def ns_of(output: str) -> dict[str, str]:
    """``readlink /proc/self/ns/{net,ipc,uts,pid}`` output → {"net": "net:[…]", …}."""
    return {line.split(":", 1)[0]: line for line in output.split()}


NS_PROBE = "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done"


def host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def cap_bits(status: str) -> int:
    line = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return int(line.split()[1], 16)


# cgroup v1 file, else cgroup v2 file, seen from inside the container.
MEMORY_LIMIT = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max")
CPU_QUOTA = ("if [ -e /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; else "
             "d=/sys/fs/cgroup/cpu; [ -e $d/cpu.cfs_quota_us ] || d=/sys/fs/cgroup/cpu,cpuacct; "
             "echo $(cat $d/cpu.cfs_quota_us) $(cat $d/cpu.cfs_period_us); fi")


# ------------------------------------------------------------------------------------ base fixtures


class _CRIFixtures:
    @pytest.fixture
    def cri_runtime(self) -> cri.Runtime:  # pragma: no cover - vendors override
        raise NotImplementedError("provide a `cri_runtime` fixture that yields a ready cri.Runtime")

    @pytest.fixture
    def cri_capabilities(self, cri_runtime: cri.Runtime) -> CRICapabilities:
        return CRICapabilities.from_runtime(cri_runtime.capabilities)

    @pytest.fixture
    def test_image(self) -> str:
        """A reference the runtime resolves to an image with busybox semantics."""
        return "busybox"

    @pytest.fixture
    async def prepare_image(self, cri_runtime: cri.Runtime, test_image: str) -> None:
        """Make ``test_image`` present (default: pull it when absent)."""
        if await cri_runtime.images.image_status(cri.ImageSpec(test_image)) is None:
            await cri_runtime.images.pull_image(cri.ImageSpec(test_image))

    @pytest.fixture
    def sandbox_config_factory(self, tmp_path: Path) -> SandboxConfigFactory:
        """metadata → the base sandbox config (a private log directory per sandbox)."""

        def make(meta: cri.PodSandboxMetadata) -> cri.PodSandboxConfig:
            directory = tmp_path / "logs" / f"{meta.name}_{meta.attempt}"
            return cri.PodSandboxConfig(metadata=meta, log_directory=str(directory))

        return make

    @pytest.fixture
    async def pods(self, cri_runtime: cri.Runtime, prepare_image: None, test_image: str,
                   sandbox_config_factory: SandboxConfigFactory, tmp_path: Path) -> AsyncIterator[PodKit]:
        kit = PodKit(cri_runtime, test_image, sandbox_config_factory, tmp_path)
        try:
            yield kit
        finally:
            await kit.cleanup()

    @pytest.fixture
    def rt(self, cri_runtime: cri.Runtime) -> cri.RuntimeService:
        return cri_runtime.runtime

    @pytest.fixture
    async def removable_image(self, cri_runtime: cri.Runtime) -> str | None:
        """Make an image other than ``test_image`` (a different id) present; its reference. None skips the rule."""
        return None

    @pytest.fixture
    def pullable_image(self) -> PullSource | None:
        """An image on a registry the vendor runs. None skips the pull rule."""
        return None

    # The first test of either half (pytest collects base classes' tests first): the pack as a whole.

    async def test_implements_the_interface(self, cri_runtime: cri.Runtime) -> None:
        """CRI services: the pack offers RuntimeService and ImageService as the cri/v1 Protocols declare them (every
        method async and callable with their arguments) and declares its RuntimeCapabilities
        (microkube_interfaces.compliance, the check the core runs on it)."""
        assert_implements(cri_runtime, "cri", "cri_runtime")
        assert cri_runtime.capabilities.cgroup_driver in ("cgroupfs", "systemd")


# ------------------------------------------------------------------------------------------ runtime


class CRIRuntimeConformance(_CRIFixtures):
    """RuntimeService rules: version and status, sandboxes, containers, exec, port-forward, logs, stats."""

    # ------------------------------------------------------------------------------ version, status

    async def test_version(self, rt: cri.RuntimeService) -> None:
        """CRI Version: the API version is v1; the runtime names itself and its version (critest runtime info)."""
        info = await rt.version(cri.VERSION)
        assert info.version == cri.VERSION
        assert info.runtime_api_version == cri.VERSION
        assert info.runtime_name
        assert info.runtime_version

    async def test_status_conditions(self, rt: cri.RuntimeService, cri_capabilities: CRICapabilities) -> None:
        """CRI Status: RuntimeReady is true; NetworkReady is reported (true when the runtime networks pods)."""
        status = await rt.status()
        ready = status.condition(cri.RUNTIME_READY)
        assert ready is not None, status
        assert ready.status, status
        network = status.condition(cri.NETWORK_READY)
        assert network is not None, status
        if cri_capabilities.networked:
            assert network.status, status
        elif not network.status:
            assert network.reason, "a false condition carries a reason"

    # ------------------------------------------------------------------------------------ sandboxes

    async def test_run_sandbox_ready(self, pods: PodKit) -> None:
        """CRI RunPodSandbox: on return the sandbox is SANDBOX_READY; PodSandboxStatus reports its id, metadata,
        created_at (ns since the epoch) and namespace options (critest "runtime should support basic operations
        on PodSandbox")."""
        before = time.time_ns()
        pod = await pods.sandbox()
        status = await pods.rt.pod_sandbox_status(pod.id)
        assert status.id == pod.id
        assert status.state == cri.PodSandboxState.SANDBOX_READY
        assert status.metadata == pod.config.metadata
        assert before - 5_000_000_000 <= status.created_at <= time.time_ns()
        assert status.namespace_options.network == cri.NamespaceMode.POD
        verbose = await pods.rt.pod_sandbox_status(pod.id, verbose=True)
        assert verbose.state == cri.PodSandboxState.SANDBOX_READY

    async def test_sandbox_metadata_labels_annotations(self, pods: PodKit) -> None:
        """CRI PodSandboxStatus / ListPodSandbox: metadata (with attempt), labels and annotations round-trip."""
        pod = await pods.sandbox("meta", attempt=2, labels={"tier": "web"},
                                 annotations={"example.com/note": "a b=c", "empty": ""})
        status = await pods.rt.pod_sandbox_status(pod.id)
        assert status.metadata == pod.config.metadata
        assert status.metadata.attempt == 2
        assert status.labels == pod.config.labels
        assert status.annotations == pod.config.annotations
        (listed,) = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=pod.id))
        assert (listed.metadata, listed.labels, listed.annotations, listed.state) == (
            pod.config.metadata, pod.config.labels, pod.config.annotations, cri.PodSandboxState.SANDBOX_READY)
        assert listed.created_at == status.created_at

    async def test_sandbox_attempts(self, pods: PodKit) -> None:
        """CRI PodSandboxMetadata.attempt: a recreated pod (same name/uid/namespace, attempt + 1) gets a new
        sandbox while the old one, stopped, still exists."""
        first = await pods.sandbox("again", attempt=0)
        await pods.rt.stop_pod_sandbox(first.id)
        second = await pods.sandbox("again", attempt=1)
        assert second.id != first.id
        attempts = {s.id: s.metadata.attempt for s in await pods.rt.list_pod_sandbox(
            cri.PodSandboxFilter(label_selector={"conformance": pods.token}))}
        assert attempts == {first.id: 0, second.id: 1}

    async def test_list_sandbox_filter_by_id(self, pods: PodKit) -> None:
        """CRI ListPodSandbox: a filter by id returns exactly that sandbox; an unknown id nothing."""
        one, two = await pods.sandbox("one"), await pods.sandbox("two")
        assert [s.id for s in await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=one.id))] == [one.id]
        assert [s.id for s in await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=two.id))] == [two.id]
        assert await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id="0" * 64)) == []
        everything = {s.id for s in await pods.rt.list_pod_sandbox()}
        assert {one.id, two.id} <= everything

    async def test_list_sandbox_filter_by_state(self, pods: PodKit) -> None:
        """CRI ListPodSandbox: a filter by state (READY, NOTREADY) matches the sandboxes in that state only."""
        ready, stopped = await pods.sandbox("ready"), await pods.sandbox("stopped")
        await pods.rt.stop_pod_sandbox(stopped.id)
        mine = {"conformance": pods.token}
        listed = await pods.rt.list_pod_sandbox(
            cri.PodSandboxFilter(state=cri.PodSandboxState.SANDBOX_READY, label_selector=mine))
        assert [s.id for s in listed] == [ready.id]
        listed = await pods.rt.list_pod_sandbox(
            cri.PodSandboxFilter(state=cri.PodSandboxState.SANDBOX_NOTREADY, label_selector=mine))
        assert [s.id for s in listed] == [stopped.id]

    async def test_list_sandbox_filter_by_labels(self, pods: PodKit) -> None:
        """CRI ListPodSandbox: every label_selector entry must match (AND); the filter fields combine."""
        web = await pods.sandbox("web", labels={"app": "web", "tier": "front"})
        await pods.sandbox("db", labels={"app": "db", "tier": "back"})
        mine = {"conformance": pods.token}
        found = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={**mine, "app": "web"}))
        assert [s.id for s in found] == [web.id]
        found = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={**mine, "app": "web",
                                                                                    "tier": "back"}))
        assert found == []
        found = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=web.id, label_selector={"app": "db"}))
        assert found == []

    async def test_stop_sandbox(self, pods: PodKit) -> None:
        """CRI StopPodSandbox: the sandbox becomes SANDBOX_NOTREADY and stays listed until removed."""
        pod = await pods.sandbox()
        await pods.rt.stop_pod_sandbox(pod.id)
        assert (await pods.rt.pod_sandbox_status(pod.id)).state == cri.PodSandboxState.SANDBOX_NOTREADY
        (listed,) = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=pod.id))
        assert listed.state == cri.PodSandboxState.SANDBOX_NOTREADY

    async def test_stop_sandbox_idempotent(self, pods: PodKit) -> None:
        """CRI StopPodSandbox: "idempotent, and must not return an error if all relevant resources have already
        been reclaimed": stopping twice, or a sandbox that does not exist, succeeds."""
        pod = await pods.sandbox()
        await pods.rt.stop_pod_sandbox(pod.id)
        await pods.rt.stop_pod_sandbox(pod.id)
        await pods.rt.stop_pod_sandbox("0" * 64)
        assert (await pods.rt.pod_sandbox_status(pod.id)).state == cri.PodSandboxState.SANDBOX_NOTREADY

    async def test_stop_sandbox_stops_its_containers(self, pods: PodKit) -> None:
        """CRI StopPodSandbox: "stops any running process that is part of the sandbox" — its containers are
        CONTAINER_EXITED afterwards (forcibly: even one ignoring SIGTERM)."""
        pod = await pods.sandbox()
        polite = await pods.container(pod, "polite")
        stubborn = await pods.container(pod, "stubborn", STUBBORN)
        await pods.rt.stop_pod_sandbox(pod.id)
        for cid in (polite, stubborn):
            assert (await pods.status(cid)).state == cri.ContainerState.CONTAINER_EXITED

    async def test_remove_sandbox(self, pods: PodKit) -> None:
        """CRI RemovePodSandbox: the sandbox is gone — status is NotFound and it is not listed."""
        pod = await pods.sandbox()
        await pods.rt.stop_pod_sandbox(pod.id)
        await pods.rt.remove_pod_sandbox(pod.id)
        with expect_error(NotFound, "pod_sandbox_status(<removed sandbox>)", f"{RULE}: a removed sandbox"):
            await pods.rt.pod_sandbox_status(pod.id)
        assert await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(id=pod.id)) == []

    async def test_remove_sandbox_idempotent(self, pods: PodKit) -> None:
        """CRI RemovePodSandbox: "must not return an error if the sandbox has already been removed": twice, and
        an id never used, succeed; a READY sandbox is removed directly (stopped first)."""
        pod = await pods.sandbox()
        await pods.rt.remove_pod_sandbox(pod.id)
        await pods.rt.remove_pod_sandbox(pod.id)
        await pods.rt.remove_pod_sandbox("0" * 64)
        with expect_error(NotFound, "pod_sandbox_status(<removed sandbox>)", f"{RULE}: a removed sandbox"):
            await pods.rt.pod_sandbox_status(pod.id)

    async def test_remove_sandbox_removes_its_containers(self, pods: PodKit) -> None:
        """CRI RemovePodSandbox: "if there are any running containers in the sandbox, they must be forcibly
        terminated and removed"."""
        pod = await pods.sandbox()
        running = await pods.container(pod, "running")
        created = await pods.container(pod, "created", start=False)
        await pods.rt.remove_pod_sandbox(pod.id)
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []
        for cid in (running, created):
            with expect_error(NotFound, "container_status(<container of a removed sandbox>)",
                              f"{RULE}: a container of a removed sandbox"):
                await pods.status(cid)

    async def test_sandbox_status_unknown(self, rt: cri.RuntimeService) -> None:
        """CRI PodSandboxStatus: an unknown id is NotFound."""
        with expect_error(NotFound, "pod_sandbox_status(<unknown id>)", f"{RULE}: an unknown sandbox id"):
            await rt.pod_sandbox_status("0" * 64)

    async def test_invalid_sandbox_config(self, pods: PodKit) -> None:
        """CRI RunPodSandbox: a config without metadata name, uid or namespace is Invalid, naming the field;
        nothing is left behind."""
        good = pods.sandbox_config("bad")
        for meta in (replace(good.metadata, name=""), replace(good.metadata, uid=""),
                     replace(good.metadata, namespace="")):
            with expect_error(Invalid, f"run_pod_sandbox(<metadata {meta}>)",
                              f"{RULE}: a sandbox config without metadata name, uid or namespace") as info:
                await pods.rt.run_pod_sandbox(replace(good, metadata=meta))
            assert "metadata" in str(info.value), f"the error names no field: {info.value}"
        left = await pods.rt.list_pod_sandbox(cri.PodSandboxFilter(label_selector={"conformance": pods.token}))
        assert left == []

    async def test_sandbox_hostname(self, pods: PodKit) -> None:
        """CRI PodSandboxConfig.hostname: the pod's containers see it as their hostname (critest "should support
        set hostname")."""
        pod = await pods.sandbox(hostname="conformance-host")
        cid = await pods.container(pod, "app")
        assert await pods.sh(cid, "hostname") == "conformance-host"

    async def test_sandbox_dns_config(self, pods: PodKit) -> None:
        """CRI PodSandboxConfig.dns_config: servers, searches and options are written to the containers'
        /etc/resolv.conf (critest "runtime should support DNS config")."""
        dns = cri.DNSConfig(servers=("192.0.2.53",), searches=("conformance.example", "svc.example"),
                            options=("ndots:5",))
        pod = await pods.sandbox(dns=dns)
        cid = await pods.container(pod, "app")
        lines = (await pods.sh(cid, "cat /etc/resolv.conf")).splitlines()
        words = [line.split() for line in lines if line.strip() and not line.startswith("#")]
        assert ["nameserver", "192.0.2.53"] in words
        assert any(w[0] == "search" and w[1:] == ["conformance.example", "svc.example"] for w in words), lines
        assert any(w[0] == "options" and "ndots:5" in w[1:] for w in words), lines

    async def test_sandbox_sysctls(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxPodSandboxConfig.sysctls: namespaced sysctls (IPC and network) apply to the pod's containers
        (critest "runtime should support sysctls")."""
        if not cri_capabilities.sysctls:
            pytest.skip("the runtime declares no sysctls")
        pod = await pods.sandbox(sysctls={"kernel.shm_rmid_forced": "1",
                                          "net.ipv4.ip_unprivileged_port_start": "900"})
        cid = await pods.container(pod, "app")
        out = await pods.sh(cid, "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start")
        assert out.split() == ["1", "900"]

    async def test_sandboxes_are_isolated(self, pods: PodKit) -> None:
        """CRI NamespaceOption (POD): each sandbox has its own network, IPC and UTS namespaces, none of them the
        host's (critest "runtime should support NamespaceOption")."""
        a, b = await pods.sandbox("a", hostname="host-a"), await pods.sandbox("b", hostname="host-b")
        in_a, in_b = await pods.container(a, "app"), await pods.container(b, "app")
        ns_a, ns_b = ns_of(await pods.sh(in_a, NS_PROBE)), ns_of(await pods.sh(in_b, NS_PROBE))
        for kind in ("net", "ipc", "uts"):
            assert ns_a[kind] != ns_b[kind], f"two sandboxes share the {kind} namespace"
            assert host_ns(kind) not in (ns_a[kind], ns_b[kind]), f"a sandbox uses the host's {kind} namespace"
        assert (await pods.sh(in_a, "hostname"), await pods.sh(in_b, "hostname")) == ("host-a", "host-b")

    async def test_containers_share_pod_namespaces(self, pods: PodKit) -> None:
        """CRI NamespaceMode.POD: containers of one sandbox share its network, IPC and UTS namespaces (they talk
        over loopback); by default each has its own PID namespace (NamespaceMode.CONTAINER)."""
        pod = await pods.sandbox()
        one = await pods.container(pod, "one", ("nc", "-ll", "-p", "7070", "-e", "echo", "pong"))
        two = await pods.container(pod, "two")
        ns_one, ns_two = ns_of(await pods.sh(one, NS_PROBE)), ns_of(await pods.sh(two, NS_PROBE))
        assert [ns_one[k] == ns_two[k] for k in ("net", "ipc", "uts")] == [True, True, True]
        assert ns_one["pid"] != ns_two["pid"]

        async def pong() -> bool:
            result = await pods.rt.exec_sync(two, ["sh", "-c", "echo ping | nc 127.0.0.1 7070"], timeout=10)
            return result.stdout.strip() == b"pong"

        await wait_for(pong, "a container to reach another of its pod over loopback")

    async def test_host_network(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI NamespaceMode.NODE (network): a host-network sandbox's containers are in the host's network
        namespace (critest "runtime should support HostNetwork")."""
        if not cri_capabilities.host_network:
            pytest.skip("the runtime declares no host network")
        pod = await pods.sandbox(namespaces=cri.NamespaceOption(network=cri.NamespaceMode.NODE))
        cid = await pods.container(pod, "app")
        assert ns_of(await pods.sh(cid, NS_PROBE))["net"] == host_ns("net")
        status = await pods.rt.pod_sandbox_status(pod.id)
        assert status.namespace_options.network == cri.NamespaceMode.NODE

    async def test_host_pid(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI NamespaceMode.NODE (pid): a host-PID sandbox's containers are in the host's PID namespace and see
        host processes (critest "runtime should support HostPID")."""
        if not cri_capabilities.host_pid:
            pytest.skip("the runtime declares no host PID namespace")
        pod = await pods.sandbox(namespaces=cri.NamespaceOption(pid=cri.NamespaceMode.NODE))
        cid = await pods.container(pod, "app")
        assert ns_of(await pods.sh(cid, NS_PROBE))["pid"] == host_ns("pid")
        assert await pods.sh(cid, f"test -d /proc/{os.getpid()} && echo seen") == "seen"

    async def test_host_ipc(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI NamespaceMode.NODE (ipc): a host-IPC sandbox's containers are in the host's IPC namespace (critest
        "runtime should support HostIpc")."""
        if not cri_capabilities.host_ipc:
            pytest.skip("the runtime declares no host IPC namespace")
        pod = await pods.sandbox(namespaces=cri.NamespaceOption(ipc=cri.NamespaceMode.NODE))
        cid = await pods.container(pod, "app")
        assert ns_of(await pods.sh(cid, NS_PROBE))["ipc"] == host_ns("ipc")

    async def test_sandbox_network_status(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI PodSandboxStatus.network: a runtime that networks pods reports the pod IP, and the pod's
        containers hold it."""
        if not cri_capabilities.networked:
            pytest.skip("the node agent networks this runtime's pods (networks_pods_itself is false)")
        pod = await pods.sandbox()
        status = await pods.rt.pod_sandbox_status(pod.id)
        address = ipaddress.ip_address(status.network.ip)
        cid = await pods.container(pod, "app")
        assert str(address) in await pods.sh(cid, "cat /proc/net/fib_trie 2>/dev/null || ip addr")

    async def test_port_mappings(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI PodSandboxConfig.port_mappings: a declared host port on 127.0.0.1 reaches the container port
        (critest "runtime should support port mapping with host port")."""
        if not (cri_capabilities.networked and cri_capabilities.port_mappings):
            pytest.skip("the runtime does not publish host ports (port_mappings)")
        port = 20000 + os.getpid() % 20000
        pod = await pods.sandbox(port_mappings=(cri.PortMapping(8080, port, cri.PortProtocol.TCP, "127.0.0.1"),))
        await pods.container(pod, "web", ("nc", "-ll", "-p", "8080", "-e", "echo", "mapped"))

        async def answer() -> bytes | None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return None
            try:
                return await asyncio.wait_for(reader.read(), 5) or None
            finally:
                writer.close()

        assert (await wait_for(answer, f"host port {port}")).strip() == b"mapped"

    # ----------------------------------------------------------------------------------- containers

    async def test_create_container(self, pods: PodKit) -> None:
        """CRI CreateContainer: the container is CONTAINER_CREATED with created_at set and started_at zero; its
        image and metadata are reported (critest "runtime should support basic operations on container")."""
        pod = await pods.sandbox()
        before = time.time_ns()
        cid = await pods.container(pod, "app", start=False)
        status = await pods.status(cid)
        assert status.id == cid
        assert status.metadata == cri.ContainerMetadata("app")
        assert status.state == cri.ContainerState.CONTAINER_CREATED
        assert before - 5_000_000_000 <= status.created_at <= time.time_ns()
        assert status.started_at == 0
        assert status.finished_at == 0
        assert status.image_ref
        (listed,) = await pods.rt.list_containers(cri.ContainerFilter(id=cid))
        assert (listed.pod_sandbox_id, listed.state) == (pod.id, cri.ContainerState.CONTAINER_CREATED)

    async def test_start_container(self, pods: PodKit) -> None:
        """CRI StartContainer: the container is CONTAINER_RUNNING, started_at >= created_at; its process runs."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", start=False)
        await pods.rt.start_container(cid)
        status = await pods.status(cid)
        assert status.state == cri.ContainerState.CONTAINER_RUNNING
        assert status.started_at >= status.created_at > 0
        assert status.finished_at == 0
        assert await pods.sh(cid, "echo alive") == "alive"

    async def test_start_container_not_created_fails(self, pods: PodKit) -> None:
        """CRI StartContainer: only a CONTAINER_CREATED container can be started: starting a running one is an
        error, and an unknown id is NotFound."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        with expect_error(MicrokubeError, "start_container(<running container>)",
                          f"{RULE}: starting a container that is not CREATED"):
            await pods.rt.start_container(cid)
        assert (await pods.status(cid)).state == cri.ContainerState.CONTAINER_RUNNING
        with expect_error(NotFound, "start_container(<unknown id>)", f"{RULE}: an unknown container id"):
            await pods.rt.start_container("0" * 64)

    async def test_exit_completed(self, pods: PodKit) -> None:
        """CRI ContainerStatus: a main process exiting 0 leaves CONTAINER_EXITED, exit_code 0, reason
        Completed, finished_at >= started_at."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "job", ("true",))
        status = await pods.exited(cid)
        assert (status.exit_code, status.reason) == (0, cri.REASON_COMPLETED)
        assert 0 < status.created_at <= status.started_at <= status.finished_at

    async def test_exit_error(self, pods: PodKit) -> None:
        """CRI ContainerStatus: a non-zero exit is reported as exit_code with reason Error."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "job", ("sh", "-c", "exit 3"))
        status = await pods.exited(cid)
        assert (status.state, status.exit_code, status.reason) == (cri.ContainerState.CONTAINER_EXITED, 3,
                                                                   cri.REASON_ERROR)
        assert status.finished_at >= status.started_at > 0

    async def test_stop_container_sigterm(self, pods: PodKit) -> None:
        """CRI StopContainer: SIGTERM first — a process that handles it exits with its own code (0, Completed),
        not killed (critest "runtime should support stopping container")."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        await pods.handles_term(cid)
        await pods.rt.stop_container(cid, 30)
        status = await pods.status(cid)
        assert (status.state, status.exit_code, status.reason) == (cri.ContainerState.CONTAINER_EXITED, 0,
                                                                   cri.REASON_COMPLETED)

    @pytest.mark.slow
    async def test_stop_container_timeout_kills(self, pods: PodKit) -> None:
        """CRI StopContainer: a process ignoring SIGTERM is killed (SIGKILL, exit 137) once the timeout passed;
        StopContainer returns when it is stopped."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "stubborn", STUBBORN)
        await pods.handles_term(cid)
        await pods.rt.stop_container(cid, 1)
        status = await pods.status(cid)
        assert (status.state, status.exit_code) == (cri.ContainerState.CONTAINER_EXITED, 137)

    async def test_stop_container_zero_timeout(self, pods: PodKit) -> None:
        """CRI StopContainer: timeout 0 kills at once (SIGKILL: exit 137, reason Error)."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "stubborn", STUBBORN)
        await pods.rt.stop_container(cid, 0)
        status = await pods.status(cid)
        assert (status.state, status.exit_code, status.reason) == (cri.ContainerState.CONTAINER_EXITED, 137,
                                                                   cri.REASON_ERROR)

    async def test_stop_container_idempotent(self, pods: PodKit) -> None:
        """CRI StopContainer: "must not return an error if the container has already been stopped": twice, an
        exited container, a created one and an unknown id succeed."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        created = await pods.container(pod, "created", start=False)
        await pods.handles_term(cid)
        await pods.rt.stop_container(cid, 10)
        await pods.rt.stop_container(cid, 10)
        await pods.rt.stop_container(created, 10)
        await pods.rt.stop_container("0" * 64, 10)
        assert (await pods.status(cid)).exit_code == 0

    async def test_remove_container(self, pods: PodKit) -> None:
        """CRI RemoveContainer: an exited container is removed — status NotFound, not listed."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "job", ("true",))
        await pods.exited(cid)
        await pods.rt.remove_container(cid)
        with expect_error(NotFound, "container_status(<removed container>)", f"{RULE}: a removed container"):
            await pods.status(cid)
        assert await pods.rt.list_containers(cri.ContainerFilter(id=cid)) == []

    async def test_remove_container_idempotent(self, pods: PodKit) -> None:
        """CRI RemoveContainer: "must not return an error if the container has already been removed": twice and
        an unknown id succeed; a CREATED container can be removed."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", start=False)
        await pods.rt.remove_container(cid)
        await pods.rt.remove_container(cid)
        await pods.rt.remove_container("0" * 64)
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []

    async def test_remove_running_container(self, pods: PodKit) -> None:
        """CRI RemoveContainer: "if the container is running, the container must be forcibly removed"."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "stubborn", STUBBORN)
        await pods.rt.remove_container(cid)
        with expect_error(NotFound, "container_status(<removed container>)", f"{RULE}: a removed container"):
            await pods.status(cid)
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []

    async def test_list_containers_filter_by_sandbox(self, pods: PodKit) -> None:
        """CRI ListContainers: a filter by pod_sandbox_id lists that sandbox's containers only; by id one."""
        a, b = await pods.sandbox("a"), await pods.sandbox("b")
        in_a = {await pods.container(a, "one", start=False), await pods.container(a, "two", start=False)}
        in_b = await pods.container(b, "one", start=False)
        assert {c.id for c in await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=a.id))} == in_a
        assert [c.id for c in await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=b.id))] == [in_b]
        assert [c.id for c in await pods.rt.list_containers(cri.ContainerFilter(id=in_b))] == [in_b]
        assert await pods.rt.list_containers(cri.ContainerFilter(id="0" * 64)) == []
        assert await pods.rt.list_containers(cri.ContainerFilter(id=in_b, pod_sandbox_id=a.id)) == []

    async def test_list_containers_filter_by_state(self, pods: PodKit) -> None:
        """CRI ListContainers: a filter by state matches CREATED, RUNNING and EXITED containers exactly."""
        pod = await pods.sandbox()
        created = await pods.container(pod, "created", start=False)
        running = await pods.container(pod, "running")
        exited = await pods.container(pod, "exited", ("true",))
        await pods.exited(exited)
        for state, cid in ((cri.ContainerState.CONTAINER_CREATED, created),
                           (cri.ContainerState.CONTAINER_RUNNING, running),
                           (cri.ContainerState.CONTAINER_EXITED, exited)):
            found = await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id, state=state))
            assert [(c.id, c.state) for c in found] == [(cid, state)]

    async def test_list_containers_filter_by_labels(self, pods: PodKit) -> None:
        """CRI ListContainers: label_selector entries must all match."""
        pod = await pods.sandbox()
        web = await pods.container(pod, "web", start=False, labels={"conformance": pods.token, "role": "web"})
        await pods.container(pod, "db", start=False, labels={"conformance": pods.token, "role": "db"})
        found = await pods.rt.list_containers(cri.ContainerFilter(label_selector={"conformance": pods.token,
                                                                                  "role": "web"}))
        assert [c.id for c in found] == [web]
        assert await pods.rt.list_containers(cri.ContainerFilter(label_selector={"role": "web", "x": "y"})) == []

    async def test_container_metadata_labels_annotations(self, pods: PodKit) -> None:
        """CRI ContainerStatus / ListContainers: metadata (with attempt), labels, annotations, image and log path
        round-trip."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", start=False, metadata=cri.ContainerMetadata("app", 4),
                                   annotations={"example.com/a": "1 2", "empty": ""})
        status = await pods.status(cid)
        assert status.metadata == cri.ContainerMetadata("app", 4)
        assert status.labels == {"conformance": pods.token, "container": "app"}
        assert status.annotations == {"example.com/a": "1 2", "empty": ""}
        assert status.image.image == pods.image
        assert status.log_path == os.path.join(pod.config.log_directory, "app.log")
        (listed,) = await pods.rt.list_containers(cri.ContainerFilter(id=cid))
        assert (listed.metadata, listed.labels, listed.annotations, listed.image_ref) == (
            status.metadata, status.labels, status.annotations, status.image_ref)

    async def test_container_status_unknown(self, rt: cri.RuntimeService) -> None:
        """CRI ContainerStatus: an unknown id is NotFound."""
        with expect_error(NotFound, "container_status(<unknown id>)", f"{RULE}: an unknown container id"):
            await rt.container_status("0" * 64)

    async def test_create_in_unknown_sandbox(self, pods: PodKit) -> None:
        """CRI CreateContainer: an unknown sandbox is NotFound."""
        pod = await pods.sandbox()
        config = pods.container_config(pod, "app")
        with expect_error(NotFound, "create_container(<unknown sandbox id>, ...)", f"{RULE}: an unknown sandbox id"):
            await pods.rt.create_container("0" * 64, config, pod.config)

    async def test_create_in_stopped_sandbox_fails(self, pods: PodKit) -> None:
        """CRI CreateContainer: a sandbox that is not ready takes no new containers (an error, nothing created)."""
        pod = await pods.sandbox()
        await pods.rt.stop_pod_sandbox(pod.id)
        with expect_error(MicrokubeError, "create_container(<stopped sandbox>, ...)",
                          f"{RULE}: a sandbox that is not ready"):
            await pods.rt.create_container(pod.id, pods.container_config(pod, "app"), pod.config)
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []

    async def test_create_with_absent_image(self, pods: PodKit) -> None:
        """CRI CreateContainer: an image that is not present is NotFound (the caller pulls first); nothing is
        created."""
        pod = await pods.sandbox()
        config = pods.container_config(pod, "app", image=cri.ImageSpec(f"microkube.local/absent-{pods.token}:v1"))
        with expect_error(NotFound, "create_container(<image not present>)", f"{RULE}: an image that is not present"):
            await pods.rt.create_container(pod.id, config, pod.config)
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []

    async def test_create_invalid_config(self, pods: PodKit) -> None:
        """CRI CreateContainer: a config without metadata name is Invalid, naming the field."""
        pod = await pods.sandbox()
        config = pods.container_config(pod, "app", metadata=cri.ContainerMetadata(""))
        with expect_error(Invalid, "create_container(<metadata name ''>)",
                          f"{RULE}: a container config without metadata name") as info:
            await pods.rt.create_container(pod.id, config, pod.config)
        assert "metadata" in str(info.value), f"the error names no field: {info.value}"
        assert await pods.rt.list_containers(cri.ContainerFilter(pod_sandbox_id=pod.id)) == []

    async def test_image_by_id(self, pods: PodKit) -> None:
        """CRI ImageSpec: a container can name its image by id; image_ref is that id (critest "runtime should
        support starting container with image id")."""
        image = await pods.pack.images.image_status(cri.ImageSpec(pods.image))
        assert image is not None
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", image=cri.ImageSpec(image.id))
        status = await pods.status(cid)
        assert status.state == cri.ContainerState.CONTAINER_RUNNING
        assert status.image_ref == image.id
        by_ref = await pods.container(pod, "byref", start=False)
        assert (await pods.status(by_ref)).image_ref == image.id

    async def test_command_and_args(self, pods: PodKit) -> None:
        """CRI ContainerConfig: ``command`` replaces the image's entrypoint and ``args`` its cmd (args alone run
        with the image's entrypoint)."""
        pod = await pods.sandbox()
        both = await pods.container(pod, "both", ("echo",), args=("hello", "world"))
        only_args = await pods.container(pod, "args", (), args=("echo", "from", "args"))
        for cid, text in ((both, "hello world"), (only_args, "from args")):
            assert (await pods.exited(cid)).exit_code == 0
            records = await pods.logged(cid, lambda r: bool(r), "the container's output")
            assert records == [("stdout", "F", text)]

    async def test_env(self, pods: PodKit) -> None:
        """CRI ContainerConfig.envs: the variables are in the process environment (the image's PATH kept)."""
        pod = await pods.sandbox()
        envs = (cri.KeyValue("GREETING", "hello world"), cri.KeyValue("EMPTY", ""), cri.KeyValue("EQ", "a=b"))
        cid = await pods.container(pod, "app", envs=envs)
        out = await pods.sh(cid, 'echo "$GREETING|$EMPTY|$EQ"; test -n "$PATH" && echo path')
        assert out.splitlines() == ["hello world||a=b", "path"]
        environ = (await pods.sh(cid, "tr '\\0' '\\n' < /proc/1/environ")).splitlines()
        assert {"GREETING=hello world", "EMPTY=", "EQ=a=b"} <= set(environ)

    async def test_working_dir(self, pods: PodKit) -> None:
        """CRI ContainerConfig.working_dir: the main process starts there (created when missing)."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", working_dir="/var/conformance")
        assert await pods.sh(cid, "readlink /proc/1/cwd") == "/var/conformance"

    async def test_mounts(self, pods: PodKit, tmp_path: Path) -> None:
        """CRI Mount: a host path mounted read-write takes the container's writes; read-only, it can be read
        but not written; ContainerStatus lists both (critest "runtime should support mount")."""
        rw, ro = tmp_path / "rw", tmp_path / "ro"
        rw.mkdir()
        ro.mkdir()
        (ro / "input").write_text("from the host\n")
        pod = await pods.sandbox()
        mounts = (cri.Mount("/mnt/rw", str(rw)), cri.Mount("/mnt/ro", str(ro), readonly=True))
        cid = await pods.container(pod, "app", mounts=mounts)
        await pods.sh(cid, "echo from the container > /mnt/rw/output")
        assert (rw / "output").read_text() == "from the container\n"
        assert await pods.sh(cid, "cat /mnt/ro/input") == "from the host"
        denied = await pods.rt.exec_sync(cid, ["sh", "-c", "echo x > /mnt/ro/input"], timeout=10)
        assert denied.exit_code != 0
        assert (ro / "input").read_text() == "from the host\n"
        reported = {(m.container_path, m.host_path, m.readonly) for m in (await pods.status(cid)).mounts}
        assert {("/mnt/rw", str(rw), False), ("/mnt/ro", str(ro), True)} <= reported

    async def test_run_as_user_and_group(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxContainerSecurityContext: run_as_user, run_as_group and supplemental_groups set the main
        process's identity (critest "runtime should support RunAsUser / RunAsGroup / SupplementalGroups")."""
        if not cri_capabilities.run_as_user:
            pytest.skip("the runtime declares no run_as_user")
        pod = await pods.sandbox()
        security = cri.LinuxContainerSecurityContext(run_as_user=1234, run_as_group=2345, supplemental_groups=(3456,))
        cid = await pods.container(pod, "app", security=security)
        status = await pods.sh(cid, "cat /proc/1/status")
        fields = {line.split(":")[0]: line.split()[1:] for line in status.splitlines() if ":" in line}
        assert fields["Uid"][0] == "1234"
        assert fields["Gid"][0] == "2345"
        assert "3456" in fields["Groups"]

    async def test_readonly_rootfs(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxContainerSecurityContext.readonly_rootfs: the root filesystem cannot be written (critest
        "runtime should support ReadOnlyRootfs")."""
        if not cri_capabilities.readonly_rootfs:
            pytest.skip("the runtime declares no read-only root filesystem")
        pod = await pods.sandbox()
        ro = await pods.container(pod, "ro", security=cri.LinuxContainerSecurityContext(readonly_rootfs=True))
        rw = await pods.container(pod, "rw")
        assert (await pods.rt.exec_sync(ro, ["touch", "/probe"], timeout=10)).exit_code != 0
        assert (await pods.rt.exec_sync(rw, ["touch", "/probe"], timeout=10)).exit_code == 0

    async def test_linux_capabilities(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI Capability: add_capabilities and drop_capabilities change the effective set (critest "runtime
        should support adding/dropping capability")."""
        if not cri_capabilities.linux_capabilities:
            pytest.skip("the runtime declares no capability changes")
        pod = await pods.sandbox()
        plain = await pods.container(pod, "plain")
        changed = await pods.container(pod, "changed", security=cri.LinuxContainerSecurityContext(
            capabilities=cri.Capability(add_capabilities=("NET_ADMIN",), drop_capabilities=("CHOWN",))))
        before = cap_bits(await pods.sh(plain, "cat /proc/1/status"))
        after = cap_bits(await pods.sh(changed, "cat /proc/1/status"))
        assert before & (1 << CAP_CHOWN)
        assert not after & (1 << CAP_CHOWN)
        assert not before & (1 << CAP_NET_ADMIN)
        assert after & (1 << CAP_NET_ADMIN)
        assert (await pods.rt.exec_sync(changed, ["chown", "1:1", "/tmp"], timeout=10)).exit_code != 0

    async def test_privileged(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxContainerSecurityContext.privileged: the container holds every capability, SYS_ADMIN among
        them, which an unprivileged one lacks (critest "runtime should support privileged"). CRI
        LinuxSandboxSecurityContext.privileged: a sandbox that is to run a privileged container MUST be privileged
        (critest creates it so); an unprivileged container in it stays unprivileged."""
        if not cri_capabilities.privileged:
            pytest.skip("the runtime declares no privileged containers")
        pod = await pods.sandbox(privileged=True)
        privileged = await pods.container(pod, "priv", security=cri.LinuxContainerSecurityContext(privileged=True))
        plain = await pods.container(pod, "plain")
        assert cap_bits(await pods.sh(privileged, "cat /proc/1/status")) & (1 << CAP_SYS_ADMIN)
        assert not cap_bits(await pods.sh(plain, "cat /proc/1/status")) & (1 << CAP_SYS_ADMIN)

    async def test_memory_limit(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxContainerResources.memory_limit_in_bytes: the limit is the container's cgroup's."""
        if not cri_capabilities.memory_limits:
            pytest.skip("the runtime declares no memory limits")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", resources=cri.LinuxContainerResources(memory_limit_in_bytes=48 << 20))
        assert await pods.sh(cid, MEMORY_LIMIT) == str(48 << 20)

    async def test_cpu_quota(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI LinuxContainerResources.cpu_quota/cpu_period: the CFS quota is the container's cgroup's."""
        if not cri_capabilities.cpu_limits:
            pytest.skip("the runtime declares no CPU limits")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", resources=cri.LinuxContainerResources(cpu_quota=50000,
                                                                                     cpu_period=100000))
        assert (await pods.sh(cid, CPU_QUOTA)).split() == ["50000", "100000"]

    @pytest.mark.slow
    async def test_oom_killed(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI ContainerStatus.reason: a container killed for exceeding its memory limit exits 137 with reason
        OOMKilled (critest "runtime should output OOMKilled reason")."""
        if not (cri_capabilities.memory_limits and cri_capabilities.oom_killed):
            pytest.skip("the runtime declares no OOM reporting")
        pod = await pods.sandbox()
        hog = ("sh", "-c", "x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived")
        cid = await pods.container(pod, "hog", hog, resources=cri.LinuxContainerResources(
            memory_limit_in_bytes=16 << 20))
        status = await pods.exited(cid, 60)
        assert (status.exit_code, status.reason) == (137, cri.REASON_OOM_KILLED)

    async def test_pod_pid_namespace(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI NamespaceMode.POD (pid): containers sharing the pod's PID namespace see each other's processes
        (critest "runtime should support sharing process namespace")."""
        if not cri_capabilities.pod_pid_namespace:
            pytest.skip("the runtime declares no pod PID namespace")
        pod = await pods.sandbox()
        shared = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.POD))
        one = await pods.container(pod, "one", ("sleep", "4242"), security=shared)
        two = await pods.container(pod, "two", security=shared)
        assert ns_of(await pods.sh(one, NS_PROBE))["pid"] == ns_of(await pods.sh(two, NS_PROBE))["pid"]
        assert "sleep 4242" in await pods.sh(two, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")

    async def test_container_pid_namespace(self, pods: PodKit) -> None:
        """CRI NamespaceMode.CONTAINER (pid, the default): the main process is PID 1 of its own namespace and the
        pod's other containers are invisible."""
        pod = await pods.sandbox()
        one = await pods.container(pod, "one", ("sleep", "4243"))
        two = await pods.container(pod, "two")
        assert await pods.sh(one, "tr '\\0' ' ' < /proc/1/cmdline") == "sleep 4243"
        assert "sleep 4243" not in await pods.sh(two, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")

    # ----------------------------------------------------------------------------------------- exec

    async def test_exec_sync(self, pods: PodKit) -> None:
        """CRI ExecSync: stdout, stderr and the exit code of a command run in the container, with its
        environment (critest "runtime should support ExecSync")."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", envs=(cri.KeyValue("WHO", "conformance"),))
        result = await pods.rt.exec_sync(cid, ["sh", "-c", "echo out $WHO; echo err >&2; exit 7"], timeout=10)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out conformance\n", b"err\n", 7)
        ok = await pods.rt.exec_sync(cid, ["true"])
        assert (ok.stdout, ok.stderr, ok.exit_code) == (b"", b"", 0)

    @pytest.mark.slow
    async def test_exec_sync_timeout(self, pods: PodKit) -> None:
        """CRI ExecSync.timeout: a command outliving it is killed and the call fails as Retryable (critest
        "runtime should support ExecSync with timeout"); the container keeps running."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        with expect_error(Retryable, "exec_sync(['sleep', '4244'], timeout=1)", f"{RULE}: an exec past its timeout"):
            await pods.rt.exec_sync(cid, ["sleep", "4244"], timeout=1)

        async def gone() -> bool:
            return "sleep 4244" not in await pods.sh(cid, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")

        await wait_for(gone, "the timed-out exec to be killed")
        assert (await pods.status(cid)).state == cri.ContainerState.CONTAINER_RUNNING

    async def test_exec_sync_unknown(self, rt: cri.RuntimeService) -> None:
        """CRI ExecSync: an unknown container is NotFound."""
        with expect_error(NotFound, "exec_sync(<unknown id>)", f"{RULE}: an unknown container id"):
            await rt.exec_sync("0" * 64, ["true"], timeout=5)

    async def test_exec_sync_not_running(self, pods: PodKit) -> None:
        """CRI ExecSync: a container that is not running (created, exited) cannot exec — an error, not NotFound
        (the container exists)."""
        pod = await pods.sandbox()
        created = await pods.container(pod, "created", start=False)
        exited = await pods.container(pod, "exited", ("true",))
        await pods.exited(exited)
        for cid in (created, exited):
            with expect_error(MicrokubeError, "exec_sync(<container not running>)",
                              f"{RULE}: a container that is not running") as info:
                await pods.rt.exec_sync(cid, ["true"], timeout=5)
            assert not isinstance(info.value, NotFound), info.value

    async def test_exec_stream(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI Exec (streaming): stdin reaches the process, stdout and stderr come back separately, ``wait``
        returns the exit code, ``close`` is idempotent (critest "runtime should support exec with stdin")."""
        if not cri_capabilities.exec_streaming:
            pytest.skip("the runtime declares no exec streaming")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        stream = await pods.rt.exec(cid, ["sh", "-c", "read line; echo $line | tr a-z A-Z; echo done >&2; exit 5"],
                                    stdin=True)
        assert isinstance(stream, cri.ContainerStream)
        await stream.write_stdin(b"hello\n")
        assert await _read_all(stream.read_stdout) == b"HELLO\n"
        assert await _read_all(stream.read_stderr) == b"done\n"
        assert await asyncio.wait_for(stream.wait(), 20) == 5
        await stream.close()
        await stream.close()

    async def test_exec_stream_stdin_close(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """ContainerStream.close_stdin: the process reads end of file and exits; closing again is a no-op. A runtime
        declaring no ``stdin_close`` raises Unsupported instead of leaving the process waiting for input."""
        if not cri_capabilities.exec_streaming:
            pytest.skip("the runtime declares no exec streaming")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        stream = await pods.rt.exec(cid, ["sh", "-c", "tr a-z A-Z; exit 3"], stdin=True)
        try:
            await stream.write_stdin(b"hello\n")
            if not cri_capabilities.stdin_close:
                with expect_error(Unsupported, "exec stream close_stdin()",
                                  f"{RULE}: close_stdin of a runtime without stdin_close"):
                    await stream.close_stdin()
                return
            await stream.close_stdin()
            await stream.close_stdin()
            assert await _read_all(stream.read_stdout) == b"HELLO\n"
            assert await asyncio.wait_for(stream.wait(), 20) == 3
        finally:
            await stream.close()

    async def test_exec_stream_close_kills(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """ContainerStream.close: closing an exec that has not exited kills it; the container runs on."""
        if not (cri_capabilities.exec_streaming and cri_capabilities.exec_close_kills):
            pytest.skip("the runtime declares no killing of execs whose stream is closed")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        stream = await pods.rt.exec(cid, ["sleep", "4245"])

        async def running(present: bool) -> bool:
            return ("sleep 4245" in await pods.sh(cid, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")) == present

        await wait_for(lambda: running(True), "the exec to start")
        await stream.close()
        await wait_for(lambda: running(False), "the closed exec to be killed")
        assert (await pods.status(cid)).state == cri.ContainerState.CONTAINER_RUNNING

    async def test_exec_stream_without_stdin(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """ContainerStream.write_stdin: an exec opened without stdin rejects input as Unsupported; its output and
        exit code still arrive."""
        if not cri_capabilities.exec_streaming:
            pytest.skip("the runtime declares no exec streaming")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        stream = await pods.rt.exec(cid, ["echo", "no input"])
        with expect_error(Unsupported, "write_stdin() on an exec without stdin", f"{RULE}: an exec without stdin"):
            await stream.write_stdin(b"x")
        assert await _read_all(stream.read_stdout) == b"no input\n"
        assert await asyncio.wait_for(stream.wait(), 20) == 0
        await stream.close()

    async def test_exec_stream_errors(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI Exec: an unknown container is NotFound; a container that is not running is an error."""
        if not cri_capabilities.exec_streaming:
            pytest.skip("the runtime declares no exec streaming")
        pod = await pods.sandbox()
        created = await pods.container(pod, "created", start=False)
        with expect_error(NotFound, "exec(<unknown id>)", f"{RULE}: an unknown container id"):
            await pods.rt.exec("0" * 64, ["true"])
        with expect_error(MicrokubeError, "exec(<created container>)", f"{RULE}: a container that is not running") \
                as info:
            await _exec_and_close(pods.rt, created, ["true"])
        assert not isinstance(info.value, NotFound), info.value

    async def test_exec_tty(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI Exec with tty: the process has a terminal; output arrives on stdout, stderr is empty at once
        (critest "runtime should support exec with tty=true")."""
        if not (cri_capabilities.exec_streaming and cri_capabilities.tty):
            pytest.skip("the runtime declares no tty")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        stream = await pods.rt.exec(cid, ["sh", "-c", "test -t 1 && echo tty; echo err >&2"], tty=True)
        await stream.resize(100, 30)
        out = await _read_all(stream.read_stdout)
        assert b"tty" in out
        assert b"err" in out
        assert await stream.read_stderr() == b""
        assert await asyncio.wait_for(stream.wait(), 20) == 0
        await stream.close()

    async def test_attach(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI Attach: stdin reaches the main process and its output comes back; ``wait`` returns its exit code
        (critest "runtime should support attach")."""
        if not cri_capabilities.attach:
            pytest.skip("the runtime declares no attach")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", ("sh", "-c", "read line; echo got $line; exit 4"), stdin=True,
                                   stdin_once=True)
        stream = await pods.rt.attach(cid, stdin=True)
        await stream.write_stdin(b"input\n")
        if cri_capabilities.stdin_close:
            await stream.close_stdin()
        else:
            with expect_error(Unsupported, "attach stream close_stdin()",
                              f"{RULE}: close_stdin of a runtime without stdin_close"):
                await stream.close_stdin()
        assert b"got input" in await _read_all(stream.read_stdout)
        assert await asyncio.wait_for(stream.wait(), 20) == 4
        await stream.close()

    async def test_tty_container(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI ContainerConfig.tty: the main process runs on a terminal; its output is logged as stdout (critest
        "runtime should support container with tty")."""
        if not cri_capabilities.tty:
            pytest.skip("the runtime declares no tty")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", ("sh", "-c", "test -t 1 && echo on a tty"), tty=True)
        await pods.exited(cid)
        records = await pods.logged(cid, lambda r: bool(r), "the tty container's output")
        assert [(s, text.strip()) for s, _, text in records if text.strip()] == [("stdout", "on a tty")]

    async def test_undeclared_capabilities_unsupported(self, pods: PodKit,
                                                       cri_capabilities: CRICapabilities) -> None:
        """RuntimeCapabilities: "a method for a capability declared False raises Unsupported" — attach, exec
        streaming, port-forward, stats, resource updates and tty containers the runtime does not declare."""
        caps = pods.pack.capabilities
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if not caps.supports_attach:
            calls.append(("attach", lambda: pods.rt.attach(cid)))
        if not caps.supports_exec_streaming:
            calls.append(("exec", lambda: pods.rt.exec(cid, ["true"])))
        if not caps.supports_port_forward:
            calls.append(("port_forward", lambda: pods.rt.port_forward(pod.id, 80)))
        if not caps.supports_stats:
            calls.append(("container_stats", lambda: pods.rt.container_stats(cid)))
        if not caps.supports_update_resources:
            calls.append(("update_container_resources", lambda: pods.rt.update_container_resources(
                cid, cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20))))
        if not cri_capabilities.tty:
            calls.append(("create_container(tty)", lambda: pods.rt.create_container(
                pod.id, pods.container_config(pod, "tty", tty=True), pod.config)))
            if caps.supports_exec_streaming:
                calls.append(("exec(tty)", lambda: pods.rt.exec(cid, ["true"], tty=True)))
        if not calls:
            pytest.skip("the runtime declares every optional capability")
        for name, call in calls:
            with expect_error(Unsupported, name, f"{RULE}: a capability the runtime declares False"):
                await call()

    # ---------------------------------------------------------------------------------- port-forward

    async def test_port_forward(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI PortForward: a connection reaches a listener on the sandbox's loopback; both directions carry data
        and ``close`` is idempotent (critest "runtime should support port mapping" / portforward)."""
        if not cri_capabilities.port_forward:
            pytest.skip("the runtime declares no port-forward")
        pod = await pods.sandbox()
        await pods.container(pod, "server", ("nc", "-ll", "-p", "8080", "-e", "tr", "a-z", "A-Z"))

        async def connect() -> cri.PortStream | None:
            try:
                return await pods.rt.port_forward(pod.id, 8080)
            except Retryable:
                return None

        stream = await wait_for(connect, "the listener in the sandbox")
        assert isinstance(stream, cri.PortStream)
        await stream.write(b"ping\n")
        assert await asyncio.wait_for(stream.read(), 10) == b"PING\n"
        await stream.close()
        await stream.close()

    async def test_port_forward_errors(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI PortForward: an unknown sandbox is NotFound; a port nothing listens on fails (Retryable) and the
        sandbox is unharmed."""
        if not cri_capabilities.port_forward:
            pytest.skip("the runtime declares no port-forward")
        with expect_error(NotFound, "port_forward(<unknown sandbox id>)", f"{RULE}: an unknown sandbox id"):
            await pods.rt.port_forward("0" * 64, 8080)
        pod = await pods.sandbox()
        try:
            stream = await pods.rt.port_forward(pod.id, 8081)
        except Retryable:
            pass
        else:  # a runtime may accept the connection and close it at once: then nothing is read
            try:
                assert await asyncio.wait_for(stream.read(), 10) == b""
            finally:
                await stream.close()
        assert (await pods.rt.pod_sandbox_status(pod.id)).state == cri.PodSandboxState.SANDBOX_READY

    # ------------------------------------------------------------------------------------------ logs

    async def test_log_format(self, pods: PodKit) -> None:
        """CRI ContainerConfig.log_path: output is written under the sandbox's log_directory, one
        ``<RFC3339Nano> <stdout|stderr> <F|P> <text>`` record per line, stdout and stderr tagged (critest
        "runtime should support log")."""
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", ("sh", "-c", "echo one; echo two >&2; echo three; printf tail"))
        await pods.exited(cid)
        expected = {("stdout", "F", "one"), ("stderr", "F", "two"), ("stdout", "F", "three"), ("stdout", "F", "tail")}
        records = await pods.logged(cid, lambda r: len(r) >= 4, "four log records")
        # Output that ends without a newline may be logged F (line complete at exit) or P (no line end seen,
        # as containerd and CRI-O write it): the format leaves the tag of that last record to the runtime.
        records = [(s, "F", t) if (s, t) == ("stdout", "tail") else (s, tag, t) for s, tag, t in records]
        assert sorted(records) == sorted(expected)
        assert [t for s, _, t in records if s == "stdout"] == ["one", "three", "tail"]
        path = os.path.join(pod.config.log_directory, "app.log")
        assert (await pods.status(cid)).log_path == path
        text = await asyncio.to_thread(Path(path).read_text)
        # Timestamps rise within each stream; stdout and stderr are copied concurrently (containerd), so records
        # of the two streams may reach the file slightly out of order with each other.
        for stream in ("stdout", "stderr"):
            stamps = [m[1] for m in map(LOG_LINE.match, text.splitlines()) if m and m[2] == stream]
            assert stamps == sorted(stamps, key=_stamp_key), stream

    async def test_log_partial_lines(self, pods: PodKit) -> None:
        """CRI log format: a long line may be split into P (partial) records ended by an F record; joined they
        give the line back, and short lines around it stay whole."""
        pod = await pods.sandbox()
        script = "echo before; head -c 70000 /dev/zero | tr '\\0' x; echo; echo after"
        cid = await pods.container(pod, "app", ("sh", "-c", script))
        await pods.exited(cid)
        records = await pods.logged(cid, lambda r: ("stdout", "F", "after") in r, "the line after the long one")
        assert reassemble(records, "stdout") == ["before", "x" * 70000, "after"]
        assert all(tag in ("F", "P") for _, tag, _ in records)

    async def test_reopen_container_log(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI ReopenContainerLog: after the log file was renamed (rotated), new output goes to a new file at
        log_path; the renamed file keeps the old output (critest "runtime should support reopening container
        log")."""
        if not cri_capabilities.reopen_log:
            pytest.skip("the runtime declares no log reopening")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "ticker", ("sh", "-c", "while :; do echo tick; sleep 0.05; done"))
        path = (await pods.status(cid)).log_path
        await pods.logged(cid, lambda r: bool(r), "the first tick")
        os.rename(path, path + ".1")
        await pods.rt.reopen_container_log(cid)
        await wait_for(lambda: _async(bool(log_records(path))), "output in the reopened log")
        assert set(log_records(path)) == {("stdout", "F", "tick")}
        assert log_records(path + ".1")

    async def test_reopen_container_log_errors(self, pods: PodKit) -> None:
        """CRI ReopenContainerLog: an unknown container is NotFound; one that is not running is an error."""
        with expect_error(NotFound, "reopen_container_log(<unknown id>)", f"{RULE}: an unknown container id"):
            await pods.rt.reopen_container_log("0" * 64)
        pod = await pods.sandbox()
        cid = await pods.container(pod, "job", ("true",))
        await pods.exited(cid)
        with expect_error(MicrokubeError, "reopen_container_log(<exited container>)",
                          f"{RULE}: a container that is not running") as info:
            await pods.rt.reopen_container_log(cid)
        assert not isinstance(info.value, NotFound)

    # ----------------------------------------------------------------------------------------- stats

    async def test_container_stats(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI ContainerStats: a running container reports CPU (cumulative usage) and memory (working set) with
        timestamps, its id, metadata and labels (critest "runtime should support ContainerStats")."""
        if not cri_capabilities.stats:
            pytest.skip("the runtime declares no stats")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app")
        await pods.sh(cid, "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done")
        stats = await pods.rt.container_stats(cid)
        assert stats.id == cid
        assert stats.metadata == cri.ContainerMetadata("app")
        assert stats.labels == {"conformance": pods.token, "container": "app"}
        assert stats.cpu is not None
        assert stats.cpu.timestamp > 0
        assert stats.cpu.usage_core_nano_seconds > 0
        assert stats.memory is not None
        assert stats.memory.timestamp > 0
        assert stats.memory.working_set_bytes > 0
        later = await pods.rt.container_stats(cid)
        assert later.cpu is not None
        assert later.cpu.usage_core_nano_seconds >= stats.cpu.usage_core_nano_seconds

    async def test_list_container_stats(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI ListContainerStats: filters by id, sandbox and labels select the same containers as
        ListContainers."""
        if not cri_capabilities.stats:
            pytest.skip("the runtime declares no stats")
        a, b = await pods.sandbox("a"), await pods.sandbox("b")
        in_a = await pods.container(a, "one")
        in_b = await pods.container(b, "two")
        by_pod = await pods.rt.list_container_stats(cri.ContainerFilter(pod_sandbox_id=a.id))
        assert [s.id for s in by_pod] == [in_a]
        assert [s.id for s in await pods.rt.list_container_stats(cri.ContainerFilter(id=in_b))] == [in_b]
        by_label = await pods.rt.list_container_stats(cri.ContainerFilter(
            label_selector={"conformance": pods.token, "container": "two"}))
        assert [s.id for s in by_label] == [in_b]
        mine = await pods.rt.list_container_stats(cri.ContainerFilter(label_selector={"conformance": pods.token}))
        assert {s.id for s in mine} == {in_a, in_b}

    async def test_container_stats_unknown(self, rt: cri.RuntimeService, cri_capabilities: CRICapabilities) -> None:
        """CRI ContainerStats: an unknown container is NotFound."""
        if not cri_capabilities.stats:
            pytest.skip("the runtime declares no stats")
        with expect_error(NotFound, "container_stats(<unknown id>)", f"{RULE}: an unknown container id"):
            await rt.container_stats("0" * 64)

    async def test_update_container_resources(self, pods: PodKit, cri_capabilities: CRICapabilities) -> None:
        """CRI UpdateContainerResources: new limits apply to the running container's cgroup (critest "runtime
        should support UpdateContainerResources")."""
        if not (cri_capabilities.update_resources and cri_capabilities.memory_limits):
            pytest.skip("the runtime declares no resource updates")
        pod = await pods.sandbox()
        cid = await pods.container(pod, "app", resources=cri.LinuxContainerResources(memory_limit_in_bytes=48 << 20))
        await pods.rt.update_container_resources(cid, cri.LinuxContainerResources(memory_limit_in_bytes=96 << 20))
        assert await pods.sh(cid, MEMORY_LIMIT) == str(96 << 20)
        if cri_capabilities.cpu_limits:
            await pods.rt.update_container_resources(cid, cri.LinuxContainerResources(
                memory_limit_in_bytes=96 << 20, cpu_quota=20000, cpu_period=100000))
            assert (await pods.sh(cid, CPU_QUOTA)).split() == ["20000", "100000"]

    async def test_update_container_resources_unknown(self, rt: cri.RuntimeService,
                                                      cri_capabilities: CRICapabilities) -> None:
        """CRI UpdateContainerResources: an unknown container is NotFound."""
        if not cri_capabilities.update_resources:
            pytest.skip("the runtime declares no resource updates")
        with expect_error(NotFound, "update_container_resources(<unknown id>)", f"{RULE}: an unknown container id"):
            await rt.update_container_resources("0" * 64, cri.LinuxContainerResources(memory_limit_in_bytes=1 << 26))


async def _read_all(read: Callable[[], Awaitable[bytes]], limit: float = 20.0) -> bytes:
    data = b""
    while chunk := await asyncio.wait_for(read(), limit):
        data += chunk
    return data


async def _exec_and_close(rt: cri.RuntimeService, cid: str, cmd: list[str]) -> None:
    stream = await rt.exec(cid, cmd)
    await stream.close()


async def _async(value: T) -> T:
    return value


def _stamp_key(stamp: str) -> tuple[str, str]:
    """Orders RFC 3339 UTC stamps whose fractions may have different lengths."""
    main, _, rest = stamp.partition(".")
    return main, rest.rstrip("Z").ljust(9, "0")


# ------------------------------------------------------------------------------------------- images


class CRIImageConformance(_CRIFixtures):
    """ImageService rules: list, status, pull, remove, filesystem info, malformed references."""

    async def test_list_images(self, cri_runtime: cri.Runtime, prepare_image: None, test_image: str) -> None:
        """CRI ListImages: the present test image is listed, with its id, tags and size (critest "listImage
        should get exactly the image")."""
        status = await cri_runtime.images.image_status(cri.ImageSpec(test_image))
        assert status is not None
        listed = {image.id: image for image in await cri_runtime.images.list_images()}
        assert status.id in listed
        assert listed[status.id].repo_tags == status.repo_tags
        assert listed[status.id].size == status.size

    async def test_list_images_filter(self, cri_runtime: cri.Runtime, prepare_image: None, test_image: str) -> None:
        """CRI ListImages with a filter: exactly the named image; an absent one gives nothing."""
        status = await cri_runtime.images.image_status(cri.ImageSpec(test_image))
        assert status is not None
        found = await cri_runtime.images.list_images(cri.ImageFilter(cri.ImageSpec(test_image)))
        assert [i.id for i in found] == [status.id]
        absent = cri.ImageFilter(cri.ImageSpec(f"microkube.local/absent-{_RUN}:v1"))
        assert await cri_runtime.images.list_images(absent) == []

    async def test_image_status(self, cri_runtime: cri.Runtime, prepare_image: None, test_image: str) -> None:
        """CRI ImageStatus: a present image has an id, at least one repo tag, a size; it is found by its id too
        (critest "image status should support all kinds of references")."""
        status = await cri_runtime.images.image_status(cri.ImageSpec(test_image))
        assert status is not None
        assert status.id
        assert status.repo_tags
        assert status.size > 0
        by_id = await cri_runtime.images.image_status(cri.ImageSpec(status.id))
        assert by_id is not None
        assert by_id.id == status.id
        for tag in status.repo_tags:
            again = await cri_runtime.images.image_status(cri.ImageSpec(tag))
            assert again is not None, tag
            assert again.id == status.id, tag

    async def test_image_status_absent(self, cri_runtime: cri.Runtime) -> None:
        """CRI ImageStatus: an absent image is None (CRI's empty ``image``), not an error."""
        assert await cri_runtime.images.image_status(cri.ImageSpec(f"microkube.local/absent-{_RUN}:v1")) is None
        assert await cri_runtime.images.image_status(cri.ImageSpec("sha256:" + "0" * 64)) is None

    async def test_malformed_reference(self, cri_runtime: cri.Runtime) -> None:
        """cri/v1 ImageService: a malformed reference is Invalid for ImageStatus and PullImage (no registry is
        contacted)."""
        for bad in ("UPPER/case:v1", "a//b", "busybox@sha256:zz"):
            with expect_error(Invalid, f"image_status({bad!r})", f"{RULE}: a malformed reference"):
                await cri_runtime.images.image_status(cri.ImageSpec(bad))
            with expect_error(Invalid, f"pull_image({bad!r})", f"{RULE}: a malformed reference"):
                await cri_runtime.images.pull_image(cri.ImageSpec(bad))

    async def test_remove_absent_image(self, cri_runtime: cri.Runtime) -> None:
        """CRI RemoveImage: "must not return an error if the image has already been removed" (an absent
        reference succeeds)."""
        await cri_runtime.images.remove_image(cri.ImageSpec(f"microkube.local/absent-{_RUN}:v1"))

    async def test_remove_image(self, cri_runtime: cri.Runtime, prepare_image: None, test_image: str,
                                removable_image: str | None) -> None:
        """CRI RemoveImage: the image is gone (status None, not listed), removing it again succeeds, and other
        images stay (critest "public image should be removed")."""
        if removable_image is None:
            pytest.skip("the vendor supplies no removable image")
        images = cri_runtime.images
        status = await images.image_status(cri.ImageSpec(removable_image))
        assert status is not None, "removable_image did not make the image present"
        kept = await images.image_status(cri.ImageSpec(test_image))
        assert kept is not None
        assert kept.id != status.id, "the removable image must be another image"
        await images.remove_image(cri.ImageSpec(removable_image))
        assert await images.image_status(cri.ImageSpec(removable_image)) is None
        assert status.id not in {i.id for i in await images.list_images()}
        await images.remove_image(cri.ImageSpec(removable_image))
        assert await images.image_status(cri.ImageSpec(test_image)) is not None

    @pytest.mark.slow
    async def test_pull_image(self, cri_runtime: cri.Runtime, cri_capabilities: CRICapabilities,
                              pullable_image: PullSource | None) -> None:
        """CRI PullImage: the image is present afterwards; the returned ref is its id (or resolves to it);
        a second pull succeeds too (critest "public image with tag should be pulled and removed")."""
        if not cri_capabilities.pull or pullable_image is None:
            pytest.skip("the vendor supplies no registry to pull from")
        images = cri_runtime.images
        spec = cri.ImageSpec(pullable_image.reference)
        await images.remove_image(spec)
        ref = await images.pull_image(spec, pullable_image.auth)
        status = await images.image_status(spec)
        assert status is not None
        assert ref in (status.id, *status.repo_digests) or (await images.image_status(cri.ImageSpec(ref)) or
                                                            status).id == status.id
        assert await images.pull_image(spec, pullable_image.auth) == ref
        await images.remove_image(spec)
        assert await images.image_status(spec) is None

    async def test_pull_absent_image(self, cri_runtime: cri.Runtime, cri_capabilities: CRICapabilities,
                                     pullable_image: PullSource | None) -> None:
        """CRI PullImage: an image the registry does not have is NotFound, naming the reference."""
        if not cri_capabilities.pull or pullable_image is None:
            pytest.skip("the vendor supplies no registry to pull from")
        repository = pullable_image.reference.rsplit("@", 1)[0].rsplit(":", 1)[0]
        if "/" not in repository or repository.rsplit("/", 1)[1].count(":"):
            pytest.skip("the pullable image has no repository to vary")
        missing = f"{repository}-absent-{_RUN}:v1"
        with expect_error(NotFound, f"pull_image({missing!r})", f"{RULE}: an image the registry does not have") \
                as info:
            await cri_runtime.images.pull_image(cri.ImageSpec(missing), pullable_image.auth)
        assert "absent" in str(info.value)

    async def test_image_fs_info(self, cri_runtime: cri.Runtime, prepare_image: None) -> None:
        """CRI ImageFsInfo: at least one image filesystem, each with a mount point, a timestamp and usage; with
        the test image present the usage is not zero."""
        info = await cri_runtime.images.image_fs_info()
        assert info.image_filesystems
        for usage in (*info.image_filesystems, *info.container_filesystems):
            assert usage.mountpoint
            assert usage.timestamp > 0
            assert usage.used_bytes >= 0
            assert usage.inodes_used >= 0

        # FilesystemUsage is a sample taken at ``timestamp``: a runtime may collect it periodically (containerd
        # does), so an image imported just now may show in a later sample.
        async def used() -> bool:
            current = await cri_runtime.images.image_fs_info()
            return sum(u.used_bytes for u in current.image_filesystems) > 0

        await wait_for(used, "image filesystem usage above zero with the test image present", 30)


class CRIConformance(CRIRuntimeConformance, CRIImageConformance):
    """Both halves: subclass this, supply ``cri_runtime`` and ``prepare_image`` (see the module's docstring)."""


__all__ = [
    "LOG_LINE",
    "SLEEPER",
    "STUBBORN",
    "CRICapabilities",
    "CRIConformance",
    "CRIImageConformance",
    "CRIRuntimeConformance",
    "Pod",
    "PodKit",
    "PullSource",
    "log_records",
    "reassemble",
    "wait_for",
]
