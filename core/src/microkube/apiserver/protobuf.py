"""Decoding Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) into JSON objects.

kubectl's typed commands (``create namespace|deployment|secret…``, ``create token``, ``auth can-i``) send
only protobuf. A body is the magic ``k8s\\0`` then a runtime.Unknown {typeMeta, raw, …}; ``raw`` is the
object's message, decoded with the field table generated from k8s.io/api (tools/gen_protobuf_table.py).
The result is the JSON that kubectl would have sent: Go zero values of non-pointer fields are dropped,
present pointer fields are kept (``replicas: 0``), embedded structs are inlined, and the special types
(Time, MicroTime, Duration, Quantity, IntOrString, RawExtension, FieldsV1) take their JSON forms.

Go's marshaller writes every non-pointer field, zero or not, so on the wire "unset" and "zero" are the
same thing; the JSON omits them. A zero Time is the exception: Go's JSON writes it as ``null`` (kubectl
sends ``creationTimestamp: null``), and so does this decoder, to store the same object either way.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from microkube_interfaces import errors

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
TIME, MICRO_TIME, DURATION, FIELDS = f"{META}.Time", f"{META}.MicroTime", f"{META}.Duration", f"{META}.FieldsV1"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
SPECIAL = frozenset({TIME, MICRO_TIME, DURATION, FIELDS, QUANTITY, INT_OR_STRING, RAW_EXTENSION})
VARINT_SCALARS = frozenset({"bool", "int32", "int64", "uint32", "uint64"})
LENGTH_DELIMITED = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (field number, wire type, value): an int for varints and fixed-width values, bytes for length-delimited ones
WireField = tuple[int, int, Any]


def is_protobuf(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == MEDIA_TYPE


def _invalid(problem: str) -> errors.Invalid:
    return errors.Invalid(f"invalid protobuf body: {problem}")


@dataclass(frozen=True, slots=True)
class _Field:
    json_name: str
    kind: str  # "scalar", "message", "special", "list" (a Go slice type wrapped in a message) or "map"
    target: Any  # scalar or message type; for maps the (key type, value type) pair
    repeated: bool
    pointer: bool
    inline: bool


@functools.cache
def _table() -> dict[str, Any]:
    data = importlib.resources.files("microkube.apiserver").joinpath("protobuf_fields.json").read_bytes()
    table: dict[str, Any] = orjson.loads(data)
    return table


@functools.cache
def _list_wrappers() -> frozenset[str]:
    """Messages of Go slice types (``type ExtraValue []string``): protobuf wraps them, JSON writes the list."""
    return frozenset(_table()["lists"])


@functools.cache
def _spec(message: str) -> dict[int, _Field]:
    entry = _table()["messages"].get(message)
    if entry is None:
        raise errors.Unsupported(f"protobuf message {message} is not known to this server; send JSON or YAML")
    spec = {}
    for number, (json_name, kind, target, flags) in entry.items():
        if kind == "message" and target in SPECIAL:
            kind = "special"
        elif kind == "message" and target in _list_wrappers():
            kind = "list"
        elif kind == "map":
            target = tuple(target)
        spec[int(number)] = _Field(json_name, kind, target, "r" in flags, "p" in flags, "i" in flags)
    return spec


@functools.cache
def _message_for(api_version: str, kind: str) -> str | None:
    group, _, version = api_version.rpartition("/")
    table = _table()
    for package, package_group in table["groups"].items():
        if package_group == group and package.endswith(f".{version}"):
            name = f"{package}.{kind}"
            if name in table["messages"]:
                return name
    if group in ("", "meta.k8s.io") and version == "v1" and kind in ("DeleteOptions", "Status"):
        return f"{META}.{kind}"
    return None


def _fields(data: bytes) -> list[WireField]:
    """Every field of one message in wire order."""
    out: list[WireField] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _invalid("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, 0, value))
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _invalid("a length runs past the end of its message")
            out.append((number, wire, data[pos:pos + length]))
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _invalid("a fixed-width value runs past the end of its message")
            out.append((number, wire, int.from_bytes(data[pos:pos + width], "little")))
            pos += width
        else:
            raise _invalid(f"wire type {wire} (groups) is not used by Kubernetes")
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos] if pos < len(data) else -1
    if 0 <= byte < 0x80:  # most varints are one byte
        return byte, pos + 1
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _invalid("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _invalid("varint longer than 10 bytes")


def _signed(value: int, bits: int) -> int:
    """Go's int32/int64 from a varint: negative numbers are 64-bit two's complement (no zigzag)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(scalar: str, value: Any, where: str) -> Any:
    if scalar == "string":
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise _invalid(f"{where} is not UTF-8 text") from None
    if scalar == "bytes":
        return base64.b64encode(value).decode()
    if scalar == "bool":
        return value != 0
    if scalar == "int32":
        return _signed(value, 32)
    if scalar == "int64":
        return _signed(value, 64)
    return value  # unsigned and fixed types: the value as read


def _check_wire(scalar_or_kind: str, wire: int, repeated: bool, where: str) -> None:
    if scalar_or_kind in VARINT_SCALARS:
        if wire == 0 or (wire == LENGTH_DELIMITED and repeated):  # packed repeated varints
            return
        raise _invalid(f"{where} must be a varint (wire type 0), not wire type {wire}")
    if wire != LENGTH_DELIMITED:
        raise _invalid(f"{where} must be length-delimited (wire type 2), not wire type {wire}")


def _packed(scalar: str, data: bytes, where: str) -> list[Any]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        values.append(_scalar(scalar, value, where))
    return values


def _go_duration(nanoseconds: int) -> str:
    """Go's time.Duration.String(): 1h2m3.5s, 1m0s, 2.5s, 150ms, 3µs, 0s."""
    if nanoseconds == 0:
        return "0s"
    sign, n = ("-", -nanoseconds) if nanoseconds < 0 else ("", nanoseconds)
    if n < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if n >= size:
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    return f"{sign}{minutes}m{text}" if minutes else sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


def _special(message: str, data: bytes, where: str) -> Any:
    """The JSON form of Time, MicroTime, Duration, Quantity, IntOrString, RawExtension and FieldsV1."""
    fields: dict[int, Any] = {}
    for number, wire, value in _fields(data):
        fields[number] = value
        expected_varint = message in (TIME, MICRO_TIME, DURATION) or (message == INT_OR_STRING and number < 3)
        if expected_varint != (wire == 0):
            raise _invalid(f"{where}: field {number} of {message.rsplit('.', 1)[-1]} has wire type {wire}")
    if message in (TIME, MICRO_TIME):
        seconds, nanos = _signed(fields.get(1, 0), 64), _signed(fields.get(2, 0), 32)
        if not seconds and not nanos:
            return None  # the zero Time, which Go's JSON writes as null
        try:
            moment = EPOCH + timedelta(seconds=seconds)
        except OverflowError:
            raise _invalid(f"{where}: time {seconds}s is out of range") from None
        if message == MICRO_TIME:
            return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if message == DURATION:
        return _go_duration(_signed(fields.get(1, 0), 64))
    if message == QUANTITY:
        return _scalar("string", fields.get(1, b""), where)
    if message == INT_OR_STRING:
        if fields.get(1, 0) == 1:
            return _scalar("string", fields.get(3, b""), where)
        return _signed(fields.get(2, 0), 32)
    raw = fields.get(1, b"")  # RawExtension and FieldsV1 carry JSON
    if not raw:
        return None
    if raw.startswith(MAGIC):  # an embedded object in protobuf
        return decode(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid(f"{where} holds neither JSON nor a protobuf object") from None


def _is_go_zero(value: Any) -> bool:
    return value is None or value == "" or value is False or value == {} or (type(value) is int and value == 0)


def decode_message(message: str, data: bytes, path: str = "") -> dict[str, Any]:
    """One message of the field table as its JSON object; ``path`` (the JSON path) only names errors."""
    spec = _spec(message)
    result: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = spec.get(number)
        if field is None:
            if value in (0, b""):
                continue  # a zero field from a newer client: Go would drop it, and so may we
            raise _invalid(f"{path or message.rsplit('.', 1)[-1]}: unknown field number {number} in "
                           f"{message.rsplit('.', 1)[-1]}")
        name = field.json_name
        where = f"{path}.{name}" if path else name
        kind = field.kind
        if kind == "scalar":
            _check_wire(field.target, wire, field.repeated, where)
            if field.repeated:
                items = result.setdefault(name, [])
                if wire == LENGTH_DELIMITED and field.target in VARINT_SCALARS:
                    items.extend(_packed(field.target, value, where))
                else:
                    items.append(_scalar(field.target, value, where))
                continue
            decoded = _scalar(field.target, value, where)
        elif kind == "map":
            _check_wire("map", wire, False, where)
            key, item = _map_entry(field.target, value, where)
            result.setdefault(name, {})[key] = item
            continue
        else:
            _check_wire(kind, wire, field.repeated, where)
            if kind == "special":
                decoded = _special(field.target, value, where)
                if decoded is None and field.target in (TIME, MICRO_TIME) and not field.repeated:
                    result[name] = None  # Go's JSON writes a zero Time, pointer or not, as null
                    continue
            elif kind == "list":
                decoded = _unwrapped_list(field.target, value, where)
            else:
                decoded = decode_message(field.target, value, where)
        if field.inline and isinstance(decoded, dict):
            result.update(decoded)
        elif field.repeated:
            result.setdefault(name, []).append(decoded)
        elif field.pointer or not _is_go_zero(decoded):
            result[name] = decoded
    return result


def _unwrapped_list(message: str, data: bytes, where: str) -> list[Any]:
    items: list[Any] = decode_message(message, data, where).get("items", [])
    return items


def _map_entry(types: tuple[str, str], data: bytes, where: str) -> tuple[Any, Any]:
    key_type, value_type = types
    entry = {number: (wire, value) for number, wire, value in _fields(data)}
    defaults = {1: key_type, 2: value_type}
    parts: list[Any] = []
    for number in (1, 2):
        value_kind = defaults[number]
        is_varint = value_kind in VARINT_SCALARS
        wire, value = entry.get(number, (0 if is_varint else LENGTH_DELIMITED, 0 if is_varint else b""))
        _check_wire(value_kind, wire, False, where)
        if value_kind in SPECIAL:
            parts.append(_special(value_kind, value, where))
        elif value_kind in _list_wrappers():
            parts.append(_unwrapped_list(value_kind, value, where))
        elif "." in value_kind:
            parts.append(decode_message(value_kind, value, where))
        else:
            parts.append(_scalar(value_kind, value, where))
    return parts[0], parts[1]


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a protobuf request body carries (apiVersion and kind set)."""
    if not body.startswith(MAGIC):
        raise _invalid("it does not start with the k8s\\x00 prefix of Kubernetes protobuf")
    type_meta: list[WireField] = []
    raw = b""
    for number, wire, value in _fields(body[len(MAGIC):]):
        if wire != LENGTH_DELIMITED:
            raise _invalid(f"field {number} of the runtime.Unknown envelope has wire type {wire}")
        if number == 1:
            type_meta = _fields(value)
        elif number == 2:
            raw = value
        elif number == 3 and value:
            raise errors.Unsupported("protobuf bodies with a contentEncoding are not supported; send JSON or YAML")
    names = {number: value for number, wire, value in type_meta if wire == LENGTH_DELIMITED}
    api_version = _scalar("string", names.get(1, b""), "typeMeta.apiVersion")
    kind = _scalar("string", names.get(2, b""), "typeMeta.kind")
    if not kind:
        raise _invalid("the envelope's typeMeta names no kind")
    message = _message_for(api_version, kind)
    if message is None:
        raise errors.Unsupported(f"protobuf bodies of kind {kind} ({api_version or 'no apiVersion'}) are not "
                                 "supported by this server; send JSON or YAML")
    return {"apiVersion": api_version, "kind": kind, **decode_message(message, raw)}
