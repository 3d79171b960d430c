"""The ``microkube`` command.

Every failure the user can cause (a wrong flag, an unwritable data dir, a port in use, a corrupt
store) ends in one line on stderr naming the problem and the fix, and a non-zero exit; stored data is
never touched on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microkube_interfaces import errors

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def default_data_dir() -> Path:
    env = os.environ.get("MICROKUBE_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/microkube")
    return Path.home() / ".local" / "share" / "microkube"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--listen {value!r} must be HOST:PORT, e.g. 127.0.0.1:6443")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {value!r}: port must be between 0 and 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise argparse.ArgumentTypeError(
                f"--listen {value!r}: host must be an IP address (or localhost)") from None
    return host, port


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"microkube: {message} (see microkube {self.prog.split()[-1]} --help)", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="microkube", description="Kubernetes rebuilt in Python as a plugin-based microkernel.")
    parser.add_argument("--log-level", default=os.environ.get("MICROKUBE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def server_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", type=Path, default=None,
                         help="state directory: store, PKI, kubeconfig (default /var/lib/microkube as root)")
        sub.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 6443), metavar="HOST:PORT",
                         help="address of the HTTPS API (default 127.0.0.1:6443)")
        sub.add_argument("--store", default=None, metavar="URL",
                         help="store URL: sqlite:///path (default DATA_DIR/state.db) or memory://")
        sub.add_argument("--advertise-host", action="append", default=[], metavar="HOST",
                         help="extra host name or IP for the serving certificate (repeatable)")
        sub.add_argument("--no-autoload", action="store_true",
                         help="load only built-in plugins (and those named by MICROKUBE_PLUGINS)")
        sub.add_argument("--no-controller-manager", action="store_true",
                         help="do not run the controller manager beside the API server")
        sub.add_argument("--no-scheduler", action="store_true", help="do not run the scheduler beside the API server")
        sub.add_argument("--simulate-nodes", type=_non_negative, default=0, metavar="N",
                         help="also run N simulated nodes (see `microkube simulate`)")
        grace_option(sub)

    def grace_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--node-monitor-grace-period", type=_positive_seconds, default=None, metavar="SECONDS",
                         help="how long a node may stay silent before it is NotReady (default 40)")
        sub.add_argument("--cluster-cidr", type=_network, default=None, metavar="CIDR",
                         help="pod addresses, a /24 per node (default 10.244.0.0/16: 256 nodes)")

    server_options(commands.add_parser(
        "server", help="run the control plane: API server and store, controller manager and scheduler"))
    server_options(commands.add_parser(
        "up", help="bring up a one-machine cluster on the embedded defaults: the control plane (API server on "
                   "SQLite, controller manager, scheduler) and this machine as a node (runc containers, bridge "
                   "network)"))
    manager = commands.add_parser(
        "controller-manager", help="run the reconcile loops against an API server (leader-elected)")
    manager.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the API server to manage")
    manager.add_argument("--disable", default="", metavar="NAMES",
                         help="comma-separated controllers not to run (see `microkube plugins`)")
    manager.add_argument("--no-autoload", action="store_true")
    grace_option(manager)
    manager.add_argument("--metrics-listen", type=_listen_or_off, default=("127.0.0.1", 10257), metavar="HOST:PORT",
                         help="plain-HTTP /metrics and /healthz (default 127.0.0.1:10257; 'off' to disable)")
    manager.add_argument("--cluster-signing-cert-file", type=Path, default=None, metavar="FILE",
                         help="the cluster CA certificate csrsigning issues node certificates with")
    manager.add_argument("--cluster-signing-key-file", type=Path, default=None, metavar="FILE",
                         help="its private key (without both, csrsigning does not run)")
    scheduler = commands.add_parser("scheduler", help="run a scheduler against an API server (leader-elected)")
    scheduler.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the API server")
    scheduler.add_argument("--scheduler-name", action="append", default=[], metavar="NAME",
                           help="schedule pods whose spec.schedulerName is NAME (repeatable; default "
                                "default-scheduler)")
    scheduler.add_argument("--disable", default="", metavar="PLUGINS",
                           help="comma-separated scheduler plugins not to run (e.g. DefaultPreemption)")
    scheduler.add_argument("--percentage-of-nodes-to-score", type=_percentage, default=None, metavar="PERCENT",
                           help="stop filtering once this share of nodes fits (default: adaptive, as kube-scheduler)")
    scheduler.add_argument("--scoring-strategy", choices=["LeastAllocated", "MostAllocated"],
                           default="LeastAllocated", help="NodeResourcesFit scoring (default LeastAllocated)")
    scheduler.add_argument("--no-autoload", action="store_true")
    scheduler.add_argument("--metrics-listen", type=_listen_or_off, default=("127.0.0.1", 10259),
                           metavar="HOST:PORT",
                           help="plain-HTTP /metrics and /healthz (default 127.0.0.1:10259; 'off' to disable)")
    simulate = commands.add_parser(
        "simulate", help="run simulated nodes (like kwok): Nodes, Leases and pods that go Running, no containers")
    simulate.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the API server")
    simulate.add_argument("--nodes", type=_non_negative, required=True, metavar="N", help="how many nodes")
    simulate.add_argument("--prefix", default="sim-node-", help="node name prefix (default sim-node-)")
    simulate.add_argument("--cpu", default="32", help="CPU capacity of each node (default 32)")
    simulate.add_argument("--memory", default="256Gi", help="memory capacity of each node (default 256Gi)")
    simulate.add_argument("--max-pods", type=_non_negative, default=110, help="pods per node (default 110)")
    simulate.add_argument("--lease-interval", type=float, default=10.0, metavar="SECONDS",
                          help="how often each node renews its Lease (default 10, as the kubelet)")
    def node_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--node-name", default=None, help="this node's name (default: the host name)")
        sub.add_argument("--node-ip", default=None, metavar="IP",
                         help="the address other nodes and the API server reach this node on (default: the "
                              "address of the default route)")
        sub.add_argument("--runtime", default="runc", help="container runtime pack (default runc)")
        sub.add_argument("--network", default="bridge", help="pod network pack (default bridge)")
        sub.add_argument("--kubelet-port", type=_port, default=10250, metavar="PORT",
                         help="port of the kubelet API (default 10250; 0 picks a free one)")
        sub.add_argument("--pod-manifest-path", type=Path, default=None, metavar="DIR",
                         help="directory of static pod manifests")
        sub.add_argument("--max-pods", type=_non_negative, default=110, help="pods this node runs at most (110)")
        sub.add_argument("--runtime-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                         help="an option of the runtime pack (repeatable), e.g. pauseImage=REFERENCE")
        sub.add_argument("--network-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                         help="an option of the network pack (repeatable), e.g. bridge=mkbr0, mtu=1400")

    kubelet = commands.add_parser("kubelet", help="run the node agent against an API server with given credentials")
    kubelet.add_argument("--kubeconfig", type=Path, required=True, help="the node's kubeconfig")
    kubelet.add_argument("--root-dir", type=Path, required=True, help="the node's state directory")
    kubelet.add_argument("--tls-cert-file", type=Path, required=True, help="serving certificate of the kubelet API")
    kubelet.add_argument("--tls-private-key-file", type=Path, required=True, help="its key")
    kubelet.add_argument("--client-ca-file", type=Path, required=True,
                         help="CA whose client certificates the kubelet API accepts (the cluster CA)")
    kubelet.add_argument("--no-autoload", action="store_true")
    node_options(kubelet)
    agent = commands.add_parser("agent", help="join this machine to a cluster as a node: "
                                              "microkube agent --server URL --token TOKEN")
    agent.add_argument("--server", required=True, metavar="URL", help="the API server, https://HOST:PORT")
    agent.add_argument("--token", required=True, help="a join token from `microkube token create`")
    agent.add_argument("--ca-cert-hash", default=None, metavar="sha256:HEX",
                       help="pin the cluster CA (printed by `microkube token create`)")
    agent.add_argument("--data-dir", type=Path, default=None,
                       help="the node's state directory (default /var/lib/microkube/node as root)")
    agent.add_argument("--no-autoload", action="store_true")
    node_options(agent)
    for sub in (commands.choices["up"],):
        sub.add_argument("--no-node", action="store_true", help="bring up the control plane only (no node agent)")
        node_options(sub)
    image = commands.add_parser("image", help="manage the node's images: import FILE, ls, rm REFERENCE")
    image.add_argument("action", choices=["import", "ls", "rm"])
    image.add_argument("target", nargs="?", default="", metavar="FILE|REFERENCE")
    image.add_argument("--reference", default=None,
                       help="with import: name for an image the archive leaves unnamed")
    image.add_argument("--runtime", default="runc", help="the container runtime pack (default runc)")
    image.add_argument("--data-dir", type=Path, default=None,
                       help="state directory (default /var/lib/microkube as root); images under DATA_DIR/RUNTIME")
    image.add_argument("--no-autoload", action="store_true")
    token = commands.add_parser("token", help="join tokens for nodes: create [--ttl 24h] [--description TEXT], "
                                              "list, delete ID")
    token.add_argument("action", choices=["create", "list", "delete"])
    token.add_argument("id", nargs="?", default="", metavar="ID", help="with delete: the token or its id")
    token.add_argument("--ttl", default="24h", help="with create: lifetime, e.g. 24h, 90m; 0 = never expires")
    token.add_argument("--description", default="", help="with create: what the token is for")
    token.add_argument("--data-dir", type=Path, default=None, help="the server's data dir (its kubeconfig is used)")
    token.add_argument("--kubeconfig", type=Path, default=None, help="an admin kubeconfig (instead of --data-dir)")
    cri_serve = commands.add_parser("cri-serve", help="serve a runtime pack as a CRI v1 gRPC endpoint on a unix socket")
    cri_serve.add_argument("--runtime", default="runc", help="the runtime pack to serve (default runc)")
    cri_serve.add_argument("--socket", type=Path, required=True, metavar="PATH", help="unix socket to listen on")
    cri_serve.add_argument("--streaming-address", default="", metavar="HOST:PORT",
                           help="where the CRI streaming server (Exec/Attach/PortForward URLs) listens "
                                "(default 127.0.0.1 and a free port)")
    cri_serve.add_argument("--runtime-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                           help="an option of the runtime pack (repeatable), e.g. root=DIR")
    cri_serve.add_argument("--no-autoload", action="store_true")
    plugins = commands.add_parser("plugins", help="list the loaded plugins")
    plugins.add_argument("--no-autoload", action="store_true")
    return parser


def _listen_or_off(value: str) -> tuple[str, int] | None:
    return None if value == "off" else parse_listen(value)


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must not be negative")
    return number


def _key_value(value: str) -> tuple[str, Any]:
    key, sep, text = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} must be KEY=VALUE")
    parsed: Any = text
    if text.lower() in ("true", "false"):
        parsed = text.lower() == "true"
    elif text.isdigit():
        parsed = int(text)
    return key, parsed


def _port(value: str) -> int:
    number = _non_negative(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0-65535)")
    return number


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a network in CIDR notation ({exc})") from None


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be more than 0 seconds")
    return number


def _percentage(value: str) -> int:
    number = _non_negative(value)
    if not 1 <= number <= 100:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 1 and 100")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except CLIError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentTypeError as exc:
        raise CLIError(f"microkube: {exc}", EXIT_USAGE) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "plugins":
        return _plugins(args)
    if args.command == "token":
        from microkube.bootstrap import token_command
        try:
            return asyncio.run(token_command(args, args.data_dir or default_data_dir()))
        except errors.MicrokubeError as exc:
            raise CLIError(f"microkube: {exc}") from None
    if args.command == "controller-manager":
        return _event_loop_runner()(_controller_manager(args))  # type: ignore[no-any-return]
    if args.command == "scheduler":
        return _event_loop_runner()(_scheduler(args))  # type: ignore[no-any-return]
    if args.command == "simulate":
        return _event_loop_runner()(_simulate(args))  # type: ignore[no-any-return]
    if args.command == "kubelet":
        return _event_loop_runner()(_kubelet(args))  # type: ignore[no-any-return]
    if args.command == "agent":
        return _event_loop_runner()(_agent(args))  # type: ignore[no-any-return]
    if args.command == "image":
        if args.action in ("import", "rm") and not args.target:
            raise CLIError(f"microkube: image {args.action} needs a "
                           f"{'FILE' if args.action == 'import' else 'REFERENCE'}", EXIT_USAGE)
        if args.action == "import" and not Path(args.target).is_file():
            raise CLIError(f"microkube: {args.target} is not a file; give an OCI image-layout or docker-save tarball")
        return asyncio.run(_image(args, _prepare_data_dir(args.data_dir or default_data_dir())))
    if args.command == "cri-serve":
        from microkube.criserve import command as cri_serve_command
        return cri_serve_command(args)
    return _serve(args)


def _client_for(args: argparse.Namespace, user_agent: str) -> Any:
    from microkube.client import Client

    if not args.kubeconfig.is_file():
        raise CLIError(f"microkube: --kubeconfig {args.kubeconfig} does not exist; point it at the server's "
                       "kubeconfig (DATA_DIR/kubeconfig)")
    try:
        return Client.from_kubeconfig(args.kubeconfig, user_agent=user_agent)
    except (KeyError, IndexError, ValueError, OSError) as exc:
        raise CLIError(f"microkube: --kubeconfig {args.kubeconfig} is not a usable kubeconfig: {exc}") from None


async def _run_until_signalled(work: Any, banner: str, client: Any, metrics: Any = None,
                               listen: tuple[str, int] | None = None) -> int:
    from microkube.metrics import bound_port, serve_metrics

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await serve_metrics(*listen, metrics) if metrics is not None and listen is not None else None
    if runner is not None:
        banner += f"; metrics at http://{listen[0] if listen else ''}:{bound_port(runner)}/metrics"
    running = asyncio.create_task(work)
    print(banner, flush=True)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    running.cancel()
    stopping.cancel()
    try:
        await running
    except asyncio.CancelledError:
        pass
    finally:
        if runner is not None:
            await runner.cleanup()
        await client.close()
    return 0


async def _scheduler(args: argparse.Namespace) -> int:
    from microkube.plugins import Plugins
    from microkube.scheduler.scheduler import DEFAULT_SCHEDULER, Scheduler
    from microkube_interfaces.hookspecs import ServerSettings

    client = _client_for(args, "microkube-scheduler")
    try:
        plugins = Plugins(autoload=False if args.no_autoload else None)
        registrations = plugins.scheduler_plugins(ServerSettings(
            data_dir=str(args.kubeconfig.parent), options={"scoring_strategy": args.scoring_strategy}))
        disabled = [name.strip() for name in args.disable.split(",") if name.strip()]
        scheduler = Scheduler(client, registrations, names=args.scheduler_name or [DEFAULT_SCHEDULER],
                              disabled=disabled, percentage_of_nodes_to_score=args.percentage_of_nodes_to_score)
    except (errors.MicrokubeError, ValueError) as exc:
        await client.close()
        raise CLIError(f"microkube: {exc}") from None
    return await _run_until_signalled(scheduler.run_elected(), "microkube scheduler running: "
                                      f"{', '.join(sorted(scheduler.names))}", client, scheduler.render_metrics,
                                      args.metrics_listen)


async def _simulate(args: argparse.Namespace) -> int:
    from microkube.simulator import NodeSimulator

    client = _client_for(args, "microkube-simulator")
    try:
        simulator = NodeSimulator(client, args.nodes, prefix=args.prefix, cpu=args.cpu, memory=args.memory,
                                  pods=args.max_pods, lease_interval=args.lease_interval)
    except ValueError as exc:
        await client.close()
        raise CLIError(f"microkube: {exc}") from None
    return await _run_until_signalled(simulator.run(), f"microkube simulating {args.nodes} nodes "
                                      f"({args.prefix}0..{args.prefix}{max(0, args.nodes - 1)})", client)


async def _controller_manager(args: argparse.Namespace) -> int:
    from microkube.controllers.manager import ControllerManager
    from microkube.plugins import Plugins
    from microkube_interfaces.hookspecs import ServerSettings

    client = _client_for(args, "microkube-controller-manager")
    try:
        plugins = Plugins(autoload=False if args.no_autoload else None)
        options: dict[str, Any] = {}
        if args.node_monitor_grace_period is not None:
            options["node_monitor_grace_period"] = args.node_monitor_grace_period
        if args.cluster_cidr is not None:
            options["cluster_cidr"] = args.cluster_cidr
        if args.cluster_signing_cert_file or args.cluster_signing_key_file:
            options["cluster_signing_cert_file"] = args.cluster_signing_cert_file
            options["cluster_signing_key_file"] = args.cluster_signing_key_file
        registrations = plugins.controllers(ServerSettings(data_dir=str(args.kubeconfig.parent), options=options))
        disabled = [name.strip() for name in args.disable.split(",") if name.strip()]
        manager = ControllerManager(client, registrations, disabled=disabled)
    except (errors.MicrokubeError, ValueError, KeyError, OSError) as exc:
        await client.close()
        raise CLIError(f"microkube: {exc}") from None
    return await _run_until_signalled(manager.run_elected(), "microkube controller manager running: "
                                      f"{', '.join(r.name for r in manager.registrations)}", client,
                                      manager.render_metrics, args.metrics_listen)


def _kubelet_config(args: argparse.Namespace, root: Path, *, cert_file: Path, key_file: Path,
                    client_ca_file: Path) -> Any:
    from microkube.kubelet.agent import KubeletConfig
    from microkube.kubelet.node import default_node_name

    return KubeletConfig(node_name=args.node_name or default_node_name(), root=root, runtime=args.runtime,
                         network=args.network, node_ip=args.node_ip, port=args.kubelet_port,
                         pod_manifest_path=args.pod_manifest_path, max_pods=args.max_pods,
                         runtime_options=dict(args.runtime_option), network_options=dict(args.network_option),
                         cert_file=cert_file,
                         key_file=key_file, client_ca_file=client_ca_file)


async def _run_kubelet(client: Any, config: Any, args: argparse.Namespace) -> int:
    from microkube.kubelet.agent import Kubelet
    from microkube.plugins import Plugins

    try:
        plugins = Plugins(autoload=False if args.no_autoload else None)
        kubelet = Kubelet(client, config, plugins.registrar)
    except (errors.MicrokubeError, ValueError, OSError) as exc:
        await client.close()
        raise CLIError(f"microkube: {exc}") from None
    return await _run_until_signalled(kubelet.run(), f"microkube kubelet running node {config.node_name} "
                                      f"(runtime {config.runtime}, network {config.network})", client)


async def _kubelet(args: argparse.Namespace) -> int:
    for option, path in (("--tls-cert-file", args.tls_cert_file), ("--tls-private-key-file", args.tls_private_key_file),
                         ("--client-ca-file", args.client_ca_file)):
        if not path.is_file():
            raise CLIError(f"microkube: {option} {path} does not exist")
    client = _client_for(args, "microkube-kubelet")
    config = _kubelet_config(args, _prepare_data_dir(args.root_dir), cert_file=args.tls_cert_file,
                             key_file=args.tls_private_key_file, client_ca_file=args.client_ca_file)
    return await _run_kubelet(client, config, args)


async def _agent(args: argparse.Namespace) -> int:
    from microkube import bootstrap
    from microkube.client import Client
    from microkube.kubelet import machine
    from microkube.kubelet.node import default_node_name

    root = _prepare_data_dir(args.data_dir or (default_data_dir() / "node"))
    node_name = args.node_name or default_node_name()
    if not args.server.startswith("https://"):
        raise CLIError(f"microkube: --server {args.server!r} must be an https:// URL of the API server", EXIT_USAGE)
    try:
        bootstrap.parse_token(args.token)
        kubeconfig = await bootstrap.join(args.server, args.token, node_name=node_name, data_dir=root,
                                          ca_cert_hash=args.ca_cert_hash)
        client = Client.from_kubeconfig(kubeconfig, user_agent="microkube-kubelet")
        addresses = [a["address"] for a in machine.addresses(node_name, args.node_ip)]
        cert, key = await bootstrap.serving_certificate(client, node_name, addresses, root)
    except errors.MicrokubeError as exc:
        raise CLIError(f"microkube: {exc}") from None
    config = _kubelet_config(args, root, cert_file=cert, key_file=key, client_ca_file=root / "pki" / "ca.crt")
    return await _run_kubelet(client, config, args)


async def _image(args: argparse.Namespace, data_dir: Path) -> int:
    from microkube.plugins import Plugins
    from microkube_interfaces.cri import ImageImporter, ImageSpec

    try:
        registration = Plugins(autoload=False if args.no_autoload else None).registrar.runtimes.get(args.runtime)
        images = registration.factory({"root": str(data_dir / args.runtime)}).images
        if args.action == "import":
            if not isinstance(images, ImageImporter):
                raise CLIError(f"microkube: runtime {args.runtime} cannot import image archives; pull from a "
                               "registry instead")
            for imported in await images.import_archive(args.target, args.reference):
                print(f"imported {imported.reference} ({imported.id})")
        elif args.action == "ls":
            rows = [("IMAGE", "ID", "SIZE")]
            for found in await images.list_images():
                for tag in found.repo_tags or ("<none>",):
                    rows.append((tag, found.id.removeprefix("sha256:")[:12], f"{found.size / 1e6:.1f}MB"))
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        else:
            await images.remove_image(ImageSpec(args.target))
            print(f"removed {args.target}")
    except errors.MicrokubeError as exc:
        raise CLIError(f"microkube: {exc}") from None
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from microkube.plugins import Plugins

    try:
        loaded = Plugins(autoload=False if args.no_autoload else None).loaded()
    except errors.PluginError as exc:
        raise CLIError(f"microkube: {exc}") from None
    rows = [("NAME", "DISTRIBUTION", "VERSION", "INTERFACES")]
    for plugin in loaded:
        interfaces = ",".join(f"{k}/{'|'.join(v)}" for k, v in sorted(plugin.interfaces.items())) or "-"
        rows.append((plugin.name, plugin.distribution or "-", plugin.version or "-", interfaces))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _prepare_data_dir(path: Path) -> Path:
    path = path.expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CLIError(f"microkube: cannot create data dir {path}: {exc.strerror}; choose a writable --data-dir") \
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"microkube: data dir {path} is not writable; fix its permissions or choose another "
                       "--data-dir")
    return path


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CLIError(f"microkube: {host}:{port} is already in use; stop the other process or choose "
                               "another --listen address") from None
            raise CLIError(f"microkube: cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve(args: argparse.Namespace) -> int:
    data_dir = _prepare_data_dir(args.data_dir or default_data_dir())
    host, port = args.listen
    _check_port(host, port)
    store_url = args.store or f"sqlite://{data_dir / 'state.db'}"
    try:
        code: int = _event_loop_runner()(_run_server(data_dir, host, port, store_url, args))
        return code
    except errors.MicrokubeError as exc:
        raise CLIError(f"microkube: {exc}") from None


def _event_loop_runner() -> Any:
    """uvloop's loop where available (faster TLS and socket handling), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _run_server(data_dir: Path, host: str, port: int, store_url: str, args: argparse.Namespace) -> int:
    from microkube.apiserver.kubeconfig import write_kubeconfig
    from microkube.apiserver.pki import ensure_pki
    from microkube.apiserver.server import APIServer
    from microkube.plugins import Plugins
    from microkube.store import open_store
    from microkube.supervisor import Supervisor
    from microkube_interfaces.hookspecs import ServerSettings

    plugins = Plugins(autoload=False if args.no_autoload else None)
    store = open_store(plugins.registrar, store_url)
    hosts = sorted({host, "127.0.0.1", "localhost", *args.advertise_host})
    pki = ensure_pki(data_dir, hosts)
    settings = ServerSettings(data_dir=str(data_dir), options={"store": store_url})
    server = APIServer(plugins=plugins, store=store, settings=settings, sa_key_path=pki.sa_key, host=host,
                       port=port, ssl_context=pki.server_ssl_context())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except OSError as exc:
        await store.close()
        raise CLIError(f"microkube: cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except BaseException:
        await store.close()
        raise
    kubeconfig = data_dir / "kubeconfig"
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url_host = f"[{client_host}]" if ":" in client_host else client_host
    write_kubeconfig(kubeconfig, f"https://{url_host}:{server.port}", pki)
    supervisor = Supervisor(_components(args, kubeconfig))
    supervisor.start()
    print(f"microkube API server ready at https://{url_host}:{server.port}; "
          f"export KUBECONFIG={kubeconfig}", flush=True)
    try:
        await stop.wait()
    finally:
        await supervisor.stop()
        await server.stop()
        await store.close()
    return 0


def _components(args: argparse.Namespace, kubeconfig: Path) -> dict[str, list[str]]:
    """The control-plane processes this server runs beside itself."""
    base = [sys.executable, "-m", "microkube.cli", "--log-level", args.log_level]
    common = ["--kubeconfig", str(kubeconfig)]
    autoload = ["--no-autoload"] if args.no_autoload else []
    components = {}
    if not args.no_controller_manager:
        grace = [] if args.node_monitor_grace_period is None else [
            "--node-monitor-grace-period", str(args.node_monitor_grace_period)]
        cidr = [] if args.cluster_cidr is None else ["--cluster-cidr", args.cluster_cidr]
        pki = kubeconfig.parent / "pki"
        signing = ["--cluster-signing-cert-file", str(pki / "ca.crt"),
                   "--cluster-signing-key-file", str(pki / "ca.key")]
        components["controller-manager"] = [*base, "controller-manager", *common, *autoload, *grace, *cidr,
                                            *signing]
    if not args.no_scheduler:
        components["scheduler"] = [*base, "scheduler", *common, *autoload]
    if args.command == "up" and not args.no_node:
        from microkube import bootstrap
        from microkube.kubelet import machine
        from microkube.kubelet.node import default_node_name

        node_name = args.node_name or default_node_name()
        node_dir = kubeconfig.parent / "node"
        node_dir.mkdir(exist_ok=True)
        addresses = [a["address"] for a in machine.addresses(node_name, args.node_ip)]
        node_kubeconfig, cert, key = bootstrap.local_credentials(kubeconfig.parent, node_name, node_dir, addresses)
        components["kubelet"] = [
            *base, "kubelet", "--kubeconfig", str(node_kubeconfig), "--root-dir", str(node_dir), *autoload,
            "--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
            "--client-ca-file", str(kubeconfig.parent / "pki" / "ca.crt"), "--node-name", node_name,
            "--runtime", args.runtime, "--network", args.network, "--kubelet-port", str(args.kubelet_port),
            "--max-pods", str(args.max_pods),
            *[f"--runtime-option={k}={v}" for k, v in args.runtime_option],
            *[f"--network-option={k}={v}" for k, v in args.network_option],
            *(["--node-ip", args.node_ip] if args.node_ip else []),
            *(["--pod-manifest-path", str(args.pod_manifest_path)] if args.pod_manifest_path else [])]
    if args.simulate_nodes:
        # nodes renew their Leases four times per grace period, as kubelets do (10 s of 40 s)
        renew = 10.0 if args.node_monitor_grace_period is None else min(10.0, args.node_monitor_grace_period / 4)
        components["simulator"] = [*base, "simulate", *common, "--nodes", str(args.simulate_nodes),
                                   "--lease-interval", str(renew)]
    return components


if __name__ == "__main__":
    raise SystemExit(main())
