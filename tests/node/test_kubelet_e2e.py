"""`microkube up` as a one-machine cluster with real containers: the kubelet runs pods through the runc
pack and the bridge pack, and the real kubectl drives it (issue 4, "proven with real containers").

One cluster per module (its own data dir, bridge, nft table, pod CIDR and cgroup parent); the last test
deletes every pod and proves nothing of ours is left on the host.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microkube.testing import (
    Kubectl,
    ServerProcess,
    eventually,
    find_kubectl,
    own_memory_cgroup,
    remove_cgroup_tree,
)

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.slow]

if os.geteuid() != 0 or not shutil.which("runc"):
    pytest.skip("needs root and runc (CI runs as root and installs runc)", allow_module_level=True)

IMAGE = "microkube.local/busybox:latest"
NODE = "mk-e2e-node"
BRIDGE = "mke2e0"
NFT_TABLE = "microkube-e2e"
CLUSTER_CIDR = "10.236.0.0/16"


def http_get(url: str) -> str:
    """GET from the host in a child process: the test process's socket guard admits loopback only, and pod
    addresses live in namespaces this test made."""
    code = ("import sys, urllib.request; "
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
    return subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True,
                          env={**os.environ, "NO_PROXY": "*"}).stdout


def _scrub(node_dir: Path, cgroup_parent: str, *, bridge: str = BRIDGE, nft_table: str = NFT_TABLE) -> None:
    """Whatever a failed test left: containers, netns mounts, the cgroup tree, the bridge, the nft table."""
    runc_root = node_dir / "runc" / "state" / "runc"
    listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
    for container in listed.stdout.split():
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", container], capture_output=True)
    remove_cgroup_tree(cgroup_parent, kill=True)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        if target.startswith(str(node_dir)):
            subprocess.run(["umount", "-l", target], capture_output=True)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    subprocess.run(["nft", "delete", "table", "inet", nft_table], capture_output=True, check=False)


def on_terminal(kubectl: Kubectl, args: list[str], typed: list[bytes], *, columns: int = 100, rows: int = 30,
                timeout: float = 60.0) -> tuple[int, str]:
    """Run kubectl on a pty of ``columns`` x ``rows`` as a person would, typing ``typed`` (each after the
    output so far stops growing for a moment); returns the exit code and everything the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen([kubectl.binary, *args], stdin=slave, stdout=slave, stderr=slave,
                               env=kubectl.env(), start_new_session=True)
    os.close(slave)
    shown = b""
    pending = list(typed)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.5)
            if not readable:
                if pending:
                    os.write(master, pending.pop(0))
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: kubectl exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, shown.decode(errors="replace")


