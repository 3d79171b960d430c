"""Record the protobuf request bodies that kubectl 1.32's typed commands send, as test fixtures.

A loopback HTTP stub answers just enough (version, legacy discovery, an empty OpenAPI v3 index, a few
objects that commands read first) and records every POST and DELETE body. For each case the script writes

    core/tests/fixtures/protobuf/<name>.bin    the raw body, exactly as kubectl sent it
    core/tests/fixtures/protobuf/<name>.json   the JSON object the body must decode to
    core/tests/fixtures/protobuf/manifest.json name -> command, request path, Content-Type, oracle

The expected JSON comes from the oracle ``kubectl create … --dry-run=client -o json`` (the same object,
printed locally as JSON) with Go's empty structs removed: a protobuf decoder cannot tell an empty
non-pointer struct from an absent one, and the API server treats both alike. Commands without a
dry-run mode (``create token``, ``auth can-i``, ``auth whoami``) carry a hand-written expectation below,
taken from what the command line asks for.

Usage: python tools/capture_kubectl_bodies.py [KUBECTL]   (default /usr/lib/google-cloud-sdk/bin/kubectl.1.32)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
FIXTURES = Path(__file__).resolve().parents[1] / "core/tests/fixtures/protobuf"
PROTOBUF = "application/vnd.kubernetes.protobuf"
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

# group/version -> [(plural, kind, namespaced, short names)]
RESOURCES: dict[str, list[tuple[str, str, bool, list[str]]]] = {
    "v1": [("namespaces", "Namespace", False, ["ns"]), ("configmaps", "ConfigMap", True, ["cm"]),
           ("secrets", "Secret", True, []), ("serviceaccounts", "ServiceAccount", True, ["sa"]),
           ("services", "Service", True, ["svc"]), ("resourcequotas", "ResourceQuota", True, ["quota"]),
           ("pods", "Pod", True, ["po"]), ("nodes", "Node", False, ["no"])],
    "apps/v1": [("deployments", "Deployment", True, ["deploy"])],
    "batch/v1": [("jobs", "Job", True, []), ("cronjobs", "CronJob", True, ["cj"])],
    "autoscaling/v1": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"])],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True, []), ("rolebindings", "RoleBinding", True, []),
                                     ("clusterroles", "ClusterRole", False, []),
                                     ("clusterrolebindings", "ClusterRoleBinding", False, [])],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"])],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False, ["pc"])],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True, ["ing"])],
    "authorization.k8s.io/v1": [("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, []),
                                ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, [])],
    "authentication.k8s.io/v1": [("selfsubjectreviews", "SelfSubjectReview", False, [])],
}

# Objects that commands read before they write (autoscale, create job --from).
CRONJOB = {
    "apiVersion": "batch/v1", "kind": "CronJob",
    "metadata": {"name": "nightly", "namespace": "default", "uid": "6f1c2b1e-0000-4000-8000-000000000001"},
    "spec": {"schedule": "0 3 * * *", "jobTemplate": {"metadata": {"labels": {"team": "ops"}}, "spec": {
        "backoffLimit": 2, "template": {"spec": {
            "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "containers": [{
                "name": "backup", "image": "busybox:1.36", "command": ["sh", "-c", "echo backup"],
                "env": [{"name": "MODE", "value": "full"},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
                "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "conf", "configMap": {"name": "settings", "defaultMode": 420}}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule",
                             "tolerationSeconds": -1}]}}}}},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "uid": "6f1c2b1e-0000-4000-8000-000000000002"},
    "spec": {"selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
}
NODE = {"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node1", "uid": "6f1c2b1e-0000-4000-8000-000000000003"}}
PODS_ON_NODE = {  # drain lists these, deletes each, then polls it until the GET is 404
    "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
    "items": [{"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "worker", "namespace": "default", "uid": "6f1c2b1e-0000-4000-8000-000000000004"},
               "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox"}]},
               "status": {"phase": "Running"}}],
}
OBJECTS = {
    "/apis/batch/v1/namespaces/default/cronjobs/nightly": CRONJOB,
    "/apis/apps/v1/namespaces/default/deployments/web": DEPLOYMENT,
    "/api/v1/nodes/node1": NODE,
    "/api/v1/pods": PODS_ON_NODE,
}


@dataclass
class Case:
    name: str
    args: list[str]
    oracle: bool = True  # the command supports --dry-run=client -o json
    expected: dict[str, Any] | None = None  # hand-written expectation when there is no oracle
    reply: dict[str, Any] = field(default_factory=dict)  # the stub's answer to the POST, when no oracle
    # Dotted paths into the oracle. keep_empty: empty structs behind Go pointers, which protobuf carries.
    # go_zero: fields Go's JSON writes although zero (no omitempty), e.g. status counters and nil slices
    # as null; protobuf cannot tell these from absent fields and the server treats them alike.
    keep_empty: tuple[str, ...] = ()
    go_zero: tuple[str, ...] = ()


CASES = [
    Case("namespace", ["create", "namespace", "demo"]),
    Case("namespace-save-config", ["create", "namespace", "kept", "--save-config"]),
    Case("configmap", ["create", "configmap", "settings", "-n", "team", "--from-literal=a=1",
                       "--from-literal=greeting=hello world"]),
    Case("secret-generic", ["create", "secret", "generic", "creds", "--from-literal=password=s3cr3t",
                            "--from-literal=user=admin"]),
    Case("secret-docker-registry", ["create", "secret", "docker-registry", "pull", "--docker-server=registry.test",
                                    "--docker-username=u", "--docker-password=p", "--docker-email=u@example.test"]),
    Case("serviceaccount", ["create", "serviceaccount", "robot"]),
    Case("deployment", ["create", "deployment", "web", "--image=nginx:1.27", "--port=80", "--replicas=3"]),
    Case("deployment-zero-replicas", ["create", "deployment", "idle", "--image=nginx", "--replicas=0"]),
    Case("deployment-command", ["create", "deployment", "sleeper", "--image=busybox", "--", "sleep", "3600"]),
    Case("service-clusterip", ["create", "service", "clusterip", "api", "--tcp=80:http", "--tcp=443:8443"]),
    Case("service-clusterip-headless", ["create", "service", "clusterip", "headless", "--clusterip=None"]),
    Case("service-nodeport", ["create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"]),
    Case("service-externalname", ["create", "service", "externalname", "ext", "--external-name=example.test"]),
    Case("job", ["create", "job", "once", "--image=busybox", "--", "echo", "hi"]),
    Case("job-from-cronjob", ["create", "job", "manual", "--from=cronjob/nightly"],
         keep_empty=("spec.template.spec.volumes.0.emptyDir",)),
    Case("cronjob", ["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *",
                     "--restart=OnFailure", "--", "date"]),
    Case("quota", ["create", "quota", "limits", "--hard=pods=4,requests.cpu=1500m,limits.memory=2Gi",
                   "--scopes=NotTerminating"]),
    Case("role", ["create", "role", "reader", "--verb=get,list,watch", "--resource=pods,deployments.apps",
                  "--resource-name=web"]),
    Case("rolebinding", ["create", "rolebinding", "read", "--role=reader", "--user=alice",
                         "--serviceaccount=default:robot", "--group=devs"]),
    Case("clusterrole", ["create", "clusterrole", "metrics", "--verb=get", "--non-resource-url=/metrics",
                         "--non-resource-url=/healthz/*"]),
    Case("clusterrole-aggregation", ["create", "clusterrole", "monitoring",
                                     "--aggregation-rule=rbac.example.com/aggregate-to-monitoring=true"],
         go_zero=("rules",)),
    Case("clusterrolebinding", ["create", "clusterrolebinding", "metrics", "--clusterrole=metrics", "--user=bob"]),
    Case("priorityclass", ["create", "priorityclass", "high", "--value=1000", "--description=important",
                           "--preemption-policy=Never"]),
    Case("priorityclass-negative", ["create", "priorityclass", "low", "--value=-5", "--global-default=false"]),
    Case("pdb-percent", ["create", "pdb", "web", "--selector=app=web", "--min-available=50%"], go_zero=("status",)),
    Case("pdb-int", ["create", "pdb", "db", "--selector=app=db", "--max-unavailable=1"], go_zero=("status",)),
    Case("ingress", ["create", "ingress", "site", "--class=nginx", "--rule=foo.test/bar=svc:8080",
                     "--rule=foo.test/tls*=svc2:http,tls=cert", "--default-backend=fallback:80"]),
    Case("autoscale", ["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=80"],
         go_zero=("status",)),
    Case("drain-delete-options", ["drain", "node1", "--disable-eviction", "--force", "--grace-period=0",
                                  "--timeout=30s"], oracle=False,
         expected={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
         reply={"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}),
    Case("token", ["create", "token", "robot", "--duration=1h", "--audience=https://api.test",
                   "--audience=vault"], oracle=False,
         expected={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {"creationTimestamp": None},
                   "spec": {"audiences": ["https://api.test", "vault"], "expirationSeconds": 3600},
                   "status": {"expirationTimestamp": None}},  # Go writes a zero Time as null
         reply={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "status": {"token": "header.payload.signature", "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
    Case("token-bound", ["create", "token", "robot", "--bound-object-kind=Secret", "--bound-object-name=creds",
                         "--bound-object-uid=0b7f4a5c-1111-4222-8333-944455556666"], oracle=False,
         expected={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {"creationTimestamp": None},
                   "spec": {"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "creds",
                                               "uid": "0b7f4a5c-1111-4222-8333-944455556666"}},
                   "status": {"expirationTimestamp": None}},
         reply={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "status": {"token": "header.payload.signature", "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
    Case("can-i-resource", ["auth", "can-i", "create", "deployments.apps", "-n", "team"], oracle=False,
         expected={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {"creationTimestamp": None},
                   "spec": {"resourceAttributes": {"namespace": "team", "verb": "create", "group": "apps",
                                                   "resource": "deployments"}}},
         reply={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "status": {"allowed": True}}),
    Case("can-i-subresource", ["auth", "can-i", "get", "pods", "--subresource=log", "--all-namespaces"],
         oracle=False,
         expected={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {"creationTimestamp": None},
                   "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "subresource": "log"}}},
         reply={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "status": {"allowed": True}}),
    Case("can-i-non-resource", ["auth", "can-i", "get", "/logs"], oracle=False,
         expected={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {"creationTimestamp": None},
                   "spec": {"nonResourceAttributes": {"path": "/logs", "verb": "get"}}},
         reply={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "status": {"allowed": True}}),
    Case("can-i-list", ["auth", "can-i", "--list", "-n", "team"], oracle=False,
         expected={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                   "metadata": {"creationTimestamp": None}, "spec": {"namespace": "team"}},
         reply={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                "status": {"resourceRules": [], "nonResourceRules": [], "incomplete": False}}),
    Case("whoami", ["auth", "whoami"], oracle=False,
         expected={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                   "metadata": {"creationTimestamp": None}},
         reply={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "status": {"userInfo": {"username": "tester", "groups": ["system:authenticated"]}}}),
]


def discovery(path: str) -> dict[str, Any] | None:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    if path == "/apis":
        groups = []
        for group_version in RESOURCES:
            if "/" in group_version:
                entry = {"groupVersion": group_version, "version": group_version.split("/")[1]}
                groups.append({"name": group_version.split("/")[0], "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if group_version not in RESOURCES:
        return None
    resources = [{"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                  "verbs": ["create"] if kind.startswith("SelfSubject") else ALL_VERBS, "shortNames": short}
                 for plural, kind, namespaced, short in RESOURCES[group_version]]
    if group_version == "apps/v1":  # autoscale looks for the scale subresource of its target
        resources.append({"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
                          "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: bytes


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.recorded: list[Recorded] = []
        self.reply: dict[str, Any] = {}
        self.unanswered: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, document: Any) -> None:
        payload = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _not_found(self) -> None:
        self.server.unanswered.append(f"{self.command} {self.path}")
        self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": "not served by the capture stub", "reason": "NotFound", "code": 404})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/version":
            self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64"})
        elif path == "/openapi/v3":
            self._send(200, {"paths": {}})
        elif path in OBJECTS:
            self._send(200, OBJECTS[path])
        elif (document := discovery(path)) is not None:
            self._send(200, document)
        else:
            self._not_found()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.recorded.append(Recorded("POST", self.path, self.headers.get("Content-Type", ""), body))
        self._send(201, self.server.reply)

    def do_DELETE(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.recorded.append(Recorded("DELETE", self.path, self.headers.get("Content-Type", ""), body))
        self._send(200, self.server.reply)

    def do_PATCH(self) -> None:  # drain cordons the node first, with a JSON patch: answered, not recorded
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path = urlsplit(self.path).path
        if path in OBJECTS:
            self._send(200, OBJECTS[path])
        else:
            self._not_found()


def kubeconfig(directory: Path, port: int) -> Path:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "stub",
              "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
              "users": [{"name": "stub", "user": {"token": "capture"}}],
              "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "default"}}]}
    path = directory / "config"
    path.write_text(json.dumps(config))
    return path


def expectation(value: Any, case: Case, path: str = "") -> Any:
    """The oracle's JSON minus what a protobuf body cannot distinguish from absence (see Case)."""
    if isinstance(value, dict):
        pruned = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if child in case.go_zero:
                continue
            item = expectation(item, case, child)
            if item != {} or child in case.keep_empty:
                pruned[key] = item
        return pruned
    if isinstance(value, list):
        return [expectation(item, case, f"{path}.{index}") for index, item in enumerate(value)]
    return value


