"""Every manifest under examples/ applies cleanly to a real server (and there are some)."""

from __future__ import annotations

from pathlib import Path

import pytest

from microkube.testing import Kubectl

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Apply order where one example defines a kind another uses.
FIRST = ("crd.yaml",)


def manifests() -> list[Path]:
    found = sorted(EXAMPLES.glob("*.yaml"), key=lambda p: (p.name not in FIRST, p.name))
    return found


def test_examples_exist() -> None:
    assert len(manifests()) >= 3


def test_every_example_applies(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "examples")
    for manifest in manifests():
        kubectl("apply", "-n", "examples", "-f", str(manifest))
        if manifest.name == "crd.yaml":
            kubectl("wait", "--for=condition=established", "-f", str(manifest), "--timeout=30s")
    assert "first" in kubectl("get", "widgets", "-n", "examples")
    assert kubectl.json("get", "widget", "first", "-n", "examples")["spec"]["color"] == "blue"
    kubectl("scale", "widget", "first", "-n", "examples", "--replicas=4")
    assert kubectl.json("get", "widget", "first", "-n", "examples")["spec"]["replicas"] == 4
