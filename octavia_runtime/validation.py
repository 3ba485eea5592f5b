"""Every request checked against the API's own rules before its handler runs.

The shared interceptor calls `check(request)` on every call of every service,
so a rule holds for every field at once, including fields added later:

- a request that does not decode (corrupt wire format, a string that is not
  UTF-8) is INVALID_ARGUMENT `MALFORMED_REQUEST` instead of gRPC's bare
  UNKNOWN (`tolerant` wraps the method's deserializer so the interceptor sees
  it);
- a string holds no control characters: none at all in a one-line value
  (names, emails, tokens, tags), only tab, line feed and carriage return in
  free text (`multiline`); `CONTROL_CHARACTER`;
- a string is at most its field's `max_length` characters, 256 when the field
  declares none; a repeated field or map holds at most `max_items`;
  `VALUE_TOO_LONG` / `TOO_MANY_VALUES`;
- an enum holds one of its defined values (JSON and the wire both let a client
  send any number), and an element of a list is not the unspecified value;
  `UNDEFINED_ENUM_VALUE`;
- a float is finite, a Duration or Timestamp is within the range its
  definition allows, and a number within the field's declared `minimum` and
  `maximum`; `NUMBER_OUT_OF_RANGE`.

The limits are the `(octavia.limits.v1.limits)` field option in protos/.
Each message type's rules are worked out once from its descriptor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from octavia.limits.v1 import limits_pb2

from .errors import ApiError

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import FieldOptions
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

F = _descriptor.FieldDescriptor
# protoc's .pyi types an extension as a bare FieldDescriptor; this one extends FieldOptions with FieldLimits.
_LIMITS = cast("_ExtensionFieldDescriptor[FieldOptions, limits_pb2.FieldLimits]", limits_pb2.limits)
DEFAULT_MAX_LENGTH = 256
MAX_VIOLATIONS = 10
# What a one-line value may not contain: C0 controls, DEL, C1 controls, and the Unicode line
# and paragraph separators. Free text may also hold tab, line feed and carriage return.
_ONE_LINE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MULTILINE_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# google/protobuf/duration.proto and timestamp.proto: about +-10,000 years; 0001-01-01 to 9999-12-31.
_DURATION_MAX_S = 315_576_000_000
_TIMESTAMP_RANGE_S = (-62_135_596_800, 253_402_300_799)
_NANOS = 999_999_999

_REASONS = {
    "malformed": "MALFORMED_REQUEST",
    "control": "CONTROL_CHARACTER",
    "long": "VALUE_TOO_LONG",
    "items": "TOO_MANY_VALUES",
    "enum": "UNDEFINED_ENUM_VALUE",
    "range": "NUMBER_OUT_OF_RANGE",
}


class Malformed:
    """Stands for a request that did not decode, so that the interceptor can answer it properly."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning `Malformed` instead of raising (gRPC would answer a bare UNKNOWN)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or a string that is not UTF-8
            return Malformed(exc)

    return deserialize


def check(request: Any) -> None:
    """Raise INVALID_ARGUMENT, naming each bad field, unless `request` keeps every rule."""
    if isinstance(request, Malformed):
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            _REASONS["malformed"],
            "the request is not a valid message of this method (corrupt protobuf, or a string that is not UTF-8)",
        )
    if not isinstance(request, Message):
        return
    problems: list[tuple[str, str, str]] = []  # (kind, field path, description)
    _check_message(request, "", problems)
    if problems:
        fields = {path: text for _, path, text in problems}
        message = "; ".join(f"{path}: {text}" for _, path, text in problems)
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, _REASONS[problems[0][0]], message, fields=fields)


# --------------------------------------------------------------------------- rules per field


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str  # "string", "enum", "float", "int", "duration", "timestamp", "message", "map", "other"
    max_length: int
    multiline: bool
    max_items: int
    minimum: float | None
    maximum: float | None
    enum_values: frozenset[int]
    enum_name: str
    map_key: _Rule | None = None
    map_value: _Rule | None = None


_rules: dict[str, dict[str, _Rule]] = {}


def max_length(message: type[Message], field: str) -> int:
    """The most characters `field` of `message` may hold (its declared limit, or the default)."""
    return _rules_of(_descriptor_of(message))[field].max_length


def _descriptor_of(message: Message | type[Message]) -> _descriptor.Descriptor:
    # The stubs type DESCRIPTOR as the Python or the upb class; isinstance() accepts either as the Python one.
    return cast(_descriptor.Descriptor, message.DESCRIPTOR)


def _rules_of(descriptor: _descriptor.Descriptor) -> dict[str, _Rule]:
    rules = _rules.get(descriptor.full_name)
    if rules is None:
        rules = _rules[descriptor.full_name] = {field.name: _rule(field) for field in descriptor.fields}
    return rules


