"""Malformed and hostile requests for every method of the API, generated from its descriptors.

Nothing here names a method: the routes come from the `google.api.http` rules
and the gRPC methods from the services in the generated package, so a new
route or method is covered without editing the tests. `Generator` makes, for
one method, a plausible request (fields filled from their names and types)
and then breaks it one way at a time: wrong JSON types, missing and unknown
fields, undefined enum values, huge and negative numbers, control
characters, very long strings, bad UTF-8, corrupt protobuf, oversized and
deeply nested bodies. Every choice comes from one seeded `random.Random`, so
a failure replays with the same seed.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import octavia
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message
from octavia.access.v1 import access_pb2

F = descriptor.FieldDescriptor
CONTROL = ["\x00", "\n", "\t", "\r\n", "\x1b[2J", "\x7f", "\x85", "\u2028", "\x08"]
LONG = 20_000
HUGE_INTS = [2**31 - 1, -(2**31), 2**63 - 1, -(2**63), -1, 2**53 + 1]
HUGE_JSON_NUMBERS = ["1e309", "-1e309", str(2**70), "-" + str(2**70), "1.5", "-0", "1e-400"]
BAD_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"abc\x80"]


@dataclass(frozen=True)
class Method:
    """One RPC of the API and how it is reached."""

    full_name: str  # octavia.jobs.v1.JobService.GetJob
    path: str  # /octavia.jobs.v1.JobService/GetJob
    input: descriptor.Descriptor
    streaming: bool
    access: int
    http: http_pb2.HttpRule | None

    @property
    def name(self) -> str:
        return self.full_name.rsplit(".", 1)[1]


def methods() -> list[Method]:
    """Every method of every Octavia service."""
    found = []
    for module in pkgutil.walk_packages(octavia.__path__, "octavia."):
        if not module.name.endswith("_pb2"):
            continue
        for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                rule = options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None
                found.append(
                    Method(
                        full_name=method.full_name,
                        path=f"/{service.full_name}/{method.name}",
                        input=method.input_type,
                        streaming=method.server_streaming,
                        access=options.Extensions[access_pb2.access] or access_pb2.ACCESS_USER,
                        http=rule,
                    )
                )
    return sorted(found, key=lambda m: m.full_name)


def message_class(message: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(message)


@dataclass
class Known:
    """Real names of the fuzzing user's resources, so that requests reach past the first check."""

    user: str
    email: str
    password: str
    asset: str
    job: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # CreateJob's: repeats cost nothing


# --------------------------------------------------------------------------- plausible requests

_COLLECTIONS = {
    "Job": "jobs", "Upload": "uploads", "Asset": "assets", "DownloadUrl": "assets", "ApiKey": "apiKeys",
    "Checkout": "checkouts", "Voice": "voices", "Hold": "holds",
}  # fmt: skip


def _collection(method: Method) -> str:
    if method.http is not None:
        template = getattr(method.http, method.http.WhichOneof("pattern") or "get", "")
        found = re.search(r"\{name=(\w+)/\*\}", template)
        if found:
            return found.group(1)
    noun = re.sub(r"^(Get|Delete|Cancel|Watch|Complete|Create|Capture|Release)", "", method.name)
    return _COLLECTIONS.get(noun, "things")


def _string(method: Method, name: str, known: Known, rng: random.Random) -> str:
    destructive = method.name.startswith(("Delete", "Cancel"))
    if name == "name":
        collection = _collection(method)
        own = {"jobs": known.job, "assets": known.asset}.get(collection)
        return own if own and not destructive else f"{collection}/{uuid.uuid4()}"
    plain = {
        "input_asset": known.asset, "asset": known.asset, "job": known.job, "owner": known.user,
        "user": f"users/{uuid.uuid4()}" if method.access == access_pb2.ACCESS_SERVICE else known.user,
        "email": known.email if method.name == "LogIn" else f"fuzz-{uuid.uuid4().hex[:10]}@example.com",
        "password": known.password if method.name == "LogIn" else "another horse 9",
        "current_password": "not the password 1", "new_password": "another horse 9",
        "source_language": "en", "target_language": "pt", "language": "pt", "burn_in_language": "pt",
        "content_type": "audio/wav", "filename": "fuzz.wav", "success_url": "http://localhost:3000/paid",
        "cancel_url": "http://localhost:3000/cancel", "credit_pack": "creditPacks/starter", "voice": "voices/x",
        "text": "Hello there.", "key": f"jobs/{uuid.uuid4()}/x/_/out.wav", "reference": f"fuzz/{uuid.uuid4()}",
        "description": "fuzz", "model": "", "display_name": "fuzz",
        "request_id": known.request_id if method.name == "CreateJob" else uuid.uuid4().hex,
    }  # fmt: skip
    return plain.get(name, rng.choice(["", "x", "fuzz"]))


