"""Resource names (`jobs/{id}`) and timestamps, the same way in every service."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from .errors import invalid_argument


def parse_name(name: str, collection: str, *, field: str = "name") -> UUID:
    """The id in `<collection>/<uuid>`; anything else is INVALID_ARGUMENT naming the field."""
    prefix, _, raw_id = name.partition("/")
    try:
        if prefix != collection:
            raise ValueError
        return UUID(raw_id)
    except ValueError:
        raise invalid_argument({field: f"must be a resource name like {collection}/<id>, got {name!r}"}) from None


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
