from __future__ import annotations

import pytest

from microkube.apiserver import codec
from microkube.apiserver.status import ApiError


def test_json_and_yaml_bodies() -> None:
    assert codec.decode_object(b'{"a": 1}', "application/json") == {"a": 1}
    assert codec.decode_object(b"a: 1\nb: [x]\n", "application/yaml") == {"a": 1, "b": ["x"]}
    assert codec.decode_object(b'{"a": 1}', None) == {"a": 1}  # no Content-Type means JSON


@pytest.mark.parametrize(("body", "content_type", "code"), [
    (b"", "application/json", 400),
    (b"{", "application/json", 400),
    (b"[1]", "application/json", 400),
    (b"a: 1\na: 2\n", "application/yaml", 400),
    (b"{}", "text/xml", 415),
])
def test_bad_bodies(body: bytes, content_type: str, code: int) -> None:
    with pytest.raises(ApiError) as error:
        codec.decode_object(body, content_type)
    assert error.value.code == code


def test_accept_negotiation() -> None:
    kubectl_table = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
                     "g=meta.k8s.io,application/json")
    assert codec.wants_table(kubectl_table)
    assert not codec.wants_table("application/json")
    assert not codec.wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")
    assert codec.wants_yaml("application/yaml")
    assert not codec.wants_yaml("application/json")