def plausible(method: Method, known: Known, rng: random.Random) -> Message:
    """A request of `method` that looks like what a client would send."""
    return _fill(method, method.input, known, rng, depth=0)


def _fill(method: Method, message: descriptor.Descriptor, known: Known, rng: random.Random, depth: int) -> Message:
    request = message_class(message)()
    for fd in message.fields:
        behavior = fd.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.OUTPUT_ONLY in behavior:
            continue  # a client would not send it
        if fd.containing_oneof is not None and fd is not fd.containing_oneof.fields[0]:
            continue  # one member of a oneof
        if field_behavior_pb2.REQUIRED not in behavior and rng.random() < 0.3:
            continue  # optional fields come and go
        is_map = fd.type == F.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry
        if is_map or fd.message_type is not None and fd.message_type.full_name.startswith("google.api.HttpBody"):
            continue
        if fd.type == F.TYPE_MESSAGE:
            if depth >= 3 or fd.is_repeated:
                continue
            name = fd.message_type.full_name
            if name == "google.protobuf.Duration":
                getattr(request, fd.name).seconds = 60
            elif name.startswith("google."):
                continue
            else:
                getattr(request, fd.name).CopyFrom(_fill(method, fd.message_type, known, rng, depth + 1))
            continue
        value = _scalar(method, fd, known, rng)
        if value is None:
            continue
        if fd.is_repeated:
            getattr(request, fd.name).append(value)
        else:
            setattr(request, fd.name, value)
    return request


def _scalar(method: Method, fd: descriptor.FieldDescriptor, known: Known, rng: random.Random):
    if fd.type == F.TYPE_STRING:
        if fd.name in ("page_token",):
            return None
        if fd.name == "target_languages":
            return "pt"
        return _string(method, fd.name, known, rng)
    if fd.type == F.TYPE_ENUM:
        values = [v.number for v in fd.enum_type.values if v.number]
        if fd.name == "kind" and fd.enum_type.name == "JobKind":
            return 2  # JOB_KIND_SUBTITLES: a short job, if it gets created at all
        return values[0] if values else 0
    if fd.type == F.TYPE_BOOL:
        return False
    if fd.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return 0.0
    if fd.type == F.TYPE_BYTES:
        return b""
    if fd.name == "size_bytes":
        return 1000
    if fd.name == "page_size":
        return 5
    return 0


# --------------------------------------------------------------------------- breaking them: gRPC


def _leaves(message: Message, prefix: tuple = ()) -> Iterator[tuple[tuple, descriptor.FieldDescriptor]]:
    """Every (path, field) of the message's type, set or not, down to three levels."""
    for fd in message.DESCRIPTOR.fields:
        path = (*prefix, fd.name)
        if fd.type == F.TYPE_MESSAGE and not fd.message_type.GetOptions().map_entry:
            name = fd.message_type.full_name
            if name in ("google.protobuf.Duration", "google.protobuf.Timestamp") or not fd.is_repeated and len(path) < 3:
                if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
                    yield path, fd
                elif not name.startswith("google."):
                    yield from _leaves(getattr(message, fd.name), path)
            continue
        yield path, fd


def _target(message: Message, path: tuple) -> Message:
    for name in path[:-1]:
        message = getattr(message, name)
    return message


