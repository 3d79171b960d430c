from __future__ import annotations

import pytest
from multidict import MultiDict, MultiDictProxy

from microkube.apiserver.requestinfo import parse
from microkube.apiserver.status import ApiError


def q(**kwargs: str) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(kwargs))


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", {"watch": "true"},
         ("watch", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/default/pods", {}, ("watch", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/pods", {}, ("list", "", "v1", "", "pods", "", "")),
        ("POST", "/apis/apps/v1/namespaces/ns/deployments", {},
         ("create", "apps", "v1", "ns", "deployments", "", "")),
        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/web/scale", {},
         ("patch", "apps", "v1", "ns", "deployments", "web", "scale")),
        ("DELETE", "/api/v1/namespaces/ns/configmaps", {},
         ("deletecollection", "", "v1", "ns", "configmaps", "", "")),
        ("GET", "/api/v1/namespaces/demo", {}, ("get", "", "v1", "demo", "namespaces", "demo", "")),
        ("PUT", "/api/v1/namespaces/demo/finalize", {}, ("update", "", "v1", "demo", "namespaces", "demo",
                                                        "finalize")),
        ("PUT", "/api/v1/namespaces/demo/status", {}, ("update", "", "v1", "demo", "namespaces", "demo", "status")),
        ("GET", "/api/v1/nodes/n1", {}, ("get", "", "v1", "", "nodes", "n1", "")),
        ("GET", "/api/v1/nodes/n1", {"watch": "1"}, ("watch", "", "v1", "", "nodes", "n1", "")),
    ],
)
def test_resource_requests(method: str, path: str, query: dict[str, str],
                           expected: tuple[str, ...]) -> None:
    info = parse(method, path, q(**query))
    assert info.is_resource
    assert (info.verb, info.group, info.version, info.namespace, info.resource, info.name,
            info.subresource) == expected


@pytest.mark.parametrize("path", ["/version", "/api", "/apis", "/apis/apps", "/api/v1", "/apis/apps/v1", "/healthz"])
def test_non_resource_requests(path: str) -> None:
    assert not parse("GET", path, q()).is_resource


def test_too_deep_paths_are_not_found() -> None:
    with pytest.raises(ApiError) as error:
        parse("GET", "/api/v1/namespaces/a/pods/b/log/extra", q())
    assert error.value.code == 404