class Cluster:
    def __init__(self, server: ServerProcess, kubectl: Kubectl, cgroup_parent: str) -> None:
        self.server = server
        self.kubectl = kubectl
        self.cgroup_parent = cgroup_parent
        self.node_dir = server.data_dir / "node"

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", input=manifest)

    def pod(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.kubectl.json("get", "pod", name)
        return result

    def container_status(self, name: str, index: int = 0) -> dict[str, Any]:
        statuses = self.pod(name)["status"].get("containerStatuses") or []
        return statuses[index] if len(statuses) > index else {}

    def wait_ready(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            pod = self.pod(name)
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            return pod if conditions.get("Ready") == "True" else None

        result: dict[str, Any] = eventually(ready, timeout, f"pod {name} Ready")
        return result

    def kubelet_pids(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kubelet" in argv and str(self.node_dir).encode() in argv:
                found.append(int(entry.name))
        return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = find_kubectl()
    if binary is None:
        pytest.fail("kubectl 1.32 is not installed; .ci/run installs it")
    data_dir = tmp_path_factory.mktemp("node-e2e")
    cgroup_parent = f"{own_memory_cgroup().rstrip('/')}/microkube-e2e-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(
        data_dir, subcommand="up", components=True,
        env={"MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "0", "MICROKUBE_PLUGINS": "runc,bridge"},
        extra_args=["--node-name", NODE, "--kubelet-port", "0", "--cluster-cidr", CLUSTER_CIDR,
                    "--pod-manifest-path", str(data_dir / "manifests"),
                    f"--network-option=bridge={BRIDGE}", f"--network-option=nftTable={NFT_TABLE}",
                    f"--runtime-option=cgroupParent={cgroup_parent}"])
    (data_dir / "manifests").mkdir()
    server.start(timeout=60)
    kubectl = Kubectl(binary, server.kubeconfig, data_dir / "kubectl-home")
    try:
        eventually(lambda: "True" in kubectl("get", "node", NODE, "-o",
                                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}"),
                   60, "the node Ready")
        yield Cluster(server, kubectl, cgroup_parent)
    finally:
        kubectl.run("delete", "deployments,replicasets", "--all", check=False, timeout=60)
        kubectl.run("delete", "pods", "--all", "--grace-period=0", "--force", check=False, timeout=60)
        sandboxes = data_dir / "node" / "runc" / "state" / "sandboxes"
        deadline = time.monotonic() + 30  # the kubelet tears down what was force-deleted
        while sandboxes.exists() and any(sandboxes.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.5)
        server.stop(timeout=30)
        _scrub(data_dir / "node", cgroup_parent)
        if server.log_path is not None and os.environ.get("MICROKUBE_E2E_LOG"):
            print(server.log_path.read_text()[-20000:])


def test_node_registers_with_the_machines_facts(cluster: Cluster) -> None:
    node = cluster.kubectl.json("get", "node", NODE)
    status = node["status"]
    assert int(status["capacity"]["cpu"]) == os.cpu_count()
    assert status["capacity"]["pods"] == "110"
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")
    assert status["nodeInfo"]["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert node["spec"]["podCIDR"].startswith("10.236.")
    lease = cluster.kubectl.json("get", "lease", "-n", "kube-node-lease", NODE)
    assert lease["spec"]["holderIdentity"] == NODE


WEB = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {IMAGE}
        command: ["sh", "-c", "echo hello from $(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"]
        ports: [{{containerPort: 80, name: http}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
        volumeMounts: [{{name: www, mountPath: /www}}]
      volumes: [{{name: www, emptyDir: {{}}}}]
"""


def test_deployment_pods_answer_on_their_pod_ips(cluster: Cluster) -> None:
    cluster.apply(WEB)
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=100)
    pods = cluster.kubectl.json("get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    ips = [p["status"]["podIP"] for p in pods]
    assert all(ip.startswith("10.236.") for ip in ips) and len(set(ips)) == 2
    for pod in pods:  # from the host
        body = http_get(f"http://{pod['status']['podIP']}/")
        assert body.strip() == f"hello from {pod['metadata']['name']}"
    first, second = pods  # from another pod
    answer = cluster.kubectl("exec", first["metadata"]["name"], "--", "sh", "-c",
                             f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {second['status']['podIP']} 80")
    assert answer.strip().endswith(f"hello from {second['metadata']['name']}")
    assert first["status"]["qosClass"] == "BestEffort"
    assert first["status"]["hostIP"]


def test_logs_exec_cp_and_port_forward_through_kubectl(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.2; done"]
""")
    cluster.wait_ready("talker")
    eventually(lambda: "line 3" in cluster.kubectl("logs", "talker"), 30, "log lines")
    assert len(cluster.kubectl("logs", "talker", "--tail=2").splitlines()) == 2
    follow = cluster.kubectl.popen("logs", "-f", "talker", "--tail=1")
    try:
        assert follow.stdout is not None
        seen = [follow.stdout.readline() for _ in range(3)]
        assert all(line.startswith("line ") for line in seen)
    finally:
        follow.kill()
        follow.communicate()
    assert cluster.kubectl("exec", "talker", "--", "echo", "hi").strip() == "hi"
    assert cluster.kubectl("exec", "-i", "talker", "--", "cat", input="piped\n").strip() == "piped"
    assert cluster.kubectl.run("exec", "talker", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    local = tmp_path / "payload.txt"
    local.write_text("copied in and out\n")
    cluster.kubectl("cp", str(local), "talker:/tmp/payload.txt")
    back = tmp_path / "back.txt"
    cluster.kubectl("cp", "talker:/tmp/payload.txt", str(back))
    assert back.read_text() == "copied in and out\n"

    web = cluster.kubectl.json("get", "pods", "-l", "app=web")["items"][0]["metadata"]["name"]
    forward = subprocess.Popen([cluster.kubectl.binary, "port-forward", f"pod/{web}", ":80"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.kubectl.env())
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 80
        port = int(line.split("127.0.0.1:", 1)[1].split()[0])
        body = http_get(f"http://127.0.0.1:{port}/")
        assert body.strip() == f"hello from {web}"
    finally:
        forward.send_signal(signal.SIGINT)
        forward.communicate(timeout=10)


def test_exec_and_attach_on_a_terminal(cluster: Cluster) -> None:
    """``kubectl exec -it`` gets a terminal of the caller's size; ``kubectl attach -i`` feeds a stdinOnce
    container; ``kubectl attach -it`` drives a shell on a tty container."""
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: terminals}}
spec:
  restartPolicy: Never
  containers:
  - {{name: idle, image: {IMAGE}, command: ["sleep", "3600"]}}
  - {{name: reader, image: {IMAGE}, command: ["sh", "-c", "read line; echo got $line; exit 4"],
     stdin: true, stdinOnce: true}}
  - {{name: shell, image: {IMAGE}, command: ["sh"], stdin: true, tty: true}}
""")
    cluster.wait_ready("terminals")
    code, shown = on_terminal(cluster.kubectl, ["exec", "-it", "terminals", "-c", "idle", "--", "sh", "-c",
                                                "tty; read word; stty size; echo typed:$word; exit 5"],
                              [b"hello\r"])
    assert "/dev/pts/" in shown, shown
    assert "30 100" in shown, shown
    assert "typed:hello" in shown, shown
    assert code == 5, shown

    attached = cluster.kubectl.run("attach", "-i", "terminals", "-c", "reader", input="over stdin\n", check=False)
    assert "got over stdin" in attached.stdout, attached
    assert "got over stdin" in cluster.kubectl("logs", "terminals", "-c", "reader")
    eventually(lambda: cluster.container_status("terminals", 1).get("state", {}).get("terminated", {})
               .get("exitCode") == 4, 30, "the reader to exit with its code")

    code, shown = on_terminal(cluster.kubectl, ["attach", "-it", "terminals", "-c", "shell"],
                              [b"\r", b"echo $((6*7)) $(tty)\r", b"exit 0\r"])
    assert "42 /dev/pts/" in shown, shown
    assert code == 0, shown
    eventually(lambda: cluster.container_status("terminals", 2).get("state", {}).get("terminated"), 30,
               "the shell to exit")

    code, shown = on_terminal(cluster.kubectl, ["run", "one-off", "-it", "--rm", "--restart=Never", f"--image={IMAGE}",
                                                "--", "sh"], [b"\r", b"echo $((3*5)) from $(hostname)\r", b"exit\r"])
    assert "15 from one-off" in shown, shown
    assert code == 0, shown
    eventually(lambda: "one-off" not in cluster.kubectl("get", "pods", "-o", "name"), 60, "kubectl run --rm to delete")


def test_service_links_reach_the_environment(cluster: Cluster) -> None:
    """Containers get the master service's and their namespace's services as environment variables."""
    cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: linked-db}
spec:
  ports: [{port: 5432}]
  selector: {app: nothing}
""")
    cluster_ip = cluster.kubectl("get", "service", "linked-db", "-o", "jsonpath={.spec.clusterIP}").strip()
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: linked}}
spec:
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "3600"]}}
""")
    cluster.wait_ready("linked")
    env = cluster.kubectl("exec", "linked", "--", "env")
    assert f"LINKED_DB_SERVICE_HOST={cluster_ip}" in env.splitlines(), env
    assert "LINKED_DB_SERVICE_PORT=5432" in env.splitlines(), env
    assert any(line.startswith("KUBERNETES_SERVICE_HOST=") for line in env.splitlines()), env


def test_restarts_crash_loop_and_previous_logs(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: crasher}}
spec:
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "echo run at $(date +%s%N); exit 2"]}}
""")

    def looping() -> bool:
        status = cluster.container_status("crasher")
        return bool(status.get("restartCount", 0) >= 2
                    and status["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff")

    eventually(looping, 60, "CrashLoopBackOff after two restarts")
    status = cluster.container_status("crasher")
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert "run at" in cluster.kubectl("logs", "crasher", "--previous")
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=crasher")
    assert "BackOff" in events


def test_oom_kill_under_a_memory_limit(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\\\0' a); echo survived"]
    resources: {{limits: {{memory: 16Mi}}}}
""")
    eventually(lambda: cluster.pod("hog")["status"].get("phase") == "Failed", 60, "the pod Failed")
    terminated = cluster.container_status("hog")["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137


def test_probes_feed_readiness_and_restart_on_liveness_failure(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}, periodSeconds: 1}}
    livenessProbe: {{exec: {{command: [test, '!', -f, /tmp/sick]}}, periodSeconds: 1, failureThreshold: 2}}
""")
    eventually(lambda: cluster.container_status("probed").get("state", {}).get("running"), 60, "running")
    assert cluster.container_status("probed")["ready"] is False
    cluster.kubectl("exec", "probed", "--", "touch", "/tmp/ready")
    cluster.wait_ready("probed", 30)
    cluster.kubectl("exec", "probed", "--", "touch", "/tmp/sick")
    eventually(lambda: cluster.container_status("probed").get("restartCount", 0) >= 1, 60, "a liveness restart")
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=probed")
    assert "Unhealthy" in events and "failed liveness probe" in events
    # a new instance starts unready: /tmp/ready is gone with the old container's filesystem
    eventually(lambda: cluster.container_status("probed").get("ready") is False, 30, "unready after restart")


def test_init_containers_sidecars_env_and_configmap_volumes(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello, file.txt: from a configmap}}
---
apiVersion: v1
kind: Pod
metadata: {{name: staged, labels: {{tier: demo}}}}
spec:
  initContainers:
  - {{name: prepare, image: {IMAGE}, command: ["sh", "-c", "echo prepared > /work/state"],
     volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: helper, image: {IMAGE}, restartPolicy: Always, command: ["sh", "-c", "sleep 3600"]}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "sleep 3600"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: MESSAGE, value: "$(GREETING) from $(POD_NAME)"}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /etc/cfg}}
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: settings}}}}
""")
    pod = cluster.wait_ready("staged", 60)
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert init["prepare"]["state"]["terminated"]["reason"] == "Completed"
    assert "running" in init["helper"]["state"]
    assert cluster.kubectl("exec", "staged", "-c", "main", "--", "cat", "/work/state").strip() == "prepared"
    assert cluster.kubectl("exec", "staged", "-c", "main", "--", "sh", "-c", "echo $MESSAGE").strip() == \
        "hello from staged"
    assert cluster.kubectl("exec", "staged", "-c", "main", "--", "cat", "/etc/cfg/file.txt") == "from a configmap"


def test_security_context_basics(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: locked}}
spec:
  securityContext: {{runAsUser: 1000, runAsGroup: 3000}}
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "3600"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
""")
    cluster.wait_ready("locked")
    assert cluster.kubectl("exec", "locked", "--", "id", "-u").strip() == "1000"
    assert cluster.kubectl("exec", "locked", "--", "id", "-g").strip() == "3000"
    assert cluster.kubectl.run("exec", "locked", "--", "touch", "/written", check=False).returncode != 0
    status = cluster.kubectl("exec", "locked", "--", "cat", "/proc/self/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["CapBnd"].strip(), 16) == 1 << 10  # CAP_NET_BIND_SERVICE only
    assert fields["NoNewPrivs"].strip() == "1"


def test_wrong_input_is_reported_in_status_and_events(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: partial}}
data: {{present: "yes"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: no-image}}
spec:
  containers: [{{name: c, image: "127.0.0.1:9/missing/app:v1"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: bad-command}}
spec:
  containers: [{{name: c, image: {IMAGE}, command: ["/no/such/binary"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: bad-env}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: [sleep, "3600"]
    env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: partial, key: absent}}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: bad-volume}}
