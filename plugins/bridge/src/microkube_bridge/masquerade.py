"""Masquerade for traffic leaving the pod CIDR, and ip_forward.

nftables: a table of our own (``inet microkube`` by default) with one ``postrouting`` NAT chain, replaced as a
whole in one atomic ``nft -f -`` transaction, so setting it up twice is the same as once and nothing outside
our table is touched. Without ``nft``, iptables (usually iptables-nft) gets a chain of our own in the ``nat``
table, jumped to from POSTROUTING. One rule per network, not per pod: ADD and DEL never touch the firewall.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from microkube_interfaces.cni import CNIError, ErrorCode

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
_MULTICAST = "224.0.0.0/4"


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _fail(what: str, result: subprocess.CompletedProcess[str]) -> CNIError:
    return CNIError(ErrorCode.INTERNAL, f"cannot set up masquerade: {what}",
                    (result.stderr or result.stdout).strip())


def backend() -> str:
    """"nft", "iptables", or "" when neither tool exists."""
    if shutil.which("nft"):
        return "nft"
    if shutil.which("iptables"):
        return "iptables"
    return ""


def _chain(table: str) -> str:
    return f"{table.upper().replace('-', '_')}-POSTROUTING"[:28]


def ensure(table: str, subnet: ipaddress.IPv4Network) -> str:
    """Masquerade traffic from ``subnet`` to anywhere outside it (except multicast); returns the backend used."""
    tool = backend()
    if tool == "nft":
        script = (
            f"add table inet {table}\n"
            f"add chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
            f"flush chain inet {table} postrouting\n"
            f"add rule inet {table} postrouting ip saddr {subnet} ip daddr != {subnet} "
            f"ip daddr != {_MULTICAST} masquerade comment \"microkube pod network\"\n"
        )
        result = _run(["nft", "-f", "-"], script)
        if result.returncode != 0:
            raise _fail("nft", result)
        return tool
    if tool == "iptables":
        chain = _chain(table)
        _run(["iptables", "-w", "-t", "nat", "-N", chain])  # exists already: fine
        for argv in (["-F", chain],
                     ["-A", chain, "-d", str(subnet), "-j", "RETURN"],
                     ["-A", chain, "-d", _MULTICAST, "-j", "RETURN"],
                     ["-A", chain, "-j", "MASQUERADE"]):
            result = _run(["iptables", "-w", "-t", "nat", *argv])
            if result.returncode != 0:
                raise _fail("iptables", result)
        jump = ["POSTROUTING", "-s", str(subnet), "-j", chain]
        if _run(["iptables", "-w", "-t", "nat", "-C", *jump]).returncode != 0:
            result = _run(["iptables", "-w", "-t", "nat", "-A", *jump])
            if result.returncode != 0:
                raise _fail("iptables", result)
        return tool
    raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "cannot set up masquerade", "neither nft nor iptables is installed")


def remove(table: str, subnet: ipaddress.IPv4Network) -> None:
    """Remove what ``ensure`` set up. Idempotent."""
    tool = backend()
    if tool == "nft":
        _run(["nft", "delete", "table", "inet", table])
    elif tool == "iptables":
        chain = _chain(table)
        _run(["iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", str(subnet), "-j", chain])
        _run(["iptables", "-w", "-t", "nat", "-F", chain])
        _run(["iptables", "-w", "-t", "nat", "-X", chain])


def present(table: str) -> bool:
    tool = backend()
    if tool == "nft":
        return _run(["nft", "list", "table", "inet", table]).returncode == 0
    if tool == "iptables":
        return _run(["iptables", "-w", "-t", "nat", "-S", _chain(table)]).returncode == 0
    return False


def enable_ip_forward() -> str:
    """Set ``net.ipv4.ip_forward=1`` (host-wide: the bridge routes pod traffic); returns the previous value."""
    try:
        with open(IP_FORWARD) as handle:
            previous = handle.read().strip()
        if previous != "1":
            with open(IP_FORWARD, "w") as handle:
                handle.write("1")
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, "cannot enable net.ipv4.ip_forward", str(exc)) from None
    return previous


def set_ip_forward(value: str) -> None:
    with open(IP_FORWARD, "w") as handle:
        handle.write(value)
