"""Registry pulls: a real Debian docker-registry on loopback (open, then htpasswd Basic auth), and a
tiny aiohttp registry for Bearer token auth and tampered content."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from aiohttp import web

from microkube_interfaces import cri
from microkube_interfaces.errors import NotFound, Unauthenticated
from microkube_runc import busybox
from microkube_runc.images import DigestMismatch, ImageStore
from microkube_runc.registry import RegistryClient, parse_challenge

REGISTRY = shutil.which("docker-registry")
pytestmark = pytest.mark.skipif(not os.path.exists(busybox.BUSYBOX), reason="needs busybox-static")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _htpasswd_line(user: str, password: str) -> str | None:
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    try:
        import bcrypt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5))
    return f"{user}:{hashed.decode()}"


@dataclass
class Registry:
    host: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def _start_registry(tmp: Path, htpasswd: str | None = None) -> Registry:
    assert REGISTRY is not None
    port = _free_port()
    config = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
              f"    rootdirectory: {tmp / 'data'}", "  delete:", "    enabled: true",
              "http:", f"  addr: 127.0.0.1:{port}"]
    if htpasswd is not None:
        (tmp / "htpasswd").write_text(htpasswd + "\n")
        config += ["auth:", "  htpasswd:", "    realm: microkube-test", f"    path: {tmp / 'htpasswd'}"]
    (tmp / "config.yml").write_text("\n".join(config) + "\n")
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115 (closed by Registry.stop)
    process = subprocess.Popen([REGISTRY, "serve", str(tmp / "config.yml")], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"docker-registry exited: {(tmp / 'registry.log').read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return Registry(f"127.0.0.1:{port}", process, log)
        time.sleep(0.05)
    process.kill()
    process.wait()
    log.close()
    raise RuntimeError("docker-registry did not listen within 10 s")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    if REGISTRY is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    (tmp_path / "reg").mkdir()
    reg = _start_registry(tmp_path / "reg")
    yield reg
    reg.stop()


async def test_push_then_pull_from_docker_registry(tmp_path: Path, registry: Registry) -> None:
    source = ImageStore(tmp_path / "source")
    image_id = await busybox.import_busybox(source)
    async with RegistryClient() as client:
        pushed = await client.push(source, "busybox", f"{registry.host}/microkube/busybox:v1")
    store = ImageStore(tmp_path / "store")
    ref = await store.pull_image(cri.ImageSpec(f"{registry.host}/microkube/busybox:v1"))
    assert ref == image_id
    status = await store.image_status(cri.ImageSpec(f"{registry.host}/microkube/busybox:v1"))
    assert status is not None
    assert status.repo_digests == (f"{registry.host}/microkube/busybox@{pushed}",)
    # By digest, again (blobs present: only the manifest is fetched).
    assert await store.pull_image(cri.ImageSpec(f"{registry.host}/microkube/busybox@{pushed}")) == image_id
    root = await store.rootfs(f"{registry.host}/microkube/busybox:v1", tmp_path / "c" / "rootfs", method="copy")
    assert (root.path / "bin" / "busybox").is_file()
    await store.release_rootfs(root.path)

    with pytest.raises(NotFound, match=f"{registry.host}/microkube/busybox:nope"):
        await store.pull_image(cri.ImageSpec(f"{registry.host}/microkube/busybox:nope"))
    with pytest.raises(NotFound, match="missing/image"):
        await store.pull_image(cri.ImageSpec(f"{registry.host}/missing/image:v1"))


async def test_pull_with_htpasswd_basic_auth(tmp_path: Path) -> None:
    if REGISTRY is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    line = _htpasswd_line("mk", "s3cret")
    if line is None:
        pytest.skip("neither htpasswd (apache2-utils) nor the bcrypt package is installed")
    (tmp_path / "reg").mkdir()
    reg = _start_registry(tmp_path / "reg", htpasswd=line)
    try:
        source = ImageStore(tmp_path / "source")
        image_id = await busybox.import_busybox(source)
        good = cri.AuthConfig(username="mk", password="s3cret")
        async with RegistryClient() as client:
            await client.push(source, "busybox", f"{reg.host}/private/busybox:v1", good)
        store = ImageStore(tmp_path / "store")
        target = cri.ImageSpec(f"{reg.host}/private/busybox:v1")
        with pytest.raises(Unauthenticated, match="needs credentials"):
            await store.pull_image(target)
        with pytest.raises(Unauthenticated, match="refused"):
            await store.pull_image(target, cri.AuthConfig(username="mk", password="wrong"))
        auth_field = base64.b64encode(b"mk:s3cret").decode()
        assert await store.pull_image(target, cri.AuthConfig(auth=auth_field)) == image_id
    finally:
        reg.stop()


# --- a tiny registry with Bearer token auth -------------------------------------------------------

TOKEN = "tok-123"


@pytest.fixture
async def token_registry() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    image = busybox.build_busybox_image()
    blobs = dict(image.blobs)
    tags = {"v1": image.manifest_digest}
    state: dict[str, str] = {}

    async def token(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"mk:pw").decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        state["scope"] = request.query.get("scope", "")
        return web.json_response({"token": TOKEN})

    async def v2(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://{request.host}/token"
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="tiny",scope="repository:'
                                    f'{request.match_info["repo"]}:pull"'})
        kind, ref = request.match_info["kind"], request.match_info["ref"]
        digest = tags.get(ref, ref)
        if digest not in blobs:
            return web.Response(status=404)
        headers = {"Docker-Content-Digest": digest}
        if kind == "manifests":
            headers["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
        return web.Response(body=blobs[digest], headers=headers)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/{repo:.+}/{kind:manifests|blobs}/{ref}", v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}", blobs
    finally:
        await runner.cleanup()
    assert state.get("scope") == "repository:mk/busybox:pull"


async def test_pull_with_bearer_token(tmp_path: Path, token_registry: tuple[str, dict[str, bytes]]) -> None:
    host, _ = token_registry
    store = ImageStore(tmp_path / "store")
    target = cri.ImageSpec(f"{host}/mk/busybox:v1")
    with pytest.raises(Unauthenticated):
        await store.pull_image(target, cri.AuthConfig(username="mk", password="bad"))
    image_id = await store.pull_image(target, cri.AuthConfig(username="mk", password="pw"))
    assert image_id == busybox.build_busybox_image().config_digest
    assert await store.image_status(target) is not None


async def test_tampered_blob_is_a_clear_error(tmp_path: Path, token_registry: tuple[str, dict[str, bytes]]) -> None:
    host, blobs = token_registry
    image = busybox.build_busybox_image()
    blobs[image.layer_digest] = blobs[image.layer_digest][:-10] + b"0123456789"
    store = ImageStore(tmp_path / "store")
    with pytest.raises(DigestMismatch, match=f"blob {image.layer_digest}.*content has digest"):
        await store.pull_image(cri.ImageSpec(f"{host}/mk/busybox:v1"), cri.AuthConfig(username="mk", password="pw"))
    assert await store.list_images() == []
    assert not store.has_blob(image.layer_digest)


def test_parse_challenge() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="a:b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg", "scope": "a:b:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