spec:
  containers: [{{name: c, image: {IMAGE}, command: [sleep, "3600"]}}]
  volumes: [{{name: v, configMap: {{name: no-such-configmap}}}}]
""")

    def waiting(name: str) -> str:
        return str(cluster.container_status(name).get("state", {}).get("waiting", {}).get("reason", ""))

    eventually(lambda: waiting("no-image") in ("ErrImagePull", "ImagePullBackOff"), 60, "ErrImagePull")
    eventually(lambda: waiting("no-image") == "ImagePullBackOff", 60, "ImagePullBackOff")
    eventually(lambda: waiting("bad-command") in ("CreateContainerError", "RunContainerError"), 60, "create error")
    def config_error() -> str:
        state = cluster.container_status("bad-env").get("state", {}).get("waiting", {})
        return str(state.get("message", "")) if state.get("reason") == "CreateContainerConfigError" else ""

    message = eventually(lambda: "absent" in config_error() and config_error(), 60, "the missing key named")
    assert "partial" in message
    eventually(lambda: "FailedMount" in cluster.kubectl("get", "events", "--field-selector",
                                                          "involvedObject.name=bad-volume"), 60, "FailedMount")
    assert cluster.pod("bad-volume")["status"]["phase"] == "Pending"


def test_graceful_termination_runs_pre_stop(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: graceful}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; while :; do sleep 0.2; done"]
    lifecycle:
      preStop: {{exec: {{command: ["sh", "-c", "echo pre-stop ran > /proc/1/fd/1"]}}}}
""")
    cluster.wait_ready("graceful")
    log_dir = next((cluster.node_dir / "logs").glob("default_graceful_*"))
    cluster.kubectl("delete", "pod", "graceful", "--wait=true", timeout=60)
    assert not log_dir.exists()  # the pod's logs go with it


