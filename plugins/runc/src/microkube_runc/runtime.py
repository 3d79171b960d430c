"""The runc pack's RuntimeService (cri/v1): pod sandboxes and containers driven by the ``runc`` binary, or by
``crun`` (option ``ociRuntime``; both take the same command lines but for tty execs, see ``_crun_tty_exec``).

State directory layout (``state_dir``)::

    runc/                       the OCI runtime's own --root (container states)
    oci-runtime                 which OCI runtime made them (runc or crun)
    crun-wrapper                crun behind a private mount namespace (crun on a hybrid cgroup host only)
    sandboxes/<id>/sandbox.json the sandbox record; hostname, hosts, resolv.conf; pause/ (its bundle)
    containers/<id>/container.json
                               the container record; config.json + rootfs/ (its bundle); exit.json once exited
    netns/<sandbox id>          the sandbox's network namespace, bind-mounted (handed to the pod network)

A sandbox is a "pause" container (``/bin/sleep infinity`` from the busybox image) owning new network,
IPC and UTS namespaces (its own PID namespace too); workload containers join them by ``/proc/<pause
pid>/ns/...`` paths. Each pod gets a cgroup ``<cgroup_parent>/pod-<sandbox id>`` (default parent: this
process's memory cgroup + ``/microkube``), or the sandbox config's ``linux.cgroup_parent``; containers
are leaves below it; the runtime removes the pod level with the sandbox.

Exit statuses: the process running the runtime makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``),
so container init processes, orphaned when ``runc create`` exits, are reparented to it; a watcher per
container (a pidfd in the event loop) reaps the init, waits for the log pumps to drain and writes
``exit.json`` (exit code, finish time, OOM). Containers outlive the runtime object (a restarted
RuntimeService over the same state dir lists and manages them); a container that exits while no process
watches it is reported with exit code 255 and reason ``Unknown`` unless its zombie's status is readable.

Stdio: stdout and stderr are pipes pumped into the CRI log and to attached clients; a container with stdin
reads a FIFO in its directory (without stdinOnce it holds a write end itself, so it never reads end of
file and a restarted runtime opens the FIFO again). A tty container's terminal master comes from runc's
console socket. Each running container has a holder process (``sleep infinity``, ended when the container
exits) with copies of its output pipes' read ends or its terminal master: while no runtime instance pumps
them (a node agent restarting) writes wait in the pipe instead of failing, the terminal is not hung up, and
the next instance reads the pipes again through ``/proc/<pid>/fd`` and takes the master back (pidfd_getfd).
Execs with a tty run ``runc exec --tty`` in the foreground on a pty pair of ours (``terminal.py``); with crun, whose
relay ignores resizes, ``crun exec --tty`` in the foreground hands the container's terminal to a console socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from microkube_interfaces import cri
from microkube_interfaces.errors import Invalid, NotFound, PluginError, Retryable, Unsupported
from microkube_runc import bundle, cgroups, netns, terminal
from microkube_runc.images import ImageStore
from microkube_runc.logs import CriLog, Taps, pump

DEFAULT_RUNC = "/usr/sbin/runc"
DEFAULT_CRUN = "/usr/bin/crun"
#: The OCI runtimes the pack drives (option ``ociRuntime``) and their default binaries (Debian's packages).
OCI_RUNTIMES = {"runc": DEFAULT_RUNC, "crun": DEFAULT_CRUN}
CRUN_WRAPPER = "crun-wrapper"
DEFAULT_PAUSE_IMAGE = "microkube.local/busybox:latest"
PAUSE_COMMAND = ("/bin/sleep", "infinity")

_PR_SET_CHILD_SUBREAPER = 36
_MS_BIND = 4096
_MNT_DETACH = 2

#: pids with a watcher in this process (shared by every RuntimeService instance of the process).
_WATCHED: set[int] = set()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    if _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(code)}")


def _bind_mount(source: str, target: str) -> None:
    if _libc().mount(source.encode(), target.encode(), None, _MS_BIND, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"bind mount {source} on {target}: {os.strerror(code)}")


def _umount(target: str) -> None:
    _libc().umount2(target.encode(), _MNT_DETACH)


def _atomic_write(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_crun_wrapper(path: Path, crun: str) -> Path:
    """Write (when missing or different) the executable script the pack runs instead of crun on a hybrid host.

    crun 1.8 refuses a host whose cgroup2 mount at ``/sys/fs/cgroup/unified`` has controllers attached ("cgroups
    in hybrid mode not supported"), whatever its cgroup manager. The script runs crun in a mount namespace of its
    own where that mount is lazily unmounted, so crun sees pure cgroup v1. The namespace keeps the host's
    propagation (bidirectional container mounts still reach the host on a host whose mounts are shared), except
    under ``/sys``, made private first so that the unmount never propagates to the host.
    """
    tools = {name: shutil.which(name, path=os.pathsep.join(("/usr/bin", "/bin", "/usr/sbin", "/sbin")))
             for name in ("unshare", "mount", "umount")}
    missing = [name for name, found in tools.items() if found is None]
    if missing:
        raise PluginError("runc", f"ociRuntime crun on this hybrid cgroup host needs {', '.join(missing)}",
                          "install Debian's util-linux and mount packages")
    text = ("#!/bin/sh\n"
            "# Written by microkube-runc: crun on a hybrid cgroup host, in a mount namespace without the cgroup2 "
            "mount.\n"
            f"exec {tools['unshare']} -m --propagation unchanged /bin/sh -c "
            f"""'{tools["mount"]} --make-rprivate /sys && {tools["umount"]} -l /sys/fs/cgroup/unified && """
            f"""exec "$0" "$@"' {shlex.quote(crun)} "$@"\n""")
    with contextlib.suppress(OSError):
        if path.read_text() == text and os.access(path, os.X_OK):
            return path
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path


def _exists(path: Path) -> bool:
    """A stat of a small local state file (fast enough for the event loop)."""
    return path.exists()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _RecordCache:
    """Parsed state files, re-read only when their (inode, mtime, size) changed: listing and status calls,
    made for every pod every second by a node agent, then cost a stat per record instead of a parse.
    Records from here are shared: callers read them and never change them."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def peek(self, path: Path) -> dict[str, Any] | None:
        try:
            st = os.stat(path)
        except OSError:
            self._entries.pop(path, None)
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._entries.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = _read_json(path)
        if data is None:
            self._entries.pop(path, None)
            return None
        self._entries[path] = (key, data)
        return data

    def retain(self, parent: Path, names: Iterable[str]) -> None:
        """Forget cached records under ``parent`` whose directory is not in ``names`` (removed objects)."""
        keep = set(names)
        for path in [p for p in self._entries if p.parent.parent == parent and p.parent.name not in keep]:
            del self._entries[path]


def _proc_state(pid: int) -> tuple[str, int | None, int]:
    """(state letter or "" when gone, exit status of a zombie or None, start time in ticks)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", None, 0
    fields = raw.rsplit(")", 1)[1].split()
    state = fields[0]
    start = int(fields[19])
    status = int(fields[49]) if state == "Z" and len(fields) > 49 else None
    return state, status, start


def reap_orphans() -> int:
    """Reap zombie children of this process that live in a container's PID namespace.

    As a subreaper this process inherits orphans from containers (an exec whose ``runc exec`` died, a
    daemon of a container); a PID namespace's init cannot finish exiting while any of its processes
    is an unreaped zombie. Processes this process forked itself (runc, in the host PID namespace) and
    the container inits a watcher owns are left alone. Returns the number reaped.
    """
    me = str(os.getpid())
    reaped = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
            fields = raw.rsplit(")", 1)[1].split()
            if fields[0] != "Z" or fields[1] != me or int(entry.name) in _WATCHED:
                continue
            nspid = next(line for line in Path(entry.path, "status").read_text().splitlines()
                         if line.startswith("NSpid:"))
        except (OSError, StopIteration, IndexError):
            continue
        if len(nspid.split()) > 2:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped += 1
    return reaped


