"""Pod network figures (issue: node agent). Prints one JSON line per figure.

CNI ADD time of microkube's ``bridge`` network (in-process, pyroute2 without forks) against the reference CNI
binaries doing the same setup: ``/usr/lib/cni/loopback`` (lo up) then ``/usr/lib/cni/bridge`` with ``host-local``
IPAM, gateway on the bridge, default route, hairpin mode and masquerade. 50 pods each, every pod in a fresh
netns created beforehand (not timed); one warm-up pod each first (creating the bridge, the NAT rules and, for
ours, importing pyroute2) is not counted.

- ADD median and p99, ours and reference (ms)
- ratio of the medians, ours / reference (target <= 0.7)
- DEL median, ours and reference (ms)

Needs root. Uses private bridges (``mkbench0``, ``mkbref0``), 10.99.200.0/24 and 10.99.201.0/24, and removes
everything afterwards (``net.ipv4.ip_forward`` is restored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from microkube_bridge import BridgeNetwork, create_netns, delete_netns
from microkube_interfaces.cni import AttachmentRequest

CNI_PATH = "/usr/lib/cni"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_ours(pods: int, workdir: Path) -> tuple[list[float], list[float]]:
    network = BridgeNetwork.from_options({"podCIDR": "10.99.200.0/24", "bridge": "mkbench0", "nftTable": "mkbench",
                                          "stateDir": str(workdir / "ours-state")})
    paths = [str(workdir / f"ours-{i}") for i in range(pods + 1)]
    for path in paths:
        await create_netns(path)
    adds: list[float] = []
    dels: list[float] = []
    try:
        for i, path in enumerate(paths):
            start = time.perf_counter()
            await network.add(AttachmentRequest(f"bench{i}", path))
            if i:  # the first one is the warm-up
                adds.append((time.perf_counter() - start) * 1000)
        for i, path in enumerate(paths):
            start = time.perf_counter()
            await network.delete(AttachmentRequest(f"bench{i}", path))
            if i:
                dels.append((time.perf_counter() - start) * 1000)
    finally:
        for path in paths:
            await delete_netns(path)
        await network.teardown()
    return adds, dels


def _exec(plugin: str, command: str, container: str, netns: str, ifname: str, conf: dict[str, Any]) -> None:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    result = subprocess.run([f"{CNI_PATH}/{plugin}"], input=json.dumps(conf).encode(), env=env,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{plugin} {command} failed: {result.stdout.decode()} {result.stderr.decode()}")


async def bench_reference(pods: int, workdir: Path, *, masquerade: bool = True) -> tuple[list[float], list[float]]:
    bridge_conf = {
        "cniVersion": "1.0.0", "name": "mkbench-ref", "type": "bridge", "bridge": "mkbref0",
        "isGateway": True, "isDefaultGateway": True, "ipMasq": masquerade, "hairpinMode": True,
        "ipam": {"type": "host-local", "subnet": "10.99.201.0/24", "dataDir": str(workdir / f"ref-state-{masquerade}")},
    }
    loopback_conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    paths = [str(workdir / f"ref-{masquerade}-{i}") for i in range(pods + 1)]
    for path in paths:
        await create_netns(path)
    adds: list[float] = []
    dels: list[float] = []
    try:
        for i, path in enumerate(paths):
            start = time.perf_counter()
            _exec("loopback", "ADD", f"ref{i}", path, "lo", loopback_conf)
            _exec("bridge", "ADD", f"ref{i}", path, "eth0", bridge_conf)
            if i:
                adds.append((time.perf_counter() - start) * 1000)
        for i, path in enumerate(paths):
            start = time.perf_counter()
            _exec("bridge", "DEL", f"ref{i}", path, "eth0", bridge_conf)
            _exec("loopback", "DEL", f"ref{i}", path, "lo", loopback_conf)
            if i:
                dels.append((time.perf_counter() - start) * 1000)
    finally:
        for path in paths:
            await delete_netns(path)
        _delete_link("mkbref0")
    return adds, dels


def _delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def _iptables_nat_table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "ip", "nat"], capture_output=True, check=False).returncode == 0


def _drop_empty_nat_table(existed_before: bool) -> None:
    """The reference's ipMasq creates iptables-nft's ``ip nat`` table; drop it if we caused it and it is empty."""
    if existed_before or not shutil.which("nft") or not _iptables_nat_table_exists():
        return
    rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, check=False).stdout
    if all(line.startswith("-P ") for line in rules.splitlines() if line):
        subprocess.run(["nft", "delete", "table", "ip", "nat"], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/cni.py needs root (network namespaces, bridges, NAT rules)")
    if not Path(f"{CNI_PATH}/bridge").exists():
        raise SystemExit(f"the reference CNI plugins are not installed in {CNI_PATH}")
    previous_forward = Path(IP_FORWARD).read_text().strip()
    nat_table_before = _iptables_nat_table_exists()
    workdir = Path(tempfile.mkdtemp(prefix="mk-bench-cni-"))
    try:
        ours_add, ours_del, ref_add, ref_del, plain_add = asyncio.run(run(args.pods, workdir))
    finally:
        Path(IP_FORWARD).write_text(previous_forward)
        shutil.rmtree(workdir, ignore_errors=True)
        _drop_empty_nat_table(nat_table_before)
    pods = {"pods": args.pods}
    emit("cni_add_ours_median", statistics.median(ours_add), "ms", **pods)
    emit("cni_add_ours_p99", percentile(ours_add, 0.99), "ms", **pods)
    emit("cni_add_reference_median", statistics.median(ref_add), "ms", **pods,
         reference="/usr/lib/cni/loopback + bridge + host-local")
    emit("cni_add_reference_p99", percentile(ref_add, 0.99), "ms", **pods)
    ratio = statistics.median(ours_add) / statistics.median(ref_add)
    emit("cni_add_ratio_ours_over_reference", ratio, "ratio", target=0.7, met=ratio <= 0.7)
    # The reference without ipMasq: it then adds no per-pod iptables rules (ours has one rule per network).
    emit("cni_add_reference_nomasq_median", statistics.median(plain_add), "ms", **pods)
    emit("cni_add_ratio_ours_over_reference_nomasq", statistics.median(ours_add) / statistics.median(plain_add),
         "ratio", target=0.7)
    emit("cni_del_ours_median", statistics.median(ours_del), "ms", **pods)
    emit("cni_del_reference_median", statistics.median(ref_del), "ms", **pods)


async def run(pods: int, workdir: Path) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    ours_add, ours_del = await bench_ours(pods, workdir)
    ref_add, ref_del = await bench_reference(pods, workdir)
    plain_add, _ = await bench_reference(pods, workdir, masquerade=False)
    return ours_add, ours_del, ref_add, ref_del, plain_add


if __name__ == "__main__":
    main()
