"""The machine's real kubectl 1.32 against a real ``microkube server`` (SQLite store, HTTPS)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from microkube.testing import Kubectl

pytestmark = pytest.mark.e2e

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1, description: How big the widget is.}
              color: {type: string, default: blue}
          status:
            type: object
            properties:
              ready: {type: boolean}
"""


def apply_text(kubectl: Kubectl, text: str, *args: str) -> str:
    return kubectl("apply", "-f", "-", *args, input=text)


def test_version_reports_1_32(kubectl: Kubectl) -> None:
    out = kubectl.json("version")
    assert out["serverVersion"]["major"] == "1"
    assert out["serverVersion"]["minor"] == "32"


def test_api_resources_lists_builtin_kinds(kubectl: Kubectl) -> None:
    out = kubectl("api-resources")
    for line in ("pods", "deployments", "customresourcedefinitions", "leases", "endpointslices"):
        assert line in out
    assert "po " in out and "deploy" in out


def test_explain_uses_real_schemas(kubectl: Kubectl) -> None:
    out = kubectl("explain", "deployment.spec.strategy")
    assert "rollingUpdate" in out
    out = kubectl("explain", "pods.spec.containers.image")
    assert "Container image name" in out


def test_get_output_modes(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "modes")
    kubectl("create", "configmap", "one", "-n", "modes", "--from-literal=a=b")
    kubectl("label", "configmap", "one", "-n", "modes", "tier=front")
    kubectl("create", "configmap", "two", "-n", "modes", "--from-literal=c=d")
    table = kubectl("get", "configmaps", "-n", "modes")
    assert table.splitlines()[0].split()[:3] == ["NAME", "DATA", "AGE"]
    assert "one" in table and "two" in table
    assert kubectl("get", "configmaps", "-n", "modes", "-l", "tier=front", "-o", "name").split() == [
        "configmap/one"]
    assert kubectl("get", "configmaps", "-n", "modes", "--field-selector", "metadata.name=two",
                   "-o", "name").split() == ["configmap/two"]
    doc = yaml.safe_load(kubectl("get", "configmap", "one", "-n", "modes", "-o", "yaml"))
    assert doc["data"] == {"a": "b"}
    assert doc["metadata"]["labels"] == {"tier": "front"}
    wide = kubectl("get", "configmaps", "-A", "-o", "wide")
    assert wide.splitlines()[0].startswith("NAMESPACE")
    chunked = kubectl("get", "configmaps", "-n", "modes", "--chunk-size=1", "-o", "name").split()
    assert "configmap/one" in chunked and "configmap/two" in chunked


def test_typed_create_commands_send_protobuf(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "typed")
    kubectl("create", "configmap", "cm", "-n", "typed", "--from-literal=k=v")
    kubectl("create", "secret", "generic", "sec", "-n", "typed", "--from-literal=password=s3cret")
    kubectl("create", "deployment", "dep", "-n", "typed", "--image=nginx", "--replicas=0", "--port=80")
    kubectl("create", "service", "clusterip", "svc", "-n", "typed", "--tcp=80:8080")
    kubectl("create", "job", "job", "-n", "typed", "--image=busybox", "--", "true")
    kubectl("create", "cronjob", "cron", "-n", "typed", "--image=busybox", "--schedule=*/5 * * * *")
    kubectl("create", "serviceaccount", "robot", "-n", "typed")
    deployment = kubectl.json("get", "deployment", "dep", "-n", "typed")
    assert deployment["spec"]["replicas"] == 0
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80
    service = kubectl.json("get", "service", "svc", "-n", "typed")
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["clusterIP"]
    secret = kubectl.json("get", "secret", "sec", "-n", "typed")
    assert secret["type"] == "Opaque"
    token = kubectl("create", "token", "robot", "-n", "typed").strip()
    assert token.count(".") == 2


