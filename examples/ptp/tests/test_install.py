"""The pack as a vendor ships it: built as a wheel, pip-installed into a fresh virtual environment, found by
microkube through the ``microkube`` entry-point group (``microkube plugins`` and the registrar)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

PACK = Path(__file__).resolve().parent.parent

#: What the fresh environment runs: microkube's plugin manager limited to this pack, as `MICROKUBE_PLUGINS=ptp`.
PROBE = """
import json, sys
import microkube_ptp
from microkube.plugins import Plugins
from microkube_interfaces.cni import CNIPlugin

plugins = Plugins(allow=["ptp"])
registration = plugins.registrar.networks.get("ptp")
network = registration.factory({"podCIDR": "10.215.0.0/24", "stateDir": sys.argv[1]})
print(json.dumps({
    "module": microkube_ptp.__file__,
    "plugin": registration.plugin,
    "versions": list(registration.versions),
    "is_cni_plugin": isinstance(network, CNIPlugin),
    "networks": plugins.registrar.networks.names(),
    "loaded": [[p.name, p.distribution, p.version, {k: list(v) for k, v in p.interfaces.items()}]
               for p in plugins.loaded() if not p.builtin],
}))
"""


def _run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.skipif(importlib.util.find_spec("microkube") is None,
                    reason="microkube (the core) is not installed: discovery is proven through its plugin manager")
@pytest.mark.skipif(importlib.util.find_spec("venv") is None or importlib.util.find_spec("pip") is None
                    or importlib.util.find_spec("setuptools") is None,
                    reason="needs the venv module, pip and setuptools (to build the wheel without network)")
def test_wheel_installs_and_is_discovered(tmp_path: Path) -> None:
    started = time.monotonic()
    source = tmp_path / "microkube-ptp"  # a copy: building must not leave build/ or *.egg-info in the repository
    shutil.copytree(PACK, source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__", ".tox"))
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("microkube_ptp-*.whl")
    built = time.monotonic()
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"microkube_ptp/py.typed", "microkube_ptp/plugin.py", "microkube_ptp/network.py"} <= names, names
    assert not any("tests/" in name for name in names), names

    venv = tmp_path / "venv"
    # --system-site-packages: microkube and microkube-interfaces come from the test environment; pip's module too.
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("MICROKUBE_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH")}
    env["MICROKUBE_PLUGINS"] = "ptp"

    # `microkube plugins` with the environment's interpreter (the console script runs microkube.cli's main).
    listing = _run(python, "-m", "microkube.cli", "plugins", env=env)
    rows = [line.split() for line in listing.splitlines()]
    assert rows[0] == ["NAME", "DISTRIBUTION", "VERSION", "INTERFACES"], listing
    assert ["ptp", "microkube-ptp", "0.1.0", "cni/1.1"] in rows, listing

    found = json.loads(_run(python, "-c", PROBE, tmp_path / "state", env=env))
    assert Path(found["module"]).is_relative_to(venv), f"imported from {found['module']}, not the installed wheel"
    assert found["plugin"] == "ptp" and found["versions"] == ["1.1"] and found["is_cni_plugin"], found
    assert found["networks"] == ["ptp"], found  # the allow-list kept every other installed pack out
    assert found["loaded"] == [["ptp", "microkube-ptp", "0.1.0", {"cni": ["1.1"]}]], found
    print(f"wheel built in {built - started:.1f} s, installed and discovered in {time.monotonic() - built:.1f} s")