def test_static_pods_run_with_a_mirror_pod(cluster: Cluster) -> None:
    manifest = cluster.server.data_dir / "manifests" / "static-web.yaml"
    manifest.write_text(f"""
apiVersion: v1
kind: Pod
metadata: {{name: static-web, labels: {{app: static}}}}
spec:
  containers: [{{name: c, image: {IMAGE}, command: ["sleep", "3600"]}}]
""")
    name = f"static-web-{NODE}"
    mirror = cluster.wait_ready(name, 60)
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.source"] == "file"
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"]
    assert mirror["metadata"]["ownerReferences"][0]["kind"] == "Node"
    cluster.kubectl("delete", "pod", name, "--wait=false")  # the kubelet puts the mirror back
    eventually(lambda: cluster.pod(name)["metadata"].get("deletionTimestamp") is None
               and cluster.pod(name)["status"].get("phase") == "Running", 60, "the mirror pod back")
    manifest.unlink()
    eventually(lambda: cluster.kubectl.run("get", "pod", name, check=False).returncode != 0, 60,
               "the mirror pod gone")


def test_kubelet_restart_keeps_every_pod_running(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: tty-survivor, labels: {{app: web}}}}
spec:
  restartPolicy: Never
  containers:
  - {{name: shell, image: {IMAGE}, command: ["sh"], stdin: true, tty: true}}
