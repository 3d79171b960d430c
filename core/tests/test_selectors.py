from __future__ import annotations

import pytest

from microkube.apiserver.selectors import label_selector_from_dict, parse_field_selector, parse_label_selector
from microkube_interfaces import errors


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("env in (prod, staging)", {"env": "staging"}, True),
    ("env notin (prod)", {}, True),
    ("env notin (prod)", {"env": "prod"}, False),
    ("tier", {"tier": ""}, True),
    ("!tier", {"tier": "x"}, False),
    ("app=web, tier in (a,b)", {"app": "web", "tier": "b"}, True),
    ("", {"anything": "x"}, True),
])
def test_label_selectors(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["app=", "=web", "a b", "in (x)", "app=web,,", "x notin"])
def test_malformed_label_selectors(text: str) -> None:
    if text == "app=":  # an empty value is valid: app is present with value ""
        assert parse_label_selector(text).matches({"app": ""})
        return
    with pytest.raises(errors.Invalid):
        parse_label_selector(text)


def test_label_selector_dicts() -> None:
    selector = label_selector_from_dict({"matchLabels": {"a": "1"},
                                         "matchExpressions": [{"key": "b", "operator": "Exists"}]})
    assert selector.matches({"a": "1", "b": ""}) and not selector.matches({"a": "1"})
    assert label_selector_from_dict({}).matches({"x": "y"})
    assert not label_selector_from_dict(None).matches({})
    assert not label_selector_from_dict({"matchExpressions": [{"key": "b", "operator": "Huh"}]}).matches({})


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    selector = parse_field_selector("spec.nodeName=n1,status.phase!=Failed", "", "Pod")
    assert selector.matches(pod) and selector.exact("spec.nodeName") == "n1"
    assert not parse_field_selector("metadata.name=q", "", "Pod").matches(pod)
    event = {"metadata": {"name": "e"}, "involvedObject": {"name": "p", "uid": "u"}}
    assert parse_field_selector("involvedObject.name=p,involvedObject.uid=u", "", "Event").matches(event)
    with pytest.raises(errors.Invalid, match=r"field label not supported: spec\.nodeName"):
        parse_field_selector("spec.nodeName=x", "", "ConfigMap")
    with pytest.raises(errors.Invalid):
        parse_field_selector("nonsense", "", "Pod")