def _rule(field: _descriptor.FieldDescriptor, limits: limits_pb2.FieldLimits | None = None) -> _Rule:
    """The rule of `field`, under its own limits or, for a map's key and value, the map's."""
    if limits is None:
        options = field.GetOptions()
        limits = options.Extensions[_LIMITS] if options.HasExtension(_LIMITS) else limits_pb2.FieldLimits()
    kind, values, enum_name, key, value = "other", frozenset[int](), "", None, None
    if field.type == F.TYPE_STRING:
        kind = "string"
    elif field.type == F.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None, "an enum field has its enum's descriptor"
        kind, values, enum_name = "enum", frozenset(enum.values_by_number), enum.name
    elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        kind = "float"
    elif field.type == F.TYPE_MESSAGE:
        message_type = field.message_type
        assert message_type is not None, "a message field has its message's descriptor"
        name = message_type.full_name
        if message_type.GetOptions().map_entry:
            entry = message_type.fields_by_name
            kind, key, value = "map", _rule(entry["key"], limits), _rule(entry["value"], limits)
        elif name == "google.protobuf.Duration":
            kind = "duration"
        elif name == "google.protobuf.Timestamp":
            kind = "timestamp"
        elif name != "google.protobuf.Any":  # opaque: what it packs is not a field of the request
            kind = "message"
    elif field.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_INT64, F.CPPTYPE_UINT32, F.CPPTYPE_UINT64):
        kind = "int"
    return _Rule(
        kind=kind,
        max_length=limits.max_length or DEFAULT_MAX_LENGTH,
        multiline=limits.multiline,
        max_items=limits.max_items,
        minimum=limits.minimum if limits.HasField("minimum") else None,
        maximum=limits.maximum if limits.HasField("maximum") else None,
        enum_values=values,
        enum_name=enum_name,
        map_key=key,
        map_value=value,
    )


# --------------------------------------------------------------------------- checking


def _check_message(message: Message, prefix: str, problems: list[tuple[str, str, str]]) -> None:
    rules = _rules_of(_descriptor_of(message))
    for field, value in message.ListFields():
        if len(problems) >= MAX_VIOLATIONS:
            return
        rule = rules[field.name]
        path = prefix + field.name
        if rule.kind == "map":
            assert rule.map_key is not None and rule.map_value is not None, "a map's rule has its key's and value's"
            if rule.max_items and len(value) > rule.max_items:
                problems.append(("items", path, f"at most {rule.max_items} entries, not {len(value)}"))
            for key, item in value.items():
                _check_value(rule.map_key, key, f"{path} (a key)", problems)
                _check_value(rule.map_value, item, f"{path}[{_clip(str(key))}]", problems)
        elif field.is_repeated:
            if rule.max_items and len(value) > rule.max_items:
                problems.append(("items", path, f"at most {rule.max_items} values, not {len(value)}"))
            for index, item in enumerate(value):
                if rule.kind == "enum" and item == 0:  # "not set" cannot be one of a list's values
                    problems.append(("enum", f"{path}[{index}]", f"must be a {rule.enum_name} value, not the unspecified one"))
                _check_value(rule, item, f"{path}[{index}]", problems)
                if len(problems) >= MAX_VIOLATIONS:
                    return
        else:
            _check_value(rule, value, path, problems)


def _check_value(rule: _Rule, value: Any, path: str, problems: list[tuple[str, str, str]]) -> None:
    kind = rule.kind
    if kind == "string":
        if len(value) > rule.max_length:
            problems.append(("long", path, f"at most {rule.max_length} characters, not {len(value)}"))
            return
        bad = (_MULTILINE_FORBIDDEN if rule.multiline else _ONE_LINE_FORBIDDEN).search(value)
        if bad:
            where = "control characters" if rule.multiline else "control characters or line breaks"
            problems.append(("control", path, f"must not contain {where} (U+{ord(bad.group()):04X} at {bad.start()})"))
    elif kind == "enum":
        if value not in rule.enum_values:
            problems.append(("enum", path, f"{value} is not a defined {rule.enum_name} value"))
    elif kind == "float":
        if not math.isfinite(value):
            problems.append(("range", path, "must be a finite number"))
        else:
            _check_bounds(rule, value, path, problems)
    elif kind == "int":
        _check_bounds(rule, value, path, problems)
    elif kind == "duration":
        seconds, nanos = value.seconds, value.nanos
        if abs(seconds) > _DURATION_MAX_S or abs(nanos) > _NANOS or (seconds and nanos and (seconds < 0) != (nanos < 0)):
            problems.append(("range", path, "is not a valid duration (at most about 10,000 years)"))
        else:
            _check_bounds(rule, seconds + nanos / 1e9, path, problems, unit=" s")
    elif kind == "timestamp":
        if not _TIMESTAMP_RANGE_S[0] <= value.seconds <= _TIMESTAMP_RANGE_S[1] or not 0 <= value.nanos <= _NANOS:
            problems.append(("range", path, "is not a valid time (years 1 to 9999)"))
    elif kind == "message":
        _check_message(value, path + ".", problems)


def _check_bounds(rule: _Rule, value: float, path: str, problems: list[tuple[str, str, str]], unit: str = "") -> None:
    if rule.minimum is not None and value < rule.minimum:
        problems.append(("range", path, f"must be at least {_number(rule.minimum)}{unit}, not {_number(value)}{unit}"))
    elif rule.maximum is not None and value > rule.maximum:
        problems.append(("range", path, f"must be at most {_number(rule.maximum)}{unit}, not {_number(value)}{unit}"))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
