"""Defaulting and validation of built-in kinds, compared with what kube-apiserver 1.32 returns."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from microkube.apiserver.defaults import apply_defaults
from microkube.apiserver.quantity import parse_quantity
from microkube.apiserver.validation import cron_error, validate
from microkube_interfaces import errors


def deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}}


def causes(group: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, str]:
    with pytest.raises(errors.Invalid) as error:
        validate(group, kind, obj, old)
    return {c.field: c.reason for c in error.value.causes}


def test_deployment_defaults_match_kubernetes() -> None:
    obj = deployment()
    apply_defaults("apps", "Deployment", obj)
    spec = obj["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    pod = spec["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["schedulerName"], pod["terminationGracePeriodSeconds"]) == (
        "Always", "ClusterFirst", "default-scheduler", 30)
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "Always"  # no tag means latest
    assert container["terminationMessagePath"] == "/dev/termination-log"
    validate("apps", "Deployment", obj, None)


def test_defaults_are_idempotent() -> None:
    once = deployment()
    apply_defaults("apps", "Deployment", once)
    twice = copy.deepcopy(once)
    apply_defaults("apps", "Deployment", twice)
    assert once == twice


def test_service_and_pod_defaults() -> None:
    service = {"spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    apply_defaults("", "Service", service)
    assert service["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert service["spec"]["externalTrafficPolicy"] == "Cluster" and service["status"] == {"loadBalancer": {}}
    pod = {"spec": {"containers": [{"name": "c", "image": "i:1.0",
                                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}
    apply_defaults("", "Pod", pod)
    assert pod["status"]["qosClass"] == "Guaranteed"
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert {t["key"] for t in pod["spec"]["tolerations"]} == {"node.kubernetes.io/not-ready",
                                                              "node.kubernetes.io/unreachable"}


def test_invalid_deployment_fields_are_named() -> None:
    obj = deployment()
    obj["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    obj["spec"]["replicas"] = -1
    del obj["spec"]["template"]["spec"]["containers"][0]["image"]
    found = causes("apps", "Deployment", obj)
    assert found == {"spec.replicas": "FieldValueInvalid", "spec.template.metadata.labels": "FieldValueInvalid",
                     "spec.template.spec.containers[0].image": "FieldValueRequired"}


def test_selector_is_immutable() -> None:
    old = deployment()
    new = deployment()
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert causes("apps", "Deployment", new, old) == {"spec.selector": "FieldValueInvalid"}


def test_service_validation() -> None:
    found = causes("", "Service", {"metadata": {"name": "Bad.Name"},
                                   "spec": {"type": "Weird", "ports": [{"port": 70000}, {"port": 80}]}})
    assert found["metadata.name"] == "FieldValueInvalid"
    assert found["spec.type"] == "FieldValueNotSupported"
    assert found["spec.ports[0].port"] == "FieldValueInvalid"
    assert found["spec.ports[0].name"] == "FieldValueRequired"


def test_pod_update_is_mostly_immutable() -> None:
    old = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Always"}}
    image = copy.deepcopy(old)
    image["spec"]["containers"][0]["image"] = "b"
    validate("", "Pod", image, old)
    policy = copy.deepcopy(old)
    policy["spec"]["restartPolicy"] = "Never"
    assert causes("", "Pod", policy, old) == {"spec": "FieldValueForbidden"}


def test_job_and_cronjob() -> None:
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always",
                                                                     "containers": [{"name": "c", "image": "i"}]}}}}
    assert causes("batch", "Job", job) == {"spec.template.spec.restartPolicy": "FieldValueNotSupported"}
    assert cron_error("*/5 * * * *") is None and cron_error("@hourly") is None
    assert cron_error("61 * * * *") is not None and cron_error("* * *") is not None
    cron = {"metadata": {"name": "c"}, "spec": {"schedule": "bad", "timeZone": "Mars/Olympus",
                                                "jobTemplate": {"spec": {"template": {"spec": {
                                                    "restartPolicy": "Never",
                                                    "containers": [{"name": "c", "image": "i"}]}}}}}}
    assert causes("batch", "CronJob", cron) == {"spec.schedule": "FieldValueInvalid",
                                                "spec.timeZone": "FieldValueInvalid"}


def test_configmap_and_secret_data() -> None:
    assert causes("", "ConfigMap", {"metadata": {"name": "c"}, "data": {"bad key": "x"}}) == {
        "data[bad key]": "FieldValueInvalid"}
    assert causes("", "Secret", {"metadata": {"name": "s"}, "data": {"k": "not base64!"}}) == {
        "data[k]": "FieldValueInvalid"}
    old = {"metadata": {"name": "c"}, "immutable": True, "data": {"a": "1"}}
    assert causes("", "ConfigMap", {**old, "data": {"a": "2"}}, old) == {"data": "FieldValueForbidden"}


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Decimal("0.1")), ("1Gi", Decimal(2**30)), ("1.5", Decimal("1.5")), ("2e3", Decimal(2000)),
    ("128974848", Decimal(128974848)), ("1k", Decimal(1000)), ("-1", Decimal(-1)),
])
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1Xi", "abc", "1.2.3", "Gi"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
