"""Decoding Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) into JSON objects.

kubectl's typed commands (``create namespace|deployment|secret…``, ``create token``, ``auth can-i``) send
only protobuf. A body is the magic ``k8s\\0`` then a runtime.Unknown {typeMeta, raw, …}; ``raw`` is the
object's message, decoded with the field table generated from k8s.io/api (tools/gen_protobuf_table.py).
The result is the JSON that kubectl would have sent: Go zero values of non-pointer fields are dropped,
present pointer fields are kept (``replicas: 0``), embedded structs are inlined, and the special types
(Time, MicroTime, Duration, Quantity, IntOrString, RawExtension, FieldsV1) take their JSON forms.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
from datetime import UTC, datetime
from typing import Any

import orjson

from microkube_interfaces import errors

MAGIC = b"k8s\x00"
UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
SPECIAL = {
    f"{META}.Time", f"{META}.MicroTime", f"{META}.Duration", f"{META}.FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity", "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
}
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


def is_protobuf(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == MEDIA_TYPE  # type: ignore[union-attr]


@functools.cache
def _table() -> dict[str, Any]:
    data = importlib.resources.files("microkube.apiserver").joinpath("protobuf_fields.json").read_bytes()
    table: dict[str, Any] = orjson.loads(data)
    return table


@functools.cache
def _message_for(api_version: str, kind: str) -> str | None:
    group, _, version = api_version.rpartition("/")
    table = _table()
    for package, package_group in table["groups"].items():
        if package_group == group and package.endswith(f".{version}"):
            name = f"{package}.{kind}"
            if name in table["messages"]:
                return name
    if group in ("", "meta.k8s.io") and kind in ("DeleteOptions", "Status"):
        return f"{META}.{kind}"
    return None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        result = shift = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise errors.Invalid("invalid protobuf body: truncated varint")
            byte = data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise errors.Invalid("invalid protobuf body: varint too long")

    def fields(self) -> list[tuple[int, int, Any]]:
        """All (number, wire type, raw value) of one message; bytes for length-delimited values."""
        out: list[tuple[int, int, Any]] = []
        data = self.data
        while self.pos < len(data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise errors.Invalid("invalid protobuf body: field number 0")
            if wire == 0:
                out.append((number, wire, self.varint()))
            elif wire == 2:
                length = self.varint()
                end = self.pos + length
                if end > len(data):
                    raise errors.Invalid("invalid protobuf body: length beyond the end of the message")
                out.append((number, wire, data[self.pos:end]))
                self.pos = end
            elif wire == 1:
                out.append((number, wire, int.from_bytes(data[self.pos:self.pos + 8], "little")))
                self.pos += 8
            elif wire == 5:
                out.append((number, wire, int.from_bytes(data[self.pos:self.pos + 4], "little")))
                self.pos += 4
            else:
                raise errors.Invalid(f"invalid protobuf body: unsupported wire type {wire}")
        return out


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value = ((value + (1 << 31)) % (1 << 32)) - (1 << 31)
    return value


def _scalar(kind: str, wire: int, raw: Any) -> Any:
    if kind == "string":
        if wire != 2:
            raise errors.Invalid("invalid protobuf body: string field with a non-length wire type")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise errors.Invalid("invalid protobuf body: a string field is not UTF-8") from None
    if kind == "bytes":
        return base64.b64encode(raw).decode()
    if kind == "bool":
        return bool(raw)
    if kind in ("int32", "int64"):
        return _signed(raw, 32 if kind == "int32" else 64)
    if kind in ("uint32", "uint64", "fixed32", "fixed64"):
        return raw
    raise errors.Invalid(f"invalid protobuf body: unsupported scalar type {kind}")


def _packed(kind: str, raw: bytes) -> list[Any]:
    reader = _Reader(raw)
    values = []
    while reader.pos < len(raw):
        values.append(_scalar(kind, 0, reader.varint()))
    return values


def _rfc3339(seconds: int, nanos: int = 0, micro: bool = False) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(nanoseconds: int) -> str:
    seconds, _ = divmod(nanoseconds, 10**9)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _special(name: str, raw: bytes) -> Any:
    fields = {number: value for number, _, value in _Reader(raw).fields()}
    if name.endswith((".Time", ".MicroTime")):
        seconds = _signed(fields.get(1, 0), 64)
        nanos = _signed(fields.get(2, 0), 32)
        if not seconds and not nanos:
            return None
        return _rfc3339(seconds, nanos, micro=name.endswith("MicroTime"))
    if name.endswith(".Duration"):
        return _duration(_signed(fields.get(1, 0), 64))
    if name.endswith("Quantity"):
        return fields.get(1, b"").decode()
    if name.endswith("IntOrString"):
        if fields.get(1, 0) == 1:
            return fields.get(3, b"").decode()
        return _signed(fields.get(2, 0), 32)
    raw_json = fields.get(1, b"")  # RawExtension, FieldsV1
    if not raw_json:
        return None
    try:
        return orjson.loads(raw_json)
    except orjson.JSONDecodeError:
        raise errors.Invalid(f"invalid protobuf body: embedded {name.rsplit('.', 1)[-1]} is not JSON") from None


def decode_message(name: str, raw: bytes) -> dict[str, Any]:
    messages = _table()["messages"]
    spec = messages.get(name)
    if spec is None:
        raise errors.Unsupported(f"protobuf message {name} is not known to this server")
    result: dict[str, Any] = {}
    for number, wire, value in _Reader(raw).fields():
        field = spec.get(str(number))
        if field is None:
            raise errors.Invalid(f"invalid protobuf body: unknown field number {number} in {name.rsplit('.', 1)[-1]}")
        json_name, kind, target, flags = field
        repeated, pointer, inline = "r" in flags, "p" in flags, "i" in flags
        if kind == "map":
            entry = {n: v for n, w, v in _Reader(value).fields()} if wire == 2 else {}
            key_kind, value_kind = target
            key = _scalar(key_kind, 2 if key_kind in ("string", "bytes") else 0, entry.get(1, b"" if key_kind in (
                "string", "bytes") else 0))
            if value_kind in ("string", "bytes", "bool", "int32", "int64"):
                item = _scalar(value_kind, 2 if value_kind in ("string", "bytes") else 0,
                               entry.get(2, b"" if value_kind in ("string", "bytes") else 0))
            elif value_kind in SPECIAL:
                item = _special(value_kind, entry.get(2, b""))
            else:
                item = decode_message(value_kind, entry.get(2, b""))
            result.setdefault(json_name, {})[key] = item
            continue
        if kind == "scalar":
            if repeated and wire == 2 and target not in ("string", "bytes"):
                result.setdefault(json_name, []).extend(_packed(target, value))
                continue
            decoded = _scalar(target, wire, value)
        elif target in SPECIAL:
            decoded = _special(target, value)
            if decoded is None and target.endswith(".Time") and not pointer and not repeated:
                result[json_name] = None  # Go's JSON writes a zero Time struct as null, omitempty or not
                continue
        else:
            decoded = decode_message(target, value)
        if inline and isinstance(decoded, dict):
            result.update(decoded)
            continue
        if repeated:
            result.setdefault(json_name, []).append(decoded)
        elif pointer:
            result[json_name] = decoded if decoded is not None else {}
        elif decoded is None or decoded == "" or decoded == {} or (decoded is False) or (
            decoded == 0 and not isinstance(decoded, bool) and isinstance(decoded, int)
        ):
            continue  # Go writes every non-pointer field; its zero value means "unset"
        else:
            result[json_name] = decoded
    return result


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a protobuf request body carries (apiVersion and kind set)."""
    if not body.startswith(MAGIC):
        raise errors.Invalid("invalid protobuf body: missing the k8s\\x00 prefix")
    type_meta: dict[int, Any] = {}
    raw = b""
    for number, wire, value in _Reader(body[len(MAGIC):]).fields():
        if number == 1 and wire == 2:
            type_meta = {n: v for n, _, v in _Reader(value).fields()}
        elif number == 2 and wire == 2:
            raw = value
        elif number == 3 and wire == 2 and value:
            raise errors.Unsupported("protobuf bodies with a contentEncoding are not supported; send JSON")
    try:
        api_version = type_meta.get(1, b"").decode()
        kind = type_meta.get(2, b"").decode()
    except (UnicodeDecodeError, AttributeError):
        raise errors.Invalid("invalid protobuf body: typeMeta is not text") from None
    if not kind:
        raise errors.Invalid("invalid protobuf body: no kind in typeMeta")
    name = _message_for(api_version, kind)
    if name is None:
        raise errors.Unsupported(f"protobuf bodies of {api_version}/{kind} are not supported by this server; send "
                                 "JSON or YAML")
    obj = decode_message(name, raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