def test_create_apply_diff_patch(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("create", "namespace", "apply")
    manifest = tmp_path / "web.yaml"
    manifest.write_text(DEPLOYMENT)
    assert "created" in kubectl("apply", "-n", "apply", "-f", str(manifest))
    assert "unchanged" in kubectl("apply", "-n", "apply", "-f", str(manifest))
    changed = DEPLOYMENT.replace("nginx:1.27", "nginx:1.28")
    manifest.write_text(changed)
    diff = kubectl.run("diff", "-n", "apply", "-f", str(manifest), check=False)
    assert diff.returncode == 1, diff.stderr
    assert "nginx:1.28" in diff.stdout
    live = kubectl.json("get", "deployment", "web", "-n", "apply")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"  # diff never persists
    assert "configured" in kubectl("apply", "-n", "apply", "-f", str(manifest))
    live = kubectl.json("get", "deployment", "web", "-n", "apply")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert live["metadata"]["generation"] == 2
    kubectl("patch", "deployment", "web", "-n", "apply", "--type=merge", "-p", '{"spec":{"replicas":3}}')
    kubectl("patch", "deployment", "web", "-n", "apply", "--type=json",
            "-p", '[{"op":"add","path":"/spec/minReadySeconds","value":5}]')
    kubectl("patch", "deployment", "web", "-n", "apply", "--type=strategic",
            "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}')
    live = kubectl.json("get", "deployment", "web", "-n", "apply")
    assert live["spec"]["replicas"] == 3
    assert live["spec"]["minReadySeconds"] == 5
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["sidecar", "nginx"] or [
        c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["nginx", "sidecar"]
    kubectl("annotate", "deployment", "web", "-n", "apply", "owner=team-a")
    kubectl("scale", "deployment", "web", "-n", "apply", "--replicas=1")
    live = kubectl.json("get", "deployment", "web", "-n", "apply")
    assert live["spec"]["replicas"] == 1
    assert live["metadata"]["annotations"]["owner"] == "team-a"


def test_server_side_apply_and_conflicts(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "ssa")
    out = apply_text(kubectl, DEPLOYMENT, "-n", "ssa", "--server-side")
    assert "serverside-applied" in out
    live = kubectl.json("get", "deployment", "web", "-n", "ssa", "--show-managed-fields")
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert "kubectl" in managers
    kubectl("scale", "deployment", "web", "-n", "ssa", "--replicas=5")
    conflict = kubectl.run("apply", "-f", "-", "-n", "ssa", "--server-side", input=DEPLOYMENT, check=False)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower()
    apply_text(kubectl, DEPLOYMENT, "-n", "ssa", "--server-side", "--force-conflicts")
    assert kubectl.json("get", "deployment", "web", "-n", "ssa")["spec"]["replicas"] == 2


def test_edit_with_scripted_editor(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("create", "namespace", "edit")
    kubectl("create", "configmap", "settings", "-n", "edit", "--from-literal=mode=slow")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/mode: slow/mode: fast/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    kubectl.run("edit", "configmap", "settings", "-n", "edit", env={"KUBE_EDITOR": str(editor)})
    assert kubectl.json("get", "configmap", "settings", "-n", "edit")["data"]["mode"] == "fast"


def test_invalid_input_is_refused_with_field(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "bad")
    bad = DEPLOYMENT.replace("image: nginx:1.27", "imagez: nginx:1.27")
    result = kubectl.run("apply", "-n", "bad", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "imagez" in result.stderr
    missing = DEPLOYMENT.replace("        image: nginx:1.27\n", "")
    result = kubectl.run("apply", "-n", "bad", "-f", "-", input=missing, check=False)
    assert result.returncode != 0
    assert "spec.template.spec.containers[0].image" in result.stderr
    assert kubectl.run("get", "deployment", "web", "-n", "bad", check=False).returncode != 0


def test_watch_prints_changes(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "watch")
    watcher = kubectl.popen("get", "configmaps", "-n", "watch", "-w", "--request-timeout=8s")
    time.sleep(1.5)
    kubectl("create", "configmap", "seen", "-n", "watch", "--from-literal=a=b")
    out, _ = watcher.communicate(timeout=30)
    assert "seen" in out


def test_delete_modes_and_wait(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "del")
    owner = kubectl.json("create", "configmap", "owner", "-n", "del", "--from-literal=a=b")
    dependent = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": "del", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": True}]},
    }
    kubectl("create", "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner", "-n", "del", "--cascade=foreground", "--timeout=30s")
    assert kubectl.run("get", "configmap", "dependent", "-n", "del", check=False).returncode != 0

    owner = kubectl.json("create", "configmap", "owner2", "-n", "del", "--from-literal=a=b")
    dependent["metadata"]["name"] = "kept"
    dependent["metadata"]["ownerReferences"][0].update(name="owner2", uid=owner["metadata"]["uid"])
    kubectl("create", "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner2", "-n", "del", "--cascade=orphan")
    kept = kubectl.json("get", "configmap", "kept", "-n", "del")
    assert "ownerReferences" not in kept["metadata"]

    owner = kubectl.json("create", "configmap", "owner3", "-n", "del", "--from-literal=a=b")
    dependent["metadata"]["name"] = "gone"
    dependent["metadata"]["ownerReferences"][0].update(name="owner3", uid=owner["metadata"]["uid"])
    kubectl("create", "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner3", "-n", "del")
    kubectl("wait", "--for=delete", "configmap/gone", "-n", "del", "--timeout=30s")

    kubectl("create", "configmap", "forced", "-n", "del", "--from-literal=a=b")
    kubectl("delete", "configmap", "forced", "-n", "del", "--grace-period=0", "--force")
    assert kubectl.run("get", "configmap", "forced", "-n", "del", check=False).returncode != 0


def test_namespace_deletion_removes_contents(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "doomed")
    kubectl("create", "configmap", "inside", "-n", "doomed", "--from-literal=a=b")
    kubectl("delete", "namespace", "doomed", "--timeout=60s")
    assert kubectl.run("get", "namespace", "doomed", check=False).returncode != 0


def test_crd_round_trip(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "crd")
    apply_text(kubectl, CRD)
    kubectl("wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=30s")
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
    apply_text(kubectl, widget, "-n", "crd")
    table = kubectl("get", "widgets", "-n", "crd")
    assert table.split()[:2] == ["NAME", "SIZE"] and "w1" in table and "3" in table
    live = kubectl.json("get", "wd", "w1", "-n", "crd")
    assert live["spec"]["color"] == "blue"  # schema default
    bad = widget.replace("size: 3", "size: 0").replace("w1", "w2")
    result = kubectl.run("apply", "-n", "crd", "-f", "-", input=bad, check=False)
    assert result.returncode != 0 and "spec.size" in result.stderr
    assert "How big the widget is" in kubectl("explain", "widgets.spec.size")
    kubectl("delete", "crd", "widgets.example.com")


def test_kubeconfig_is_private(microkube_server) -> None:  # type: ignore[no-untyped-def]
    mode = os.stat(microkube_server.kubeconfig).st_mode & 0o777
    assert mode == 0o600


def test_bad_token_gets_401(kubectl: Kubectl, tmp_path: Path) -> None:
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": "not-a-valid-token"}
    wrong = tmp_path / "wrong-token"
    wrong.write_text(yaml.safe_dump(config))
    result = kubectl.run("get", "pods", env={"KUBECONFIG": str(wrong)}, check=False)
    assert result.returncode != 0
    assert "must be logged in to the server" in result.stderr
