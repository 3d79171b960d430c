"""host-local IPAM: addresses from one pod CIDR, allocations kept on disk.

The layout is the reference ``host-local`` plugin's (``/var/lib/cni/networks/<network>/``): one file per
allocated IP, named by the address and holding ``<container id>\\r\\n<ifname>``, plus ``last_reserved_ip.0``
so allocation goes round-robin instead of reusing a just-freed address at once.

Crash safety: an allocation file is written to a temporary name and then ``link()``-ed to its final name,
which is atomic and fails if the name exists. A crash leaves either no allocation or a complete one (and at
worst a stray temporary file, removed at the next start). A new instance reads the directory at start.

Thread-safe (one lock); one instance owns a state directory (a second process would at worst see EEXIST and
pick the next address).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path

from microkube_interfaces.cni import CNIError, ErrorCode

LAST_RESERVED = "last_reserved_ip.0"
_TMP_PREFIX = ".tmp-"


class HostLocalIPAM:
    def __init__(self, directory: str | os.PathLike[str], subnet: ipaddress.IPv4Network) -> None:
        if subnet.num_addresses < 4:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "pod CIDR too small", f"{subnet}: need at least a /30")
        self.directory = Path(directory)
        self.subnet = subnet
        #: The bridge's address: the first host address.
        self.gateway = subnet.network_address + 1
        self._first = int(subnet.network_address) + 2
        self._last = int(subnet.broadcast_address) - 1
        self._lock = threading.Lock()
        self._by_ip: dict[ipaddress.IPv4Address, tuple[str, str]] = {}
        self._by_owner: dict[tuple[str, str], ipaddress.IPv4Address] = {}
        self._last_reserved: int | None = None
        self._load()

    # -------------------------------------------------------------------------------- disk state

    def _load(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, "cannot create the IPAM state directory", str(exc)) from None
        for entry in os.scandir(self.directory):
            if entry.name.startswith(_TMP_PREFIX):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
                continue
            if entry.name == LAST_RESERVED:
                try:
                    self._last_reserved = int(ipaddress.IPv4Address(Path(entry.path).read_text().strip()))
                except (OSError, ValueError):
                    self._last_reserved = None
                continue
            try:
                ip = ipaddress.IPv4Address(entry.name)
            except ValueError:
                continue  # "lock" and anything else that is not an address
            try:
                lines = Path(entry.path).read_text().splitlines()
            except OSError:
                continue
            owner = (lines[0].strip() if lines else "", lines[1].strip() if len(lines) > 1 else "")
            self._by_ip[ip] = owner
            self._by_owner[owner] = ip

    def _write_allocation(self, ip: ipaddress.IPv4Address, container_id: str, ifname: str) -> bool:
        """Create the allocation file atomically; False when the address is taken on disk already."""
        final = self.directory / str(ip)
        temporary = self.directory / f"{_TMP_PREFIX}{ip}-{os.getpid()}-{threading.get_ident()}"
        try:
            temporary.write_text(f"{container_id}\r\n{ifname}")
            try:
                os.link(temporary, final)
            except FileExistsError:
                return False
            finally:
                os.unlink(temporary)
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, "cannot write the IP allocation", str(exc)) from None
        return True

    def _write_last_reserved(self, ip: ipaddress.IPv4Address) -> None:
        path = self.directory / LAST_RESERVED
        temporary = self.directory / f"{_TMP_PREFIX}{LAST_RESERVED}-{os.getpid()}-{threading.get_ident()}"
        try:
            temporary.write_text(str(ip))
            os.replace(temporary, path)
        except OSError:
            pass  # only a hint for round-robin
        self._last_reserved = int(ip)

    # ---------------------------------------------------------------------------------- queries

    def lookup(self, container_id: str, ifname: str) -> ipaddress.IPv4Address | None:
        with self._lock:
            return self._by_owner.get((container_id, ifname))

    def allocations(self) -> dict[ipaddress.IPv4Address, tuple[str, str]]:
        """IP → (container id, ifname) of every allocation."""
        with self._lock:
            return dict(self._by_ip)

    def free(self) -> int:
        with self._lock:
            return (self._last - self._first + 1) - len(self._by_ip)

    # -------------------------------------------------------------------------------- mutations

    def allocate(self, container_id: str, ifname: str) -> ipaddress.IPv4Address:
        """Reserve the next free address for ``(container_id, ifname)``.

        Raises ``CNIError``: ATTACHMENT_EXISTS if that pair holds an address, NO_ADDRESSES if none is free,
        IO_FAILURE if the state directory cannot be written.
        """
        owner = (container_id, ifname)
        with self._lock:
            held = self._by_owner.get(owner)
            if held is not None:
                raise CNIError(ErrorCode.ATTACHMENT_EXISTS, "duplicate allocation is not allowed",
                               f"{held} is already allocated to container {container_id} interface {ifname}")
            size = self._last - self._first + 1
            start = self._last_reserved + 1 if self._last_reserved is not None else self._first
            if not self._first <= start <= self._last:
                start = self._first
            for step in range(size):
                candidate = ipaddress.IPv4Address(self._first + (start - self._first + step) % size)
                if candidate in self._by_ip:
                    continue
                if not self._write_allocation(candidate, container_id, ifname):
                    self._by_ip[candidate] = ("", "")  # taken on disk by someone we did not know of
                    continue
                self._by_ip[candidate] = owner
                self._by_owner[owner] = candidate
                self._write_last_reserved(candidate)
                return candidate
        raise CNIError(ErrorCode.NO_ADDRESSES, "no free address", f"every address of {self.subnet} is allocated")

    def release(self, container_id: str, ifname: str) -> ipaddress.IPv4Address | None:
        """Release the address of ``(container_id, ifname)``; idempotent (returns None when none was held)."""
        with self._lock:
            ip = self._by_owner.pop((container_id, ifname), None)
            if ip is None:
                return None
            self._by_ip.pop(ip, None)
            self._unlink(ip)
            return ip

    def release_except(self, valid: set[tuple[str, str]]) -> list[ipaddress.IPv4Address]:
        """GC: release every allocation whose (container id, ifname) is not in ``valid``."""
        with self._lock:
            stale = [(owner, ip) for owner, ip in self._by_owner.items() if owner not in valid]
            for owner, ip in stale:
                del self._by_owner[owner]
                self._by_ip.pop(ip, None)
                self._unlink(ip)
            return [ip for _, ip in stale]

    def _unlink(self, ip: ipaddress.IPv4Address) -> None:
        try:
            os.unlink(self.directory / str(ip))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, "cannot remove the IP allocation", str(exc)) from None