def _decode_status(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def _mount_dict(mount: cri.Mount) -> dict[str, Any]:
    return {"container_path": mount.container_path, "host_path": mount.host_path, "readonly": mount.readonly,
            "selinux_relabel": mount.selinux_relabel, "propagation": int(mount.propagation)}


def _resources_from(data: dict[str, Any] | None) -> cri.LinuxContainerResources | None:
    if not data:
        return None
    return cri.LinuxContainerResources(**data)


class RuncError(Exception):
    pass


class _PortStream:
    """One forwarded TCP connection (cri.PortStream)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, n: int = 65536) -> bytes:
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


@dataclasses.dataclass
class _Stream:
    """A ``runc exec`` with pipes: the ContainerStream handle."""

    process: asyncio.subprocess.Process
    stdin_open: bool
    pid_file: Path

    async def write_stdin(self, data: bytes) -> None:
        if not self.stdin_open or self.process.stdin is None:
            raise Unsupported("exec was opened without stdin")
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
            with contextlib.suppress(OSError, BrokenPipeError, ConnectionResetError):
                await self.process.stdin.wait_closed()

    async def read_stdout(self, n: int = 65536) -> bytes:
        assert self.process.stdout is not None
        return await self.process.stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        assert self.process.stderr is not None
        return await self.process.stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        return None

    async def wait(self) -> int:
        return await self.process.wait()

    async def close(self) -> None:
        if self.process.returncode is None:
            await _stop_exec(self.process, self.pid_file)
        self.pid_file.unlink(missing_ok=True)


class _TtyExec:
    """A ``runc exec --tty`` in the foreground on a pty pair of ours, or a ``crun exec --tty`` in the foreground
    whose terminal master came through a console socket: the ContainerStream handle."""

    def __init__(self, process: asyncio.subprocess.Process, master: int, stdin: bool, pid_file: Path) -> None:
        self.process = process
        self._master = master
        self._stdin = stdin
        self._stdin_closed = False
        self.pid_file = pid_file

    async def write_stdin(self, data: bytes) -> None:
        if not self._stdin:
            raise Unsupported("exec was opened without stdin")
        if self._master < 0 or self._stdin_closed:
            raise Invalid("stdin of this exec is closed")
        await terminal.write_fd(self._master, data)

    async def close_stdin(self) -> None:
        # A terminal has no end of input of its own: end of file is the EOF character at a line's start.
        if self._stdin and not self._stdin_closed and self._master >= 0:
            self._stdin_closed = True
            with contextlib.suppress(OSError):
                await terminal.write_fd(self._master, b"\x04")

    async def read_stdout(self, n: int = 65536) -> bytes:
        if self._master < 0:
            return b""
        return await terminal.read_fd(self._master, n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        return b""

    async def resize(self, width: int, height: int) -> None:
        if self._master < 0 or self.process.returncode is not None:
            return
        terminal.set_size(self._master, width, height)  # crun's: the container's terminal itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGWINCH)  # runc copies our size to the container's terminal

    async def wait(self) -> int:
        return await self.process.wait()

    async def close(self) -> None:
        if self.process.returncode is None:
            await _stop_exec(self.process, self.pid_file)
        self.pid_file.unlink(missing_ok=True)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


@dataclasses.dataclass
class _ContainerIO:
    """What attachments need of a container: its output taps, and its stdin (a FIFO's write end, or the
    terminal master for a tty container) while this runtime instance holds it."""

    taps: Taps
    tty: bool
    stdin_once: bool
    stdin_fd: int = -1
    master: int = -1
    #: The container's holder process (terminal.hold) and the descriptors it holds, by stream.
    holder: dict[str, Any] = dataclasses.field(default_factory=dict)

    def close_stdin(self) -> None:
        if self.stdin_fd >= 0 and self.stdin_fd != self.master:
            os.close(self.stdin_fd)
        self.stdin_fd = -1

    def close(self) -> None:
        self.close_stdin()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class _Attachment:
    """An attachment to a container's main process: the ContainerStream handle of ``attach``."""

    def __init__(self, io: _ContainerIO, stdin: bool, exit_file: Path,
                 wait_exit: Callable[[Path, float], Awaitable[bool]]) -> None:
        self._io = io
        self._stdin = stdin
        self._out = io.taps.subscribe("stdout")
        self._err = io.taps.subscribe("stderr")
        self._pending = {"stdout": b"", "stderr": b""}
        self._exit_file = exit_file
        self._wait_exit = wait_exit
        self._closed = False

    async def write_stdin(self, data: bytes) -> None:
        if not self._stdin:
            raise Unsupported("attach was opened without stdin")
        if self._io.stdin_fd < 0:
            raise Invalid("the container's stdin is closed (it was created with stdinOnce and attached before)")
        await terminal.write_fd(self._io.stdin_fd, data)

    async def close_stdin(self) -> None:
        """With stdinOnce the container reads end of file; without, its stdin stays open for the next
        attachment (Kubernetes: such a process never receives end of file)."""
        if not (self._stdin and self._io.stdin_once) or self._io.stdin_fd < 0:
            return
        if self._io.tty:
            with contextlib.suppress(OSError):
                await terminal.write_fd(self._io.stdin_fd, b"\x04")
        self._io.close_stdin()

    async def _read(self, stream: str, queue: asyncio.Queue[bytes], n: int) -> bytes:
        data = self._pending[stream] or await queue.get()
        if not data:
            queue.put_nowait(b"")  # stays at end of stream for later reads
        self._pending[stream] = data[n:]
        return data[:n]

    async def read_stdout(self, n: int = 65536) -> bytes:
        return await self._read("stdout", self._out, n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        return await self._read("stderr", self._err, n)

    async def resize(self, width: int, height: int) -> None:
        if self._io.tty and self._io.master >= 0:
            terminal.set_size(self._io.master, width, height)  # the kernel signals the container's session

    async def wait(self) -> int:
        await self._wait_exit(self._exit_file, float("inf"))
        data = _read_json(self._exit_file) or {}
        return int(data.get("exit_code", 255))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._io.taps.unsubscribe("stdout", self._out)
        self._io.taps.unsubscribe("stderr", self._err)
        await self.close_stdin()


def _holder(fds: dict[str, int]) -> dict[str, Any]:
    """Start a holder of ``fds`` (terminal.hold); the record of it kept with the container."""
    pid = terminal.hold(list(fds.values()))
    return {"pid": pid, "start_ticks": _proc_state(pid)[2], "fds": fds}


def _holder_alive(holder: dict[str, Any]) -> bool:
    return bool(holder) and _proc_state(holder["pid"])[2] == holder["start_ticks"]


def _end_holder(holder: dict[str, Any]) -> None:
    if not _holder_alive(holder):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder["pid"], signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # our child unless an earlier instance started it
        os.waitpid(holder["pid"], 0)


def _kill_exec(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


async def _stop_exec(process: asyncio.subprocess.Process, pid_file: Path) -> None:
    """Kill an exec'd process and let its ``runc exec`` reap it (else it would become our zombie)."""
    await asyncio.to_thread(_kill_exec, pid_file)
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    await asyncio.to_thread(reap_orphans)


class RuncRuntime:
    """cri.RuntimeService on runc. One instance per node agent; state survives in ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str], images: ImageStore, *, runc: str = "",
                 oci_runtime: str = "runc", cgroup_parent: str | None = None,
                 pause_image: str = DEFAULT_PAUSE_IMAGE) -> None:
        """``oci_runtime`` names the runtime (``runc`` or ``crun``), ``runc`` its binary (default: Debian's)."""
        if oci_runtime not in OCI_RUNTIMES:
            raise Invalid.field("ociRuntime", f"must be one of {', '.join(OCI_RUNTIMES)}, not {oci_runtime!r}",
                                "FieldValueNotSupported")
        self.state_dir = Path(state_dir).absolute()
        self.images = images
        self.oci_runtime = oci_runtime
        #: the runtime's own binary (versions, readiness) and what the pack runs (crun's wrapper on a hybrid host).
        self.binary = runc or OCI_RUNTIMES[oci_runtime]
        self.runc = self.binary
        if oci_runtime == "crun" and not os.access(self.binary, os.X_OK):
            raise PluginError("runc", f"ociRuntime crun: {self.binary} is not an executable",
                              "install Debian's crun package (apt-get install crun), or set the option runc "
                              "to the crun binary")
        self.cgroup_parent = cgroup_parent if cgroup_parent is not None else cgroups.default_parent()
        self.pause_image = pause_image
        self.runc_root = self.state_dir / "runc"
        for sub in ("runc", "sandboxes", "containers", "netns"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        # runc and crun keep different state under the same --root: neither can manage the other's containers.
        # (A state dir without the marker predates crun: runc made its containers.)
        marker = self.state_dir / "oci-runtime"
        previous = marker.read_text().strip() if marker.exists() else "runc"
        if previous != oci_runtime or not marker.exists():
            if previous != oci_runtime and any(self.runc_root.iterdir()):
                raise Invalid.field("ociRuntime", f"{self.state_dir} holds containers made by {previous}: remove "
                                    f"them (the node's pods) before switching to {oci_runtime}, or use another root")
            marker.write_text(oci_runtime + "\n")
        if oci_runtime == "crun" and cgroups.hybrid_v2_controllers():
            self.runc = str(write_crun_wrapper(self.state_dir / CRUN_WRAPPER, self.binary))
        become_subreaper()
        self._logs: dict[str, CriLog] = {}
        self._pumps: dict[str, list[asyncio.Task[None]]] = {}
        self._io: dict[str, _ContainerIO] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._cpu_samples: dict[str, tuple[int, int]] = {}
        self._adopted = False
        self._records = _RecordCache()
        self._lock = asyncio.Lock()

    # --- records ------------------------------------------------------------------------------

    def _sandbox_dir(self, sid: str) -> Path:
        return self.state_dir / "sandboxes" / sid

    def _container_dir(self, cid: str) -> Path:
        return self.state_dir / "containers" / cid

    def _sandbox(self, sid: str) -> dict[str, Any]:
        record = _read_json(self._sandbox_dir(sid) / "sandbox.json") if sid and "/" not in sid else None
        if record is None:
            raise NotFound(f"pod sandbox {sid!r} not found")
        return record

    def _container(self, cid: str) -> dict[str, Any]:
        record = _read_json(self._container_dir(cid) / "container.json") if cid and "/" not in cid else None
        if record is None:
            raise NotFound(f"container {cid!r} not found")
        return record

    def _sandbox_view(self, sid: str) -> dict[str, Any]:
        """The sandbox record, shared: for reading only."""
        record = self._records.peek(self._sandbox_dir(sid) / "sandbox.json") if sid and "/" not in sid else None
        if record is None:
            raise NotFound(f"pod sandbox {sid!r} not found")
        return record

    def _container_view(self, cid: str) -> dict[str, Any]:
        """The container record, shared: for reading only."""
        record = self._records.peek(self._container_dir(cid) / "container.json") if cid and "/" not in cid \
            else None
        if record is None:
            raise NotFound(f"container {cid!r} not found")
        return record

    def _save_sandbox(self, record: dict[str, Any]) -> None:
        _atomic_write(self._sandbox_dir(record["id"]) / "sandbox.json", record)

    def _save_container(self, record: dict[str, Any]) -> None:
        _atomic_write(self._container_dir(record["id"]) / "container.json", record)

    def _sandbox_ids(self) -> list[str]:
        root = self.state_dir / "sandboxes"
        found = sorted(p.name for p in root.iterdir() if (p / "sandbox.json").exists())
        self._records.retain(root, found)
        return found

    def _container_ids(self) -> list[str]:
        root = self.state_dir / "containers"
        found = sorted(p.name for p in root.iterdir() if (p / "container.json").exists())
        self._records.retain(root, found)
        return found

    # --- runc ---------------------------------------------------------------------------------

    async def _runc(self, *args: str, check: bool = True, stdin: bytes | int | None = None,
                    stdout: int | None = None, stderr: int | None = None) -> tuple[int, bytes, bytes]:
        """Run runc; ``stdin`` is bytes to send or a descriptor to hand over (a container's stdin)."""
        process = await asyncio.create_subprocess_exec(
            self.runc, "--root", str(self.runc_root), *args,
            stdin=(asyncio.subprocess.DEVNULL if stdin is None else stdin if isinstance(stdin, int)
                   else asyncio.subprocess.PIPE),
            stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
            stderr=stderr if stderr is not None else asyncio.subprocess.PIPE)
        out, err = await process.communicate(stdin if isinstance(stdin, bytes) else None)
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            message = (err or out or b"").decode(errors="replace").strip()
            raise RuncError(f"{self.oci_runtime} {args[0]} failed ({code}): {message}")
        return code, out or b"", err or b""

    async def _runc_state(self, cid: str) -> dict[str, Any] | None:
        code, out, _ = await self._runc("state", cid, check=False)
        if code != 0:
            return None
        with contextlib.suppress(ValueError):
            data = json.loads(out)
            if isinstance(data, dict):
                return data
        return None

    async def _delete(self, cid: str) -> None:
        await self._runc("delete", "--force", cid, check=False)

    # --- watchers -----------------------------------------------------------------------------

    def _watch(self, key: str, pid: int, exit_file: Path, cgroup_path: str, pumps: list[asyncio.Task[None]],
               start_ticks: int = 0, log: CriLog | None = None) -> None:
        """Reap ``pid`` (our child via the subreaper, or anyone's) and write ``exit_file``."""
        if pid in _WATCHED or exit_file.exists():
            return
        _WATCHED.add(pid)
        self._watchers[key] = asyncio.get_running_loop().create_task(
            self._watcher(pid, exit_file, cgroup_path, pumps, start_ticks, log), name=f"runc-watch-{key[:12]}")

    async def _watcher(self, pid: int, exit_file: Path, cgroup_path: str, pumps: list[asyncio.Task[None]],
                       start_ticks: int, log: CriLog | None) -> None:
        loop = asyncio.get_running_loop()
        code: int | None = None
        try:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
            if pidfd >= 0:
                exited = asyncio.Event()
                loop.add_reader(pidfd, exited.set)
                try:
                    await exited.wait()
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
            finished = time.time_ns()
            try:
                reaped, status = os.waitpid(pid, 0)  # noqa: ASYNC222 (the pidfd said it exited)
                if reaped == pid:
                    code = _decode_status(status)
            except ChildProcessError:
                _, zombie_status, ticks = _proc_state(pid)
                if zombie_status is not None and (not start_ticks or ticks == start_ticks):
                    code = _decode_status(zombie_status)
            if pumps:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), 5)
                if log is not None and all(p.done() for p in pumps):
                    log.close()
            oom = bool(cgroup_path) and cgroups.oom_recorded(cgroup_path)
            failcnt = cgroups.memory_failcnt(cgroup_path) if cgroup_path else 0
            if exit_file.parent.exists():
                _atomic_write(exit_file, {"exit_code": 255 if code is None else code, "finished_at": finished,
                                          "oom": oom or (code == 137 and failcnt > 0), "known": code is not None})
            record = _read_json(exit_file.parent / "container.json") or {}
            await asyncio.to_thread(_end_holder, record.get("stdio_holder") or {})  # its output is drained
        finally:
            _WATCHED.discard(pid)

    async def _adopt(self) -> None:
        """Watch containers and pause processes of an earlier instance (once per instance)."""
        if self._adopted:
            return
        self._adopted = True
        for cid in self._container_ids():
            record = _read_json(self._container_dir(cid) / "container.json")
            if not record or not record.get("pid") or (self._container_dir(cid) / "exit.json").exists():
                continue
            pid = record["pid"]
            if pid in _WATCHED or _proc_state(pid)[2] != record.get("start_ticks", 0):
                continue
            log, pumps = self._reattach_output(record)
            self._watch(cid, pid, self._container_dir(cid) / "exit.json", record["cgroup_path"], pumps,
                        record.get("start_ticks", 0), log)
        for sid in self._sandbox_ids():
            record = _read_json(self._sandbox_dir(sid) / "sandbox.json")
            if record and record.get("pause_pid"):
                self._watch("pause-" + sid, record["pause_pid"], self._sandbox_dir(sid) / "pause-exit.json", "", [],
                            record.get("start_ticks", 0))

    def _reattach_output(self, record: dict[str, Any]) -> tuple[CriLog | None, list[asyncio.Task[None]]]:
        """Open new read ends of a running container's stdout/stderr pipes (``/proc/<pid>/fd/1,2``) and pump
        them again, and open its stdin FIFO again; take a tty container's terminal master back from its holder:
        the log and attachments continue after a restart of the runtime's process."""
        cid, pid = record["id"], record["pid"]
        if record.get("tty"):
            return self._reattach_terminal(record)
        fds: list[tuple[int, str]] = []
        for number, stream in ((1, "stdout"), (2, "stderr")):
            path = f"/proc/{pid}/fd/{number}"
            try:
                if os.readlink(path).startswith("pipe:"):
                    fds.append((os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), stream))
            except OSError:
                continue
        if not fds:
            return None, []
        io = _ContainerIO(Taps(), tty=False, stdin_once=bool(record.get("stdin_once")))
        if record.get("stdin"):
            with contextlib.suppress(OSError):  # ENXIO: nobody reads it any more
                io.stdin_fd = os.open(self._container_dir(cid) / "stdin", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        log = CriLog(record.get("log_path", ""))
        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(pump(fd, stream, log, io.taps)) for fd, stream in fds]
        self._track(cid, log, pumps, io)
        return log, pumps

    def _track(self, cid: str, log: CriLog, pumps: list[asyncio.Task[None]], io: _ContainerIO) -> None:
        """What this instance holds of a container's output: its log, the pumps feeding it, attachments' I/O."""
        self._logs[cid] = log
        self._pumps[cid] = pumps
        self._io[cid] = io

    def _reattach_terminal(self, record: dict[str, Any]) -> tuple[CriLog | None, list[asyncio.Task[None]]]:
        holder = record.get("stdio_holder") or {}
        if not _holder_alive(holder) or "terminal" not in holder["fds"]:
            return None, []
        try:
            master = terminal.take_back(holder["pid"], holder["fds"]["terminal"])
        except OSError:
            return None, []
        os.set_blocking(master, False)
        io = _ContainerIO(Taps(), tty=True, stdin_once=bool(record.get("stdin_once")), master=master)
        io.stdin_fd = master
        io.taps.end("stderr")
        log = CriLog(record.get("log_path", ""))
        pumps = [asyncio.get_running_loop().create_task(pump(os.dup(master), "stdout", log, io.taps))]
        self._track(record["id"], log, pumps, io)
        return log, pumps

    async def _wait_exit(self, exit_file: Path, limit: float) -> bool:
        deadline = time.monotonic() + limit
        delay = 0.002
        polls = 0
        while not _exists(exit_file):
            if time.monotonic() >= deadline:
                return False
            if polls % 10 == 5:
                await asyncio.to_thread(reap_orphans)
            polls += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    # --- RuntimeVersioner / status --------------------------------------------------------------

    async def version(self, api_version: str = cri.VERSION) -> cri.VersionInfo:
        """The OCI runtime's name and version, from the first line of ``<binary> --version``
        (``runc version 1.1.5``, ``crun version 1.8.1``)."""
        name = self.oci_runtime
        try:
            process = await asyncio.create_subprocess_exec(
                self.binary, "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            out, _ = await process.communicate()
        except OSError:
            out = b""
        lines = out.decode(errors="replace").splitlines()
        first = lines[0] if lines else ""
        return cri.VersionInfo(version=cri.VERSION, runtime_name=name,
                               runtime_version=first.replace(f"{name} version", "").strip())

    async def status(self, verbose: bool = False) -> cri.RuntimeStatus:
        ready = os.access(self.binary, os.X_OK) and os.access(self.runc, os.X_OK)
        return cri.RuntimeStatus(conditions=(
            cri.RuntimeCondition(cri.RUNTIME_READY, ready, "" if ready else f"{self.oci_runtime.capitalize()}Missing",
                                 "" if ready else f"{self.binary} is not executable: install Debian's "
                                 f"{self.oci_runtime} package"),
            cri.RuntimeCondition(cri.NETWORK_READY, False, "NetworkPluginNotReady",
                                 "the runc runtime does not network pods; the node agent's pod network does"),
        ))

    # --- sandboxes ------------------------------------------------------------------------------

    async def run_pod_sandbox(self, config: cri.PodSandboxConfig, runtime_handler: str = "") -> str:
        meta = config.metadata
        if not meta.name or not meta.uid or not meta.namespace:
            raise Invalid.field("metadata", "name, uid and namespace are required")
        await self._adopt()
        await self._ensure_pause_image()
        sid = uuid.uuid4().hex
        directory = self._sandbox_dir(sid)
        directory.mkdir(parents=True)
        ns_opts = config.linux.security_context.namespace_options
        pod_cgroup = config.linux.cgroup_parent or os.path.join(self.cgroup_parent, f"pod-{sid}")
        hostname = config.hostname or meta.name
        record: dict[str, Any] = {
            "id": sid, "metadata": dataclasses.asdict(meta), "state": "creating", "created_at": time.time_ns(),
            "labels": dict(config.labels), "annotations": dict(config.annotations), "hostname": hostname,
            "log_directory": config.log_directory, "runtime_handler": runtime_handler, "cgroup_path": pod_cgroup,
            "namespace_options": {"network": int(ns_opts.network), "pid": int(ns_opts.pid), "ipc": int(ns_opts.ipc)},
            "netns": "", "pause_pid": 0, "pause_id": "pause-" + sid,
        }
        self._save_sandbox(record)
        try:
            await asyncio.to_thread(self._write_pod_files, directory, config, hostname)
            pause = directory / "pause"
            pause.mkdir()
            await self.images.rootfs(self.pause_image, pause / "rootfs")
            namespaces: list[dict[str, Any]] = [{"type": "mount"}, {"type": "uts"}]
            if ns_opts.pid != cri.NamespaceMode.NODE:
                namespaces.append({"type": "pid"})
            if ns_opts.ipc != cri.NamespaceMode.NODE:
                namespaces.append({"type": "ipc"})
            if ns_opts.network != cri.NamespaceMode.NODE:
                namespaces.append({"type": "network"})
            sysctl = dict(config.linux.sysctls)
            if ns_opts.network == cri.NamespaceMode.NODE:
                sysctl = {k: v for k, v in sysctl.items() if not k.startswith("net.")}
            if config.linux.resources is not None and config.linux.resources.memory_limit_in_bytes > 0:
                cgroups.make_memory(pod_cgroup, config.linux.resources.memory_limit_in_bytes)
            spec = bundle.spec(
                args=list(PAUSE_COMMAND), env=[f"PATH={bundle.DEFAULT_PATH}"], cwd="/", uid=0, gid=0,
                additional_gids=[], hostname=hostname, readonly=True, capabilities=[],
                mounts=bundle.standard_mounts(cgroup=False), namespaces=namespaces,
                cgroups_path=os.path.join(pod_cgroup, record["pause_id"]),
                linux_resources={"cpu": {"shares": 2}}, sysctl=sysctl)
            (pause / "config.json").write_text(json.dumps(spec))
            with open(pause / "runc.err", "wb") as err:  # noqa: ASYNC230 (a new local file)
                code, _, _ = await self._runc("run", "--detach", "--bundle", str(pause), "--pid-file",
                                              str(pause / "pid"), record["pause_id"], check=False,
                                              stdout=asyncio.subprocess.DEVNULL, stderr=err.fileno())
            if code != 0:
                raise RuncError(f"runc run failed ({code}): {(pause / 'runc.err').read_text(errors='replace')}")
            pid = int((pause / "pid").read_text().strip())
            record["pause_pid"] = pid
            record["start_ticks"] = _proc_state(pid)[2]
            self._watch("pause-" + sid, pid, directory / "pause-exit.json", "", [], record["start_ticks"])
            if ns_opts.network != cri.NamespaceMode.NODE:
                netns_file = self.state_dir / "netns" / sid
                netns_file.touch()
                _bind_mount(f"/proc/{pid}/ns/net", str(netns_file))
                record["netns"] = str(netns_file)
                await netns.run_in_netns(str(netns_file), netns.loopback_up)
            record["state"] = "ready"
            self._save_sandbox(record)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.remove_pod_sandbox(sid)
            if isinstance(exc, RuncError):
                raise Retryable(f"run pod sandbox {meta.namespace}/{meta.name}: {exc}") from exc
            raise
        return sid

    async def _ensure_pause_image(self) -> None:
        try:
            await self.images.resolve(self.pause_image)
        except NotFound:
            if self.pause_image != DEFAULT_PAUSE_IMAGE:
                raise
            from microkube_runc.busybox import import_busybox

            await import_busybox(self.images)

    @staticmethod
    def _write_pod_files(directory: Path, config: cri.PodSandboxConfig, hostname: str) -> None:
        (directory / "hostname").write_text(hostname + "\n")
        (directory / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                         f"127.0.1.1\t{hostname}\n")
        dns = config.dns_config
        if dns is not None and (dns.servers or dns.searches or dns.options):
            lines = [f"nameserver {s}" for s in dns.servers]
            if dns.searches:
                lines.append("search " + " ".join(dns.searches))
            if dns.options:
                lines.append("options " + " ".join(dns.options))
            (directory / "resolv.conf").write_text("\n".join(lines) + "\n")
        else:
            try:
                shutil.copyfile("/etc/resolv.conf", directory / "resolv.conf")
            except OSError:
                (directory / "resolv.conf").write_text("")

    def _sandbox_ready(self, record: dict[str, Any]) -> bool:
        if record.get("state") != "ready":
            return False
        if (self._sandbox_dir(record["id"]) / "pause-exit.json").exists():
            return False
        state, _, ticks = _proc_state(record.get("pause_pid", 0))
        return state not in ("", "Z", "X") and (not record.get("start_ticks") or ticks == record["start_ticks"])

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        try:
            record = self._sandbox(pod_sandbox_id)
        except NotFound:
            return
        await self._adopt()
        containers = [c for c in self._container_ids() if self._container_record_or_none(c, pod_sandbox_id)]
        await asyncio.gather(*(self.stop_container(c, 0) for c in containers))
        if record.get("state") != "notready":
            record["state"] = "notready"
            self._save_sandbox(record)
        if record.get("pause_pid"):
            await self._runc("kill", record["pause_id"], "KILL", check=False)
            exit_file = self._sandbox_dir(pod_sandbox_id) / "pause-exit.json"
            if record["pause_pid"] in _WATCHED:
                await self._wait_exit(exit_file, 10)

    def _container_record_or_none(self, cid: str, sandbox_id: str) -> dict[str, Any] | None:
        record = _read_json(self._container_dir(cid) / "container.json")
        return record if record is not None and record.get("sandbox_id") == sandbox_id else None

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        try:
            record = self._sandbox(pod_sandbox_id)
        except NotFound:
            return
        await self.stop_pod_sandbox(pod_sandbox_id)
        containers = [c for c in self._container_ids() if self._container_record_or_none(c, pod_sandbox_id)]
        for cid in containers:
            await self.remove_container(cid)
        await self._delete(record["pause_id"])
        directory = self._sandbox_dir(pod_sandbox_id)
        netns_file = self.state_dir / "netns" / pod_sandbox_id
        if netns_file.exists():
            _umount(str(netns_file))
            netns_file.unlink(missing_ok=True)
        await self.images.release_rootfs(directory / "pause" / "rootfs")
        await asyncio.to_thread(cgroups.remove_tree, record["cgroup_path"])
        self._watchers.pop("pause-" + pod_sandbox_id, None)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> cri.PodSandboxStatus:
        record = self._sandbox_view(pod_sandbox_id)
        info: dict[str, str] = {}
        if verbose:
            info = {"pid": str(record.get("pause_pid", 0)), "netns": record.get("netns", ""),
                    "cgroup": record["cgroup_path"], "pause": record["pause_id"], "hostname": record["hostname"]}
        ns = record["namespace_options"]
        return cri.PodSandboxStatus(
            id=record["id"], metadata=cri.PodSandboxMetadata(**record["metadata"]),
            state=cri.PodSandboxState.SANDBOX_READY if self._sandbox_ready(record)
            else cri.PodSandboxState.SANDBOX_NOTREADY,
            created_at=record["created_at"],
            namespace_options=cri.NamespaceOption(network=cri.NamespaceMode(ns["network"]),
                                                  pid=cri.NamespaceMode(ns["pid"]), ipc=cri.NamespaceMode(ns["ipc"])),
            labels=dict(record["labels"]), annotations=dict(record["annotations"]),
            runtime_handler=record["runtime_handler"],
            info=info)

    def netns_path(self, pod_sandbox_id: str) -> str:
        """The sandbox's network namespace file ("" for host-network pods): what CNI gets as CNI_NETNS."""
        return str(self._sandbox(pod_sandbox_id).get("netns", ""))

    async def list_pod_sandbox(self, filter: cri.PodSandboxFilter | None = None) -> list[cri.PodSandbox]:
        await self._adopt()
        found = []
        for sid in self._sandbox_ids():
            if filter is not None and filter.id and filter.id != sid:
                continue
            record = self._records.peek(self._sandbox_dir(sid) / "sandbox.json")
            if record is None or (filter is not None
                                  and not cri.matches_labels(record.get("labels") or {}, filter.label_selector)):
                continue
            try:
                status = await self.pod_sandbox_status(sid)
            except NotFound:
                continue
            if filter is not None and filter.state is not None and status.state != filter.state:
                continue
            if filter is not None and not cri.matches_labels(status.labels, filter.label_selector):
                continue
            found.append(cri.PodSandbox(id=sid, metadata=status.metadata, state=status.state,
                                        created_at=status.created_at, labels=status.labels,
                                        annotations=status.annotations, runtime_handler=status.runtime_handler))
        return found

    async def port_forward(self, pod_sandbox_id: str, port: int) -> cri.PortStream:
        record = self._sandbox(pod_sandbox_id)
        if not 0 < port < 65536:
            raise Invalid.field("port", f"must be 1-65535, not {port}")
        if not self._sandbox_ready(record):
            raise Invalid(f"pod sandbox {pod_sandbox_id} is not ready")
        path = record.get("netns", "")
        try:
            if path:
                sock = await netns.run_in_netns(path, lambda: netns.connect_local(port))
            else:
                sock = await asyncio.to_thread(netns.connect_local, port)
        except OSError as exc:
            raise Retryable(f"port-forward to port {port} of pod sandbox {pod_sandbox_id}: {exc.strerror or exc}",
                            after=1.0) from exc
        reader, writer = await asyncio.open_connection(sock=sock)
        return _PortStream(reader, writer)

    # --- containers -----------------------------------------------------------------------------

    async def create_container(self, pod_sandbox_id: str, config: cri.ContainerConfig,
                               sandbox_config: cri.PodSandboxConfig) -> str:
        sandbox = self._sandbox(pod_sandbox_id)
        if not config.metadata.name:
            raise Invalid.field("metadata.name", "required")
        if not self._sandbox_ready(sandbox):
            raise Invalid(f"pod sandbox {pod_sandbox_id} is not ready")
        await self._adopt()
        image = await self.images.resolve(config.image.image)
        cid = uuid.uuid4().hex
        directory = self._container_dir(cid)
        directory.mkdir(parents=True)
        log_path = ""
        if config.log_path:
            log_path = config.log_path if os.path.isabs(config.log_path) else os.path.join(
                sandbox_config.log_directory or sandbox.get("log_directory") or str(directory), config.log_path)
        security = config.linux.security_context
        cgroup_path = os.path.join(sandbox["cgroup_path"], cid)
        record: dict[str, Any] = {
            "id": cid, "sandbox_id": pod_sandbox_id, "name": config.metadata.name,
            "attempt": config.metadata.attempt, "image": config.image.image, "image_ref": image.id,
            "labels": dict(config.labels), "annotations": dict(config.annotations), "log_path": log_path,
            "created_at": time.time_ns(), "started_at": 0, "pid": 0, "cgroup_path": cgroup_path,
            "mounts": [_mount_dict(m) for m in config.mounts],
            "resources": dataclasses.asdict(config.linux.resources), "state": "creating",
            "tty": config.tty, "stdin": config.stdin, "stdin_once": config.stdin_once,
        }
        self._save_container(record)
        log: CriLog | None = None
        io = _ContainerIO(Taps(), tty=config.tty, stdin_once=config.stdin_once)
        try:
            rootfs = (await self.images.rootfs(config.image.image, directory / "rootfs")).path
            spec = await asyncio.to_thread(self._container_spec, sandbox, config, image.runtime_config, rootfs,
                                           cgroup_path, security)
            (directory / "config.json").write_text(json.dumps(spec))
            log = CriLog(log_path)
            create = ("create", "--bundle", str(directory), "--pid-file", str(directory / "pid"))
            if config.tty:
                pumps = await self._create_on_terminal(cid, create, io, log)
            else:
                pumps = await self._create_on_pipes(cid, create, io, log, directory / "stdin" if config.stdin else None)
            self._track(cid, log, pumps, io)
            pid = int((directory / "pid").read_text().strip())
            record.update(pid=pid, start_ticks=_proc_state(pid)[2], state="created")
            record["stdio_holder"] = io.holder
            self._save_container(record)
            self._watch(cid, pid, directory / "exit.json", cgroup_path, pumps, record["start_ticks"], log)
        except BaseException as exc:
            io.close()
            if log is not None:
                log.close()
            with contextlib.suppress(Exception):
                await self.remove_container(cid)
            if isinstance(exc, RuncError):
                raise Invalid(f"create container {config.metadata.name}: {exc}") from exc
            raise
        return cid

    async def _create_on_pipes(self, cid: str, create: tuple[str, ...], io: _ContainerIO, log: CriLog,
                               stdin_fifo: Path | None) -> list[asyncio.Task[None]]:
        """``runc create`` with pipes for stdout and stderr, and a FIFO for stdin when the container has one."""
        fds: list[int] = []
        try:
            container_stdin: int | None = None
            if stdin_fifo is not None:
                os.mkfifo(stdin_fifo, 0o600)
                if io.stdin_once:
                    container_stdin = os.open(stdin_fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    fds.append(container_stdin)
                    os.set_blocking(container_stdin, True)
                else:
                    # The container holds a write end too, so its stdin never reaches end of file (Kubernetes'
                    # stdin without stdinOnce) and stays open across attachments and restarts of this runtime.
                    container_stdin = os.open(stdin_fifo, os.O_RDWR | os.O_CLOEXEC)
                    fds.append(container_stdin)
                io.stdin_fd = os.open(stdin_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            fds += [out_r, out_w, err_r, err_w]
            try:
                await self._runc(*create, cid, stdin=container_stdin, stdout=out_w, stderr=err_w)
            except RuncError:
                os.close(out_w)
                os.close(err_w)
                fds = [fd for fd in fds if fd not in (out_w, err_w)]
                os.set_blocking(err_r, False)
                detail = ""
                with contextlib.suppress(OSError):
                    detail = os.read(err_r, 65536).decode(errors="replace").strip()
                raise RuncError(f"runc create failed: {detail}") from None
            for fd in fds:
                if fd not in (out_r, err_r):
                    os.close(fd)
            fds = []
            io.holder = _holder({"stdout": out_r, "stderr": err_r})
            loop = asyncio.get_running_loop()
            return [loop.create_task(pump(out_r, "stdout", log, io.taps)),
                    loop.create_task(pump(err_r, "stderr", log, io.taps))]
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _console(self, start: Callable[[str], Awaitable[asyncio.subprocess.Process | None]]) -> int:
        """Run ``start`` with the path of a console socket and return the terminal master the OCI runtime sends
        there. ``start`` returns the runtime's process when that keeps running (a foreground exec): its exit before
        a master arrived is a failure rather than a wait."""
        with tempfile.TemporaryDirectory(prefix="mk-console-") as scratch:  # socket paths must stay short
            path = os.path.join(scratch, "console.sock")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(path)
                listener.listen(1)
                listener.setblocking(False)
                loop = asyncio.get_running_loop()
                receive = loop.create_task(terminal.receive_fd(listener))
                exited: asyncio.Task[int] | None = None
                try:
                    process = await start(path)
                    waiters: set[asyncio.Task[Any]] = {receive}
                    if process is not None:
                        exited = loop.create_task(process.wait())
                        waiters.add(exited)
                    await asyncio.wait(waiters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                    if receive.done():
                        master = receive.result()
                        os.set_blocking(master, False)
                        return master
                    detail = f"it exited with {exited.result()}" if exited is not None and exited.done() \
                        else "none within 10 s"
                    raise RuncError(f"{self.oci_runtime} sent no terminal to the console socket ({detail})")
                finally:
                    for task in (receive, exited):
                        if task is not None and not task.done():
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError, OSError):
                                await task

    async def _create_on_terminal(self, cid: str, create: tuple[str, ...], io: _ContainerIO,
                                  log: CriLog) -> list[asyncio.Task[None]]:
        """``runc create`` on a terminal: runc sends its master through a console socket; we keep it (for
        stdin, resizes and attachments) and pump a duplicate into the log as stdout."""

        async def start(path: str) -> None:
            await self._runc(*create, "--console-socket", path, cid)

        io.master = await self._console(start)
        io.stdin_fd = io.master
        io.holder = _holder({"terminal": io.master})
        io.taps.end("stderr")
        return [asyncio.get_running_loop().create_task(pump(os.dup(io.master), "stdout", log, io.taps))]

    def _container_spec(self, sandbox: dict[str, Any], config: cri.ContainerConfig, image: dict[str, Any],
                        rootfs: Path, cgroup_path: str,
                        security: cri.LinuxContainerSecurityContext) -> dict[str, Any]:
        args = bundle.process_args(config, image)
        uid, gid, extra_gids = bundle.lookup_user(rootfs, str(image.get("User") or ""))
        if security.run_as_username:
            uid, gid, extra_gids = bundle.lookup_user(rootfs, security.run_as_username)
        if security.run_as_user is not None:
            uid = security.run_as_user
        if security.run_as_group is not None:
            gid = security.run_as_group
        gids = sorted(set(extra_gids) | set(security.supplemental_groups))
        env = bundle.merge_env(list(image.get("Env") or []), config.envs, {"HOSTNAME": sandbox["hostname"]})
        mounts = bundle.standard_mounts(privileged=security.privileged)
        directory = self._sandbox_dir(sandbox["id"])
        destinations = {m.container_path for m in config.mounts}
        for name in ("hostname", "hosts", "resolv.conf"):
            if f"/etc/{name}" not in destinations:
                mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(directory / name),
                               "options": ["rbind", "rprivate", "ro" if security.readonly_rootfs else "rw"]})
        mounts += [bundle.bind_mount(m) for m in config.mounts]
        pause_pid = sandbox["pause_pid"]
        ns = security.namespace_options
        namespaces: list[dict[str, Any]] = [{"type": "mount"}]
        sandbox_ns = sandbox["namespace_options"]
        if sandbox_ns["network"] != cri.NamespaceMode.NODE:
            namespaces.append({"type": "network", "path": sandbox.get("netns") or f"/proc/{pause_pid}/ns/net"})
        if sandbox_ns["ipc"] != cri.NamespaceMode.NODE:
            namespaces.append({"type": "ipc", "path": f"/proc/{pause_pid}/ns/ipc"})
        namespaces.append({"type": "uts", "path": f"/proc/{pause_pid}/ns/uts"})
        if ns.pid == cri.NamespaceMode.POD and sandbox_ns["pid"] != cri.NamespaceMode.NODE:
            namespaces.append({"type": "pid", "path": f"/proc/{pause_pid}/ns/pid"})
        elif ns.pid == cri.NamespaceMode.TARGET and ns.target_id:
            target = self._container(ns.target_id)
            namespaces.append({"type": "pid", "path": f"/proc/{target['pid']}/ns/pid"})
        elif ns.pid != cri.NamespaceMode.NODE:
            namespaces.append({"type": "pid"})
        devices, rules = [], []
        for device in config.devices:
            entry, rule = bundle.device_entry(device)
            devices.append(entry)
            rules.append(rule)
        res = config.linux.resources
        return bundle.spec(
            args=args, env=env, cwd=config.working_dir or str(image.get("WorkingDir") or "/"), uid=uid, gid=gid,
            additional_gids=gids, hostname="", readonly=security.readonly_rootfs,
            capabilities=bundle.capability_set(security), mounts=mounts, namespaces=namespaces,
            cgroups_path=cgroup_path, linux_resources=bundle.resources(res), devices=devices, device_rules=rules,
            privileged=security.privileged, no_new_privileges=security.no_new_privs,
            oom_score_adj=max(0, res.oom_score_adj),
            masked=security.masked_paths or bundle.MASKED_PATHS,
            readonly_paths=security.readonly_paths or bundle.READONLY_PATHS, terminal=config.tty)

    async def start_container(self, container_id: str) -> None:
        record = self._container(container_id)
        if record.get("state") != "created" or (self._container_dir(container_id) / "exit.json").exists():
            raise Invalid(f"container {container_id} is not in the created state")
        started = time.time_ns()
        try:
            await self._runc("start", container_id)
        except RuncError as exc:
            raise Invalid(f"start container {record['name']}: {exc}") from exc
        record.update(state="running", started_at=started)
        self._save_container(record)

    async def stop_container(self, container_id: str, timeout: int) -> None:  # noqa: ASYNC109
        try:
            record = self._container(container_id)
        except NotFound:
            return
        await self._adopt()
        exit_file = self._container_dir(container_id) / "exit.json"
        if not record.get("pid") or exit_file.exists():
            return
        if timeout > 0 and record.get("state") == "running":
            await self._runc("kill", container_id, "TERM", check=False)
            if await self._wait_for(record, exit_file, float(timeout)):
                return
        await self._runc("kill", container_id, "KILL", check=False)
        await self._wait_for(record, exit_file, 10.0)

    async def _wait_for(self, record: dict[str, Any], exit_file: Path, limit: float) -> bool:
        if record["pid"] not in _WATCHED and not _exists(exit_file):
            # Nobody in this process reaps it: adopt (possible after a restart of the runtime).
            self._watch(record["id"], record["pid"], exit_file, record["cgroup_path"], [],
                        record.get("start_ticks", 0))
        return await self._wait_exit(exit_file, limit)

    async def remove_container(self, container_id: str) -> None:
        try:
            record = self._container(container_id)
        except NotFound:
            return
        exit_file = self._container_dir(container_id) / "exit.json"
        if record.get("pid") and not exit_file.exists():
            await self.stop_container(container_id, 0)
        await self._delete(container_id)
        for task in self._pumps.pop(container_id, []):
            if not task.done():
                task.cancel()
        log = self._logs.pop(container_id, None)
        if log is not None:
            log.close()
        io = self._io.pop(container_id, None)
        if io is not None:
            io.close()
        await asyncio.to_thread(_end_holder, record.get("stdio_holder") or {})
        self._watchers.pop(container_id, None)
        self._cpu_samples.pop(container_id, None)
        directory = self._container_dir(container_id)
        await self.images.release_rootfs(directory / "rootfs")
        await asyncio.to_thread(cgroups.remove_tree, record["cgroup_path"])
        await asyncio.to_thread(shutil.rmtree, directory, True)

    def _state_of(self, record: dict[str, Any]) -> tuple[cri.ContainerState, dict[str, Any] | None]:
        exit_info = self._records.peek(self._container_dir(record["id"]) / "exit.json")
        if exit_info is not None:
            return cri.ContainerState.CONTAINER_EXITED, exit_info
        state = record.get("state")
        if state == "created":
            return cri.ContainerState.CONTAINER_CREATED, None
        if state == "running":
            return cri.ContainerState.CONTAINER_RUNNING, None
        return cri.ContainerState.CONTAINER_UNKNOWN, None

    async def list_containers(self, filter: cri.ContainerFilter | None = None) -> list[cri.Container]:
        await self._adopt()
        found = []
        for cid in self._container_ids():
            if filter is not None and filter.id and filter.id != cid:
                continue
            record = self._records.peek(self._container_dir(cid) / "container.json")
            if record is None:
                continue
            if filter is not None and filter.pod_sandbox_id and record["sandbox_id"] != filter.pod_sandbox_id:
                continue
            if filter is not None and not cri.matches_labels(record["labels"], filter.label_selector):
                continue
            state, _ = self._state_of(record)
            if filter is not None and filter.state is not None and filter.state != state:
                continue
            found.append(cri.Container(
                id=cid, pod_sandbox_id=record["sandbox_id"],
                metadata=cri.ContainerMetadata(record["name"], record["attempt"]),
                image=cri.ImageSpec(record["image"]), image_ref=record["image_ref"], state=state,
                created_at=record["created_at"], labels=dict(record["labels"]),
                annotations=dict(record["annotations"])))
        return found

    async def container_status(self, container_id: str, verbose: bool = False) -> cri.ContainerStatus:
        record = self._container_view(container_id)
        await self._adopt()
        state, exit_info = self._state_of(record)
        exit_code, finished, reason, message = 0, 0, "", ""
        if exit_info is not None:
            exit_code, finished = int(exit_info["exit_code"]), int(exit_info["finished_at"])
            if exit_info.get("oom"):
                reason = cri.REASON_OOM_KILLED
            elif not exit_info.get("known", True):
                reason, message = "Unknown", "the exit status was lost (the container exited unwatched)"
            else:
                reason = cri.REASON_COMPLETED if exit_code == 0 else cri.REASON_ERROR
        return cri.ContainerStatus(
            id=container_id, metadata=cri.ContainerMetadata(record["name"], record["attempt"]), state=state,
            created_at=record["created_at"], started_at=record.get("started_at", 0), finished_at=finished,
            exit_code=exit_code, image=cri.ImageSpec(record["image"]), image_ref=record["image_ref"],
            reason=reason, message=message, labels=dict(record["labels"]), annotations=dict(record["annotations"]),
            mounts=tuple(cri.Mount(**{**m, "propagation": cri.MountPropagation(m["propagation"])})
                         for m in record["mounts"]),
            log_path=record["log_path"], resources=_resources_from(record.get("resources")))

    def container_pid(self, container_id: str) -> int:
        """The host pid of the container's main process (0 before create finished)."""
        return int(self._container(container_id).get("pid", 0))

    async def update_container_resources(self, container_id: str, resources: cri.LinuxContainerResources) -> None:
        record = self._container(container_id)
        spec = bundle.resources(resources)
        try:
            await self._runc("update", "--resources", "-", container_id, stdin=json.dumps(spec).encode())
        except RuncError as exc:
            raise Invalid(f"update container {record['name']}: {exc}") from exc
        record["resources"] = dataclasses.asdict(resources)
        self._save_container(record)

    async def reopen_container_log(self, container_id: str) -> None:
        record = self._container(container_id)
        state, _ = self._state_of(record)
        if state != cri.ContainerState.CONTAINER_RUNNING:
            raise Invalid(f"container {container_id} is not running")
        log = self._logs.get(container_id)
        if log is None:
            raise Unsupported(f"container {container_id}'s output is not pumped by this runtime instance")
        log.reopen()

    def _require_running(self, container_id: str) -> dict[str, Any]:
        record = self._container(container_id)
        state, _ = self._state_of(record)
        if state != cri.ContainerState.CONTAINER_RUNNING:
            raise Invalid(f"container {container_id} is not running")
        return record

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: int = 0) -> cri.ExecSyncResponse:  # noqa: ASYNC109
        self._require_running(container_id)
        if not cmd:
            raise Invalid.field("cmd", "required")
        pid_file = self._container_dir(container_id) / f"exec-{uuid.uuid4().hex[:12]}.pid"
        process = await asyncio.create_subprocess_exec(
            self.runc, "--root", str(self.runc_root), "exec", "--pid-file", str(pid_file), container_id, *cmd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout or None)
        except TimeoutError:
            await _stop_exec(process, pid_file)
            raise Retryable(f"exec in {container_id} timed out after {timeout}s") from None
        finally:
            pid_file.unlink(missing_ok=True)
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=process.returncode or 0)

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool = False,
                   stdin: bool = False) -> cri.ContainerStream:
        self._require_running(container_id)
        if not cmd:
            raise Invalid.field("cmd", "required")
        pid_file = self._container_dir(container_id) / f"exec-{uuid.uuid4().hex[:12]}.pid"
        base = (self.runc, "--root", str(self.runc_root), "exec")
        if not tty:
            process = await asyncio.create_subprocess_exec(
                *base, "--pid-file", str(pid_file), container_id, *cmd,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            return _Stream(process, stdin, pid_file)
        if self.oci_runtime == "crun":
            return await self._crun_tty_exec(base, container_id, cmd, stdin, pid_file)
        master, slave = terminal.open_pty()
        try:
            process = await asyncio.create_subprocess_exec(
                *base, "--tty", "--pid-file", str(pid_file), container_id, *cmd,
                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return _TtyExec(process, master, stdin, pid_file)

    async def _crun_tty_exec(self, base: tuple[str, ...], container_id: str, cmd: list[str], stdin: bool,
                             pid_file: Path) -> _TtyExec:
        """crun 1.8 relays a foreground ``exec --tty`` through a terminal of its own and ignores SIGWINCH, so
        resizes after the start would be lost; given a console socket (which runc refuses without --detach) it
        hands over the container's terminal itself and still waits for the process and returns its status."""
        spawned: list[asyncio.subprocess.Process] = []

        async def start(path: str) -> asyncio.subprocess.Process:
            spawned.append(await asyncio.create_subprocess_exec(
                *base, "--tty", "--console-socket", path, "--pid-file", str(pid_file), container_id, *cmd,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True))
            return spawned[0]

        try:
            master = await self._console(start)
        except BaseException as exc:
            if spawned:
                await _stop_exec(spawned[0], pid_file)
            if isinstance(exc, RuncError):
                raise Invalid(f"exec in {container_id}: {exc}") from exc
            raise
        return _TtyExec(spawned[0], master, stdin, pid_file)

    async def attach(self, container_id: str, *, stdin: bool = False) -> cri.ContainerStream:
        record = self._require_running(container_id)
        await self._adopt()
        io = self._io.get(container_id)
        if io is None:
            raise Unsupported(f"container {container_id}'s output is not held by this runtime instance"
                              + (" (the holder of its terminal is gone)" if record.get("tty") else ""))
        if stdin and not record.get("stdin"):
            raise Invalid.field("stdin", f"container {record['name']} was created without stdin; set stdin: true "
                                "in its spec to attach with input")
        return _Attachment(io, stdin, self._container_dir(container_id) / "exit.json", self._wait_exit)

    # --- stats ----------------------------------------------------------------------------------

    async def container_stats(self, container_id: str) -> cri.ContainerStats:
        record = self._container(container_id)
        return await asyncio.to_thread(self._stats, record)

    def _stats(self, record: dict[str, Any]) -> cri.ContainerStats:
        now = time.time_ns()
        path = record["cgroup_path"]
        usage = cgroups.read_int(cgroups.path_in("cpuacct", path) / "cpuacct.usage")
        previous = self._cpu_samples.get(record["id"])
        nano_cores = 0
        if previous is not None and now > previous[0]:
            nano_cores = max(0, (usage - previous[1]) * 1_000_000_000 // (now - previous[0]))
        self._cpu_samples[record["id"]] = (now, usage)
        memory_dir = cgroups.path_in("memory", path)
        mem_usage = cgroups.read_int(memory_dir / "memory.usage_in_bytes")
        stat = cgroups.read_keyed(memory_dir / "memory.stat")
        limit = cgroups.read_int(memory_dir / "memory.limit_in_bytes")
        working_set = max(0, mem_usage - stat.get("total_inactive_file", 0))
        available = max(0, limit - working_set) if 0 < limit < (1 << 62) else 0
        rootfs = self._container_dir(record["id"]) / "rootfs"
        return cri.ContainerStats(
            id=record["id"], metadata=cri.ContainerMetadata(record["name"], record["attempt"]),
            labels=dict(record["labels"]), annotations=dict(record["annotations"]),
            cpu=cri.CpuUsage(timestamp=now, usage_core_nano_seconds=usage, usage_nano_cores=nano_cores),
            memory=cri.MemoryUsage(timestamp=now, working_set_bytes=working_set, available_bytes=available,
                                   usage_bytes=mem_usage, rss_bytes=stat.get("total_rss", 0),
                                   page_faults=stat.get("total_pgfault", 0),
                                   major_page_faults=stat.get("total_pgmajfault", 0)),
            writable_layer=cri.FilesystemUsage(timestamp=now, mountpoint=str(rootfs)))

    async def list_container_stats(self, filter: cri.ContainerFilter | None = None) -> list[cri.ContainerStats]:
        found = []
        for container in await self.list_containers(filter):
            with contextlib.suppress(NotFound):
                found.append(await self.container_stats(container.id))
        return found

    # --- housekeeping ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop this instance's watchers and log pumps (containers keep running)."""
        tasks: list[asyncio.Task[None]] = [*self._watchers.values(),
                                           *(t for ts in self._pumps.values() for t in ts)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()
        self._pumps.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        for io in self._io.values():
            io.close()
        self._io.clear()


@dataclasses.dataclass(frozen=True)
class RuncRuntimePack:
    """What the ``runc`` factory returns (cri.Runtime)."""

    runtime: RuncRuntime
    images: ImageStore
    capabilities: cri.RuntimeCapabilities


CAPABILITIES = cri.RuntimeCapabilities(
    networks_pods_itself=False, supports_exec_streaming=True, supports_attach=True, supports_tty=True,
    supports_port_forward=True,
    supports_stats=True, supports_update_resources=True, cgroup_driver="cgroupfs")


def create_runtime(options: dict[str, Any] | None = None) -> RuncRuntimePack:
    """The ``Registrar.runtimes`` factory.

    Options (all optional): ``root`` / ``rootDir`` (default ``/var/lib/microkube/runc``; images under
    ``<root>/images``, state under ``<root>/state``), ``stateDir`` (overrides the state dir), ``imageDir``
    (overrides the image dir), ``ociRuntime`` (``runc``, the default, or ``crun``; Debian's ``crun`` package),
    ``runc`` (the OCI runtime's binary, default /usr/sbin/runc, or /usr/bin/crun with ``ociRuntime: crun``; on a
    hybrid cgroup host crun is run through a script the pack writes to ``<stateDir>/crun-wrapper``, see
    ``write_crun_wrapper``), ``cgroupParent`` (cgroupfs path,
    default ``<own memory cgroup>/microkube``), ``pauseImage`` (default the busybox image, imported from
    the host's /bin/busybox when absent), ``pinned`` (image references never collected).
    """
    options = dict(options or {})
    root = Path(str(options.get("root") or options.get("rootDir") or "/var/lib/microkube/runc"))
    state = Path(str(options.get("stateDir") or options.get("state_dir") or root / "state"))
    image_dir = Path(str(options.get("imageDir") or options.get("image_dir") or root / "images"))
    pause_image = str(options.get("pauseImage") or options.get("pause_image") or DEFAULT_PAUSE_IMAGE)
    pinned = [pause_image, *[str(p) for p in options.get("pinned") or []]]
    images = ImageStore(image_dir, pinned=pinned,
                        insecure_registries=[str(r) for r in options.get("insecureRegistries") or []])
    parent = options.get("cgroupParent", options.get("cgroup_parent"))
    oci_runtime = str(options.get("ociRuntime") or options.get("oci_runtime") or "runc")
    runtime = RuncRuntime(state, images, runc=str(options.get("runc") or ""), oci_runtime=oci_runtime,
                          cgroup_parent=str(parent) if parent else None, pause_image=pause_image)
    return RuncRuntimePack(runtime, images, CAPABILITIES)
