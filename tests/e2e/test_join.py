"""`microkube token create` on a running server with its components, then a node joins with the printed
command's token and CA hash and gets its own certificate; `token list` and `token delete`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from microkube import bootstrap
from microkube.client import Client
from microkube.testing import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", components=True).start()
    try:
        yield process
    finally:
        process.stop()


def microkube(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "microkube.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_token_create_then_join(server: ServerProcess, tmp_path: Path) -> None:
    created = microkube("token", "create", "--ttl", "1h", "--description", "e2e", "--data-dir", str(server.data_dir))
    assert created.returncode == 0, created.stderr
    token, command = created.stdout.splitlines()[:2]
    assert bootstrap.TOKEN_RE.match(token)
    words = command.split()
    assert words[:2] == ["microkube", "agent"]
    flags = dict(zip(words[2::2], words[3::2], strict=True))
    assert flags["--server"] == server.url and flags["--token"] == token
    assert flags["--ca-cert-hash"] == bootstrap.ca_cert_hash((server.data_dir / "pki" / "ca.crt").read_bytes())

    async def join() -> str:
        kubeconfig = await bootstrap.join(flags["--server"], flags["--token"], node_name="e2e-node",
                                          data_dir=tmp_path / "node", ca_cert_hash=flags["--ca-cert-hash"],
                                          wait_seconds=60)
        async with Client.from_kubeconfig(kubeconfig) as node:
            review = await node.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        return str(review["status"]["userInfo"]["username"])

    assert asyncio.run(join()) == "system:node:e2e-node"

    listed = microkube("token", "list", "--kubeconfig", str(server.kubeconfig))
    assert listed.returncode == 0, listed.stderr
    token_id = token.split(".")[0]
    assert token_id in listed.stdout and "e2e" in listed.stdout and "authentication,signing" in listed.stdout
    deleted = microkube("token", "delete", token_id, "--data-dir", str(server.data_dir))
    assert deleted.returncode == 0 and f"bootstrap token {token_id} deleted" in deleted.stdout
    assert token_id not in microkube("token", "list", "--data-dir", str(server.data_dir)).stdout
    again = microkube("token", "delete", token_id, "--data-dir", str(server.data_dir))
    assert again.returncode != 0 and "does not exist" in again.stderr and len(again.stderr.splitlines()) == 1
    bad = microkube("token", "create", "--ttl", "1 day", "--data-dir", str(server.data_dir))
    assert bad.returncode != 0 and "24h" in bad.stderr


def test_token_needs_a_kubeconfig(tmp_path: Path) -> None:
    result = microkube("token", "list", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "--kubeconfig" in result.stderr
