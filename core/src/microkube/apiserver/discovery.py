"""Discovery documents: /api, /apis, per group-version resource lists, and aggregated discovery (v2)."""

from __future__ import annotations

from typing import Any

from microkube.apiserver.catalog import SUBRESOURCE_KINDS, ResourceCatalog, Served

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> str | None:
    """The aggregated media type the client asked for first, or None for legacy discovery."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=APIGroupDiscoveryList" in params and "g=apidiscovery.k8s.io" in params:
            if "v=v2" in params:
                return AGGREGATED_V2
            if "v=v2beta1" in params:
                return AGGREGATED_V2BETA1
    return None


def _subresource_kind(served: Served, sub: str) -> tuple[str, str, str, tuple[str, ...]]:
    group, version, kind, verbs = SUBRESOURCE_KINDS.get(sub, ("", "", "", ("get",)))
    if not kind:
        group, version, kind = served.resource.group, served.resource.version, served.resource.kind
    return group, version, kind, verbs


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group_list(catalog: ResourceCatalog) -> dict[str, Any]:
    groups = []
    for group, versions in catalog.groups().items():
        if not group:
            continue
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(catalog: ResourceCatalog, group: str) -> dict[str, Any] | None:
    versions = catalog.groups().get(group)
    if not versions or not group:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
            "preferredVersion": entries[0]}


def resource_list(catalog: ResourceCatalog, group: str, version: str) -> dict[str, Any] | None:
    served_list = catalog.resources(group, version)
    if not served_list:
        return None
    resources: list[dict[str, Any]] = []
    for served in served_list:
        r = served.resource
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for sub in r.subresources:
            sgroup, sversion, skind, verbs = _subresource_kind(served, sub)
            sub_entry: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                                         "namespaced": r.namespaced, "kind": skind, "verbs": list(verbs)}
            if (sgroup, sversion) != (group, version) and sversion:
                sub_entry["group"] = sgroup
                sub_entry["version"] = sversion
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def aggregated(catalog: ResourceCatalog, *, core: bool, media_type: str) -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (core=True) or /apis."""
    api_version = "apidiscovery.k8s.io/v2" if media_type == AGGREGATED_V2 else "apidiscovery.k8s.io/v2beta1"
    items = []
    for group, versions in catalog.groups().items():
        if core != (group == ""):
            continue
        version_entries = []
        for version in versions:
            resources = []
            for served in catalog.resources(group, version):
                r = served.resource
                entry: dict[str, Any] = {
                    "resource": r.plural,
                    "responseKind": {"group": group, "version": version, "kind": r.kind},
                    "scope": "Namespaced" if r.namespaced else "Cluster",
                    "singularResource": r.singular,
                    "verbs": list(r.verbs),
                }
                if r.short_names:
                    entry["shortNames"] = list(r.short_names)
                if r.categories:
                    entry["categories"] = list(r.categories)
                subs = []
                for sub in r.subresources:
                    sgroup, sversion, skind, verbs = _subresource_kind(served, sub)
                    subs.append({"subresource": sub,
                                 "responseKind": {"group": sgroup, "version": sversion, "kind": skind},
                                 "verbs": list(verbs)})
                if subs:
                    entry["subresources"] = subs
                resources.append(entry)
            version_entries.append({"version": version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": version_entries})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
