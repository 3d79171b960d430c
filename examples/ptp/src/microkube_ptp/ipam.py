"""Host-local address allocation: one file per allocated address, named by the address.

An allocation file appears complete or not at all: its content (the owner's container id and interface name) is
written and fsynced to a private temporary file, which is then hard-linked to the address's name. ``link`` fails
when the name exists, so two allocators (threads or processes sharing the directory) never get the same address,
and a crash leaves either the whole allocation or at most an orphaned temporary file, which GC removes. Allocation
starts after the last address handed out, so an address just released is not reused at once.

All methods block (file I/O); callers run them off the event loop.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

from microkube_interfaces.cni import Attachment, CNIError, ErrorCode

_TMP_PREFIX = ".tmp-"
_LAST = "last-reserved"


class AddressPool:
    """The /32 addresses of ``network`` (its network and broadcast addresses excluded when it has them)."""

    def __init__(self, directory: Path, network: ipaddress.IPv4Network) -> None:
        self.directory = directory
        self.network = network
        if network.prefixlen >= 31:
            self._first, self._last = int(network.network_address), int(network.broadcast_address)
        else:
            self._first, self._last = int(network.network_address) + 1, int(network.broadcast_address) - 1

    @property
    def size(self) -> int:
        return self._last - self._first + 1

    def create(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot create the state directory {self.directory}",
                           f"{exc.strerror}; choose a writable stateDir") from None

    def allocations(self) -> dict[ipaddress.IPv4Address, Attachment | None]:
        """Every allocated address (also those outside the current range) → its owner (None: unreadable)."""
        found: dict[ipaddress.IPv4Address, Attachment | None] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return found
        for entry in entries:
            try:
                address = ipaddress.IPv4Address(entry.name)
            except ValueError:
                continue  # temporary files and the last-reserved hint
            found[address] = self._read_owner(Path(entry.path))
        return found

    def owned_by(self, owner: Attachment) -> list[ipaddress.IPv4Address]:
        return sorted(a for a, o in self.allocations().items() if o == owner)

    def free(self) -> int:
        return self.size - sum(1 for a in self.allocations() if a in self.network)

    def allocate(self, owner: Attachment) -> ipaddress.IPv4Address:
        """Reserve a free address for ``owner``; ``CNIError(NO_ADDRESSES)`` when the range is full."""
        self.create()
        taken = set(self.allocations())
        tmp = self.directory / f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        try:
            self._write_synced(tmp, f"{owner.container_id}\n{owner.ifname}\n")
            for address in self._candidates():
                if address in taken:
                    continue
                try:
                    os.link(tmp, self.directory / str(address))
                except FileExistsError:
                    continue  # another allocator was faster
                self._sync_directory()
                self._remember_last(address)
                return address
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot write an allocation under {self.directory}",
                           exc.strerror or str(exc)) from None
        finally:
            tmp.unlink(missing_ok=True)
        raise CNIError(ErrorCode.NO_ADDRESSES, f"no free address in podCIDR {self.network}",
                       f"all {self.size} addresses are allocated; delete pods or give the node a larger podCIDR")

    def release(self, address: ipaddress.IPv4Address) -> None:
        try:
            (self.directory / str(address)).unlink(missing_ok=True)
            self._sync_directory()
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot release {address} under {self.directory}",
                           exc.strerror or str(exc)) from None

    def release_owner(self, owner: Attachment) -> list[ipaddress.IPv4Address]:
        released = self.owned_by(owner)
        for address in released:
            self.release(address)
        return released

    def remove_orphaned_temporaries(self) -> None:
        """Remove temporary files of allocators that died (a crash between write and link)."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith(_TMP_PREFIX):
                continue
            pid = entry.name[len(_TMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                Path(entry.path).unlink(missing_ok=True)

    # -- internals ---------------------------------------------------------------------------------

    def _candidates(self) -> Iterator[ipaddress.IPv4Address]:
        start = self._first
        last = self._read_last()
        if last is not None and self._first <= int(last) < self._last:
            start = int(last) + 1
        for value in range(start, self._last + 1):
            yield ipaddress.IPv4Address(value)
        for value in range(self._first, start):
            yield ipaddress.IPv4Address(value)

    def _read_owner(self, path: Path) -> Attachment | None:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if len(lines) != 2 or not all(lines):
            return None
        return Attachment(lines[0], lines[1])

    def _read_last(self) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address((self.directory / _LAST).read_text().strip())
        except (OSError, ValueError):
            return None

    def _remember_last(self, address: ipaddress.IPv4Address) -> None:
        # Only a hint: written atomically, not fsynced.
        tmp = self.directory / f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        try:
            tmp.write_text(str(address))
            os.replace(tmp, self.directory / _LAST)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _write_synced(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True