""")
    cluster.wait_ready("tty-survivor")
    before = {p["metadata"]["name"]: (p["status"]["containerStatuses"][0].get("containerID"),
                                      p["status"]["containerStatuses"][0].get("restartCount"))
              for p in cluster.kubectl.json("get", "pods", "-l", "app=web")["items"]}
    pids = cluster.kubelet_pids()
    assert pids, "no kubelet process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    eventually(lambda: cluster.kubelet_pids() and set(cluster.kubelet_pids()) != set(pids), 30, "a new kubelet")
    time.sleep(3)  # a few relists of the new kubelet
    after = {p["metadata"]["name"]: (p["status"]["containerStatuses"][0].get("containerID"),
                                     p["status"]["containerStatuses"][0].get("restartCount"))
             for p in cluster.kubectl.json("get", "pods", "-l", "app=web")["items"]}
    assert after == before
    for name in before:
        cluster.wait_ready(name, 30)
    assert cluster.kubectl("exec", next(iter(before)), "--", "echo", "still here").strip() == "still here"
    # the tty container's terminal survived too: the same shell answers through the new kubelet
    code, shown = on_terminal(cluster.kubectl, ["attach", "-it", "tty-survivor"],
                              [b"\r", b"echo $((8*8))\r", b"exit\r"])
    assert "64" in shown and code == 0, shown
    cluster.kubectl("delete", "pod", "tty-survivor", "--wait=false")


def test_a_second_node_joins_with_a_token(cluster: Cluster, tmp_path: Path) -> None:
    created = subprocess.run([sys.executable, "-m", "microkube.cli", "token", "create", "--data-dir",
                              str(cluster.server.data_dir)], capture_output=True, text=True, check=True)
    join = created.stdout.splitlines()[1].split()
    assert join[:2] == ["microkube", "agent"]
    agent_dir = tmp_path / "agent"
    cgroup_parent = f"{cluster.cgroup_parent}-agent"
    name = "mk-e2e-agent"
    command = [sys.executable, "-m", "microkube.cli", *join[1:], "--data-dir", str(agent_dir), "--node-name", name,
               "--kubelet-port", "0", "--network-option=bridge=mke2e1", "--network-option=nftTable=microkube-e2e1",
               f"--runtime-option=cgroupParent={cgroup_parent}"]
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "MICROKUBE_DISABLE_PLUGIN_AUTOLOAD": "0",
                                  "MICROKUBE_PLUGINS": "runc,bridge"})
    try:
        eventually(lambda: "True" in cluster.kubectl("get", "node", name, "-o", "jsonpath={.status.conditions["
                                                     "?(@.type=='Ready')].status}"), 90, "the joined node Ready")
        identity = cluster.kubectl("--kubeconfig", str(agent_dir / "kubelet.kubeconfig"), "auth", "whoami",
                                   "-o", "jsonpath={.status.userInfo.username}")
        assert identity == f"system:node:{name}"
        cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-agent}}
spec:
  nodeName: {name}
  containers: [{{name: c, image: {IMAGE}, command: ["sh", "-c", "echo joined; sleep 3600"]}}]
""")
        pod = cluster.wait_ready("on-agent", 60)
        assert pod["status"]["podIP"].startswith("10.236.")
        assert cluster.kubectl("logs", "on-agent").strip() == "joined"  # through the agent's kubelet API
        cluster.kubectl("delete", "pod", "on-agent", "--grace-period=1", "--wait=true", timeout=60)
    finally:
        agent.terminate()
        agent.wait(30)
        log.close()
        cluster.kubectl.run("delete", "node", name, check=False)
        _scrub(agent_dir, cgroup_parent, bridge="mke2e1", nft_table="microkube-e2e1")


