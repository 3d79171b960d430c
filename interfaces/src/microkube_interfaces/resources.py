"""resources/v1: how a kind of API object is described to the API server.

Built-in kinds and CustomResourceDefinitions register the same way: a ResourceType names the
group/version/kind, plural and short names, scope and subresources, and a Strategy supplies
defaulting, validation and which fields the status subresource owns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

INTERFACE = "resources"
VERSION = "v1"

Object = dict[str, Any]


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get`` output (meta.k8s.io/v1 TableColumnDefinition)."""

    name: str
    type: str  # string | integer | number | boolean | date
    json_path: str  # ".status.phase"; empty for columns a Strategy computes
    description: str = ""
    format: str = ""  # "name" for the first column
    priority: int = 0  # 1 = only in -o wide


class Strategy(Protocol):
    """Per-kind behaviour. Every method must be pure (no I/O); ``old`` is None on create."""

    def default(self, obj: Object) -> None:
        """Fill defaults in place, as Kubernetes' SetDefaults_* would."""

    def validate(self, obj: Object, old: Object | None) -> None:
        """Raise errors.Invalid naming every invalid field; ``old`` is set on update."""

    def table_cells(self, obj: Object) -> list[Any]:
        """Cells of this object's Table row, one per printer column, or [] to use json paths."""


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    #: Subresource names: "status", "scale", "log", "exec", "binding", …
    subresources: tuple[str, ...] = ()
    #: The OpenAPI definition name of the kind (``io.k8s.api.core.v1.Pod``), for built-ins.
    definition: str = ""
    #: A structural OpenAPI v3 schema (CRDs), used when there is no built-in definition.
    schema: Mapping[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    #: The path of the scale subresource's replicas fields (CRDs may choose their own).
    scale_paths: Mapping[str, str] = field(default_factory=dict)
    #: Whether the status field is split off into the status subresource.
    has_status: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural
