"""The ``microkube`` command: wrong input gives one clear line and a non-zero exit, data untouched."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "microkube.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_flag() -> None:
    line = one_line_error(run("server", "--no-such-flag"))
    assert "--no-such-flag" in line


def test_bad_listen_address() -> None:
    assert "HOST:PORT" in one_line_error(run("server", "--listen", "nonsense"))
    assert "port" in one_line_error(run("server", "--listen", "127.0.0.1:99999"))


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line_error(run("server", "--data-dir", str(blocker / "sub"), "--listen", "127.0.0.1:0"))
    assert "data dir" in line


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(run("server", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}"))
    assert "already in use" in line


def test_unknown_store_scheme(tmp_path: Path) -> None:
    line = one_line_error(run("server", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                              "--store", "redis://localhost"))
    assert "sqlite" in line and "memory" in line


def test_corrupt_store_file_is_refused_and_untouched(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    store.write_bytes(b"this is not an sqlite database" * 100)
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    line = one_line_error(run("server", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                              "--store", f"sqlite:///{store}"))
    assert str(store) in line
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest


def test_plugins_lists_builtins() -> None:
    result = run("plugins", "--no-autoload")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "INTERFACES"]
    names = {row.split()[0] for row in rows}
    assert {"store", "builtin-resources", "auth"} <= names


def test_node_commands_refuse_wrong_input(tmp_path: Path) -> None:
    assert "KEY=VALUE" in one_line_error(run("kubelet", "--kubeconfig", "k", "--root-dir", str(tmp_path),
                                             "--tls-cert-file", "c", "--tls-private-key-file", "k",
                                             "--client-ca-file", "ca", "--network-option", "bridge"))
    assert "--tls-cert-file" in one_line_error(run("kubelet", "--kubeconfig", "k", "--root-dir", str(tmp_path),
                                                   "--tls-cert-file", str(tmp_path / "absent"),
                                                   "--tls-private-key-file", "k", "--client-ca-file", "ca"))
    assert "https://" in one_line_error(run("agent", "--server", "http://127.0.0.1:6443", "--token",
                                            "abcdef.0123456789abcdef", "--data-dir", str(tmp_path)))
    line = one_line_error(run("agent", "--server", "https://127.0.0.1:1", "--token", "not-a-token",
                              "--data-dir", str(tmp_path)))
    assert "token" in line and "microkube token create" in line
    assert "port" in one_line_error(run("up", "--kubelet-port", "70000"))