def broken_values(message: Message, rng: random.Random) -> tuple[str, Message]:
    """A copy of `message` with one field set to a hostile value; what was done."""
    broken = type(message)()
    broken.CopyFrom(message)
    leaves = list(_leaves(broken))
    if not leaves:
        return "empty", broken
    path, fd = rng.choice(leaves)
    holder, name = _target(broken, path), path[-1]
    label = ".".join(path)
    if fd.type == F.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        key = rng.choice([*CONTROL, "k" * LONG, "pt"])
        value_field = fd.message_type.fields_by_name["value"]
        entries = getattr(holder, name)
        if value_field.type == F.TYPE_STRING:
            entries[key if fd.message_type.fields_by_name["key"].type == F.TYPE_STRING else 1] = rng.choice(
                [*CONTROL, "v" * LONG]
            )
        return f"{label}: hostile map entry", broken
    if fd.type == F.TYPE_MESSAGE:  # Duration or Timestamp
        value = getattr(holder, name)
        value.seconds, value.nanos = rng.choice([(2**62, 0), (-(2**62), 0), (-1, 0), (1, -5), (0, 2 * 10**9), (10**12, 0)])
        return f"{label}: out-of-range {fd.message_type.name}", broken
    if fd.type == F.TYPE_STRING:
        choice = rng.choice(["control", "long", "very long", "unicode"])
        text = {
            "control": "a" + rng.choice(CONTROL) + "b",
            "long": "x" * LONG,
            "very long": "y" * (5 * LONG),
            "unicode": rng.choice(["\U0001f600" * 300, "\u202eevil", "\ufeff", "\ud7ff\ue000"]),
        }[choice]
        value = text
    elif fd.type == F.TYPE_ENUM:
        value = rng.choice([99, -5, 2**31 - 1, 7, 3])
        choice = "undefined enum"
    elif fd.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        value = rng.choice([float("nan"), float("inf"), -float("inf"), -1e308, 1e308, -1.0])
        choice = "odd float"
    elif fd.type == F.TYPE_BOOL:
        value = True
        choice = "flag"
    elif fd.type == F.TYPE_BYTES:
        value = rng.randbytes(rng.choice([0, 10, 1000]))
        choice = "bytes"
    else:
        unsigned = fd.cpp_type in (F.CPPTYPE_UINT32, F.CPPTYPE_UINT64)
        small = fd.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_UINT32)
        options = [v for v in HUGE_INTS if (not unsigned or v >= 0) and (not small or -(2**31) <= v < 2**31)]
        value = rng.choice(options)
        choice = "extreme number"
    if fd.is_repeated:
        getattr(holder, name).extend([value] * rng.choice([1, 2, 50]))
    else:
        setattr(holder, name, value)
    return f"{label}: {choice}", broken


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def broken_wire(message: Message, rng: random.Random) -> tuple[str, bytes]:
    """The serialization of `message`, damaged one way; what was done."""
    data = message.SerializeToString()
    strings = [fd for fd in message.DESCRIPTOR.fields if fd.type == F.TYPE_STRING]
    choice = rng.choice(["bad utf-8", "random bytes", "truncated", "flipped", "unknown field", "wrong wire type"])
    if choice == "bad utf-8" and strings:
        fd = rng.choice(strings)
        return f"{fd.name}: bad UTF-8", data + _delimited(fd.number, rng.choice(BAD_UTF8))
    if choice == "random bytes" or not data:
        return "random bytes", rng.randbytes(rng.randint(1, 64))
    if choice == "truncated":
        return "truncated", data[: rng.randint(0, max(0, len(data) - 1))] + b"\x0a\x7f"
    if choice == "flipped":
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        return "flipped bytes", bytes(damaged)
    if choice == "unknown field":
        return "unknown field", data + _delimited(rng.randint(900, 5000), b"junk")
    # A string field's number with a varint, a varint field's with a length: the parser must cope.
    fd = rng.choice(message.DESCRIPTOR.fields) if message.DESCRIPTOR.fields else None
    if fd is None:
        return "random bytes", rng.randbytes(8)
    wire = 0 if fd.type in (F.TYPE_STRING, F.TYPE_MESSAGE, F.TYPE_BYTES) else 2
    return f"{fd.name}: wrong wire type", data + _varint(fd.number << 3 | wire) + (b"\x05" if wire == 0 else b"\x02ab")


# --------------------------------------------------------------------------- breaking them: REST