def main() -> None:
    kubectl = sys.argv[1] if len(sys.argv) > 1 else KUBECTL
    FIXTURES.mkdir(parents=True, exist_ok=True)
    stub = Stub()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    manifest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
               "KUBECONFIG": str(kubeconfig(home, stub.server_address[1])), "KUBECACHEDIR": str(home / "cache")}

        def run(args: list[str]) -> str:
            done = subprocess.run([kubectl, *args], env=env, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
            return done.stdout

        for case in CASES:
            if case.oracle:
                # kubectl parses flags strictly before "--"; the dry-run flags go in front of the command
                rendered: dict[str, Any] = json.loads(run(["--dry-run=client", "-o", "json", *case.args]))
                expected = expectation(rendered, case)
                stub.reply = rendered
            else:
                assert case.expected is not None
                expected, stub.reply = case.expected, case.reply
            stub.recorded.clear()
            run(case.args)
            if len(stub.recorded) != 1:
                raise SystemExit(f"{case.name}: expected one request body, got {[r.path for r in stub.recorded]}")
            request = stub.recorded[0]
            if not request.content_type.startswith(PROTOBUF):
                raise SystemExit(f"{case.name}: kubectl sent {request.content_type}, not protobuf")
            (FIXTURES / f"{case.name}.bin").write_bytes(request.body)
            (FIXTURES / f"{case.name}.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
            manifest[case.name] = {"command": ["kubectl", *case.args], "method": request.method, "path": request.path,
                                   "contentType": request.content_type,
                                   "expected": "kubectl --dry-run=client -o json" if case.oracle else "hand-written"}
            print(f"{case.name}: {len(request.body)} bytes, {request.method} {request.path}")
    stub.shutdown()
    (FIXTURES / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if stub.unanswered:
        print("answered 404 (expected: drain's GET of the pod it deleted):", *sorted(set(stub.unanswered)), sep="\n  ")


if __name__ == "__main__":
    main()
