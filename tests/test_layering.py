"""The layering rules of docs/ARCHITECTURE.md, enforced on every import statement in the repository.

- microkube_interfaces imports nothing of ours;
- core (microkube) imports microkube_interfaces only: never a plugin pack, boto3 or libcloud;
- plugin packs import microkube_interfaces (and microkube's public client), never each other;
- boto3 only in cloud/aws, libcloud only in cloud/libcloud.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _packages(base: str) -> dict[str, Path]:
    """Top-level import packages of the distributions under plugins/ or cloud/, with their source dirs."""
    found: dict[str, Path] = {}
    for src in sorted((ROOT / base).glob("*/src")):
        for pkg in src.iterdir():
            if (pkg / "__init__.py").exists():
                found[pkg.name] = pkg
    return found


PLUGIN_PACKAGES = {**_packages("plugins"), **_packages("cloud"), **_packages("examples")}
INTERFACES = ROOT / "interfaces" / "src" / "microkube_interfaces"
CORE = ROOT / "core" / "src" / "microkube"


def imported_modules(package_dir: Path) -> list[tuple[Path, int, str]]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.lineno, node.module))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def _violations(package_dir: Path, forbidden: set[str]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {module}"
            for path, line, module in imported_modules(package_dir) if _top(module) in forbidden]


def test_interfaces_import_nothing_of_ours() -> None:
    ours = {"microkube", *PLUGIN_PACKAGES}
    assert _violations(INTERFACES, ours) == []


def test_core_imports_interfaces_only() -> None:
    assert _violations(CORE, {*PLUGIN_PACKAGES, "boto3", "botocore", "libcloud"}) == []


@pytest.mark.parametrize("name", sorted(PLUGIN_PACKAGES) or ["<none yet>"])
def test_plugins_never_import_each_other(name: str) -> None:
    if name not in PLUGIN_PACKAGES:
        pytest.skip("no plugin packs in this repository yet")
    others = set(PLUGIN_PACKAGES) - {name}
    assert _violations(PLUGIN_PACKAGES[name], others) == []


def test_cloud_sdks_stay_in_their_packs() -> None:
    allowed = {"boto3": ROOT / "cloud" / "aws", "botocore": ROOT / "cloud" / "aws",
               "libcloud": ROOT / "cloud" / "libcloud"}
    bad = []
    for package_dir in [INTERFACES, CORE, *PLUGIN_PACKAGES.values()]:
        for path, line, module in imported_modules(package_dir):
            home = allowed.get(_top(module))
            if home is not None and home not in path.parents:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert bad == []


def test_the_rules_see_real_imports() -> None:
    """Guard against a vacuous pass: the scanner finds core's known imports of the interfaces."""
    modules = {module for _, _, module in imported_modules(CORE)}
    assert "microkube_interfaces.errors" in modules