def test_after_every_pod_is_deleted_nothing_of_ours_is_left(cluster: Cluster) -> None:
    cluster.kubectl("delete", "deployment", "--all", timeout=60)
    cluster.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s", timeout=100)
    eventually(lambda: not cluster.kubectl.json("get", "pods")["items"], 60, "no pods")
    runc_state = cluster.node_dir / "runc" / "state"

    def nothing_left() -> list[str]:
        leftovers = []
        leftovers += [f"netns {p}" for p in (runc_state / "netns").glob("*")] if (runc_state / "netns").exists() \
            else []
        leftovers += [f"sandbox {p.name}" for p in (runc_state / "sandboxes").glob("*")] \
            if (runc_state / "sandboxes").exists() else []
        leftovers += [f"container {p.name}" for p in (runc_state / "containers").glob("*")] \
            if (runc_state / "containers").exists() else []
        links = subprocess.run(["ip", "-j", "link", "show", "master", BRIDGE], capture_output=True, text=True)
        leftovers += [f"veth {link['ifname']}" for link in json.loads(links.stdout or "[]")]
        cgroup = Path("/sys/fs/cgroup/memory") / cluster.cgroup_parent.lstrip("/")
        leftovers += [f"cgroup {p}" for p in cgroup.glob("pod-*")] if cgroup.exists() else []
        mounts = Path("/proc/self/mountinfo").read_text()
        leftovers += [f"mount {line.split()[4]}" for line in mounts.splitlines()
                      if str(cluster.node_dir) in line.split()[4]]
        leftovers += [f"pod dir {p.name}" for p in (cluster.node_dir / "pods").glob("*")] \
            if (cluster.node_dir / "pods").exists() else []
        listed = subprocess.run(["runc", "--root", str(runc_state / "runc"), "list", "-q"], capture_output=True,
                                text=True)
        leftovers += [f"runc container {c}" for c in listed.stdout.split()]
        return leftovers

    eventually(lambda: not nothing_left(), 30, "a clean node")
    assert nothing_left() == []
