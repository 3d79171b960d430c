"""`microkube image import|ls|rm` through the runtime pack's image store (the runc pack here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def microkube(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROKUBE_PLUGINS": "runc"}
    return subprocess.run([sys.executable, "-m", "microkube.cli", "image", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None or not Path("/bin/busybox").exists(),
                    reason="needs root, runc and busybox-static")
def test_import_list_and_remove_an_image(tmp_path: Path) -> None:
    from microkube_runc.busybox import write_busybox_archive

    archive = tmp_path / "tools.tar"
    write_busybox_archive(archive, "example.local/tools:v1")
    data = tmp_path / "data"
    imported = microkube("import", str(archive), data_dir=data)
    assert imported.returncode == 0, imported.stderr
    assert "imported example.local/tools:v1 (sha256:" in imported.stdout
    listed = microkube("ls", data_dir=data)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["IMAGE", "ID", "SIZE"]
    assert any(line.startswith("example.local/tools:v1 ") for line in listed.stdout.splitlines())
    removed = microkube("rm", "example.local/tools:v1", data_dir=data)
    assert removed.returncode == 0, removed.stderr
    assert "example.local/tools:v1" not in microkube("ls", data_dir=data).stdout


def test_wrong_input_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = microkube("import", str(tmp_path / "nope.tar"), data_dir=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"microkube: {tmp_path / 'nope.tar'} is not a file; give an OCI image-layout " \
                                     "or docker-save tarball"
    bare = microkube("rm", data_dir=tmp_path)
    assert bare.returncode == 2 and "image rm needs a REFERENCE" in bare.stderr
    unknown = subprocess.run([sys.executable, "-m", "microkube.cli", "image", "ls", "--runtime", "nosuch",
                              "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "MICROKUBE_PLUGINS": "runc"})
    assert unknown.returncode == 1
    assert "nosuch" in unknown.stderr and "runc" in unknown.stderr