@dataclass(frozen=True)
class HttpCase:
    what: str
    method: str
    path: str
    body: bytes | None
    params: dict[str, str] | None = None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def http_case(method: Method, request: Message, rng: random.Random) -> HttpCase:
    """A REST call of `method` (it has an http rule) carrying `request`, broken one way."""
    rule = method.http
    verb = rule.WhichOneof("pattern")
    template = getattr(rule, verb)
    as_json = json_format.MessageToDict(request, preserving_proto_field_name=False)
    variables = re.findall(r"\{(\w+)=([^}]+)\}", template)
    path = template
    for field_name, _ in variables:
        value = str(as_json.pop(_camel(field_name), f"things/{uuid.uuid4()}"))
        path = path.replace(re.search(r"\{" + field_name + r"=[^}]+\}", path).group(0), value)
    body_field = rule.body
    choice = rng.choice(
        ["wrong type", "unknown field", "undefined enum", "huge number", "control", "long", "not json", "bad utf-8",
         "nested", "oversized", "long path", "bad utf-8 path", "missing fields"]
    )  # fmt: skip
    params: dict[str, str] | None = None
    body: bytes | None = None
    payload = as_json if body_field == "*" else as_json.get(_camel(body_field), {}) if body_field else None
    keys = list(payload) if isinstance(payload, dict) else []
    if choice == "long path" and variables:
        path = path.rsplit("/", 1)[0] + "/" + "z" * LONG
    elif choice == "bad utf-8 path" and variables:
        path = path.rsplit("/", 1)[0] + "/%ff%fe%00"
    if body_field:
        if choice == "not json":
            body = rng.choice([b"{", b"[]", b'"text"', b"null", b"{'a': 1}", b'{"a": 1,}'])
        elif choice == "bad utf-8":
            body = b'{"' + (keys[0].encode() if keys else b"x") + b'": "' + rng.choice(BAD_UTF8) + b'"}'
        elif choice == "nested":
            depth = rng.choice([200, 5000, 100_000])
            body = b'{"a":' * depth + b"1" + b"}" * depth
        elif choice == "oversized":
            body = json.dumps({keys[0] if keys else "x": "o" * (2 * 1024 * 1024)}).encode()
        else:
            if isinstance(payload, dict):
                _break_json(payload, choice, rng)
            body = json.dumps(payload).encode() if payload is not None else b"{}"
            if choice == "huge number" and keys:
                body = (
                    body[:-1]
                    + (b"," if len(body) > 2 else b"")
                    + f'"{rng.choice(keys)}": {rng.choice(HUGE_JSON_NUMBERS)}}}'.encode()
                )
    else:
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in as_json.items() if not isinstance(v, dict | list)}
        if choice in ("bad utf-8", "bad utf-8 path"):
            return HttpCase(f"{method.name} {choice} query", verb.upper(), path + "?pageToken=%ff%fe&x=%c3%28", None)
        if choice == "long":
            params[rng.choice(list(params) or ["pageToken"])] = "q" * LONG
        elif choice == "control":
            params[rng.choice(list(params) or ["pageToken"])] = "\x00\n"
        elif choice in ("undefined enum", "huge number", "wrong type"):
            params[rng.choice(list(params) or ["pageSize"])] = rng.choice(["99", "-1", str(2**70), "abc", "1e309", "NOT_A_VALUE"])
        elif choice == "unknown field":
            params["notAField"] = "1"
    return HttpCase(f"{method.name} {choice}", verb.upper(), quote(path, safe="/:%*"), body, params)


def _break_json(payload: dict, choice: str, rng: random.Random) -> None:
    """Break one field of a JSON request body in place."""
    keys = list(payload)
    if choice == "missing fields":
        payload.clear()
        return
    if choice == "unknown field" or not keys:
        payload["surelyNotAField"] = {"x": [1, 2]}
        return
    key = rng.choice(keys)
    if choice == "wrong type":
        payload[key] = rng.choice([123, -1, True, None, [1, "a"], {"a": 1}, "not-a-number", 1.5])
    elif choice == "undefined enum":
        payload[key] = rng.choice([99, -5, "NOT_A_VALUE", 2**40])
    elif choice == "control":
        payload[key] = "a" + rng.choice(CONTROL) + "b"
    elif choice == "long":
        payload[key] = "l" * LONG
    elif choice == "huge number":
        payload[key] = rng.choice([2**64, -(2**63) - 1, 1e300])
