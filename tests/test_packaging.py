"""Each distribution builds a wheel that carries its typing marker and data, and its public names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("directory", "package", "must_have"), [
    ("interfaces", "microkube_interfaces", ["py.typed", "conformance/store.py", "conformance/cni.py", "hookspecs.py",
                                            "cni.py", "cri.py", "scheduling.py"]),
    ("core", "microkube", ["py.typed", "apiserver/protobuf_fields.json", "store/sqlite.py", "cli.py"]),
    ("plugins/bridge", "microkube_bridge", ["py.typed", "plugin.py", "network.py"]),
    ("plugins/runc", "microkube_runc", ["py.typed", "plugin.py", "images.py"]),
    ("plugins/cni-exec", "microkube_cni", ["py.typed", "plugin.py", "runtime.py"]),
    ("examples/ptp", "microkube_ptp", ["py.typed", "plugin.py", "network.py"]),
])
def test_wheel_contents(tmp_path: Path, directory: str, package: str, must_have: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT / directory)], check=True, capture_output=True)
    wheel = next(tmp_path.glob(f"{package}-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in must_have:
        assert f"{package}/{relative}" in names, relative
    assert not any("/tests/" in name for name in names)


def test_public_names() -> None:
    import microkube
    import microkube_interfaces

    assert set(microkube.__all__) == {"DEFAULT_PLUGINS", "Plugins", "__version__"}
    assert {"hookimpl", "hookspec", "Registrar", "PluginInfo"} <= set(microkube_interfaces.__all__)


def test_console_script_is_declared() -> None:
    text = (ROOT / "core" / "pyproject.toml").read_text()
    assert 'microkube = "microkube.cli:main"' in text
