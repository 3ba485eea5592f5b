"""AIP-158 pagination: page_size checks and opaque, tamper-evident page tokens.

A page token is `<base64url cursor>.<base64url MAC>`: the cursor (JSON, where
the next page starts) signed with a key derived from the service secret, and
bound to its list and filters (`scope`). A client cannot forge or edit one,
nor take one to another list or other filters: anything but a token this
list gave out is INVALID_ARGUMENT `INVALID_PAGE_TOKEN`, before its content
is read. Every replica of every service derives the same key
(`use_secret`, called by the runtime at start-up), so any replica continues
a list another began.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import orjson

from .errors import ApiError, invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_MAC_BYTES = 16
# Until the runtime sets the service secret's key (unit tests): tokens work within this process.
_key = secrets.token_bytes(32)


class _Keyed(Protocol):
    # Read-only, so that frozen dataclasses (the stores' rows) match.
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> UUID: ...


T = TypeVar("T", bound=_Keyed)


def use_secret(secret: str) -> None:
    """Sign page tokens with a key derived from `secret` (the service secret every replica shares)."""
    global _key
    _key = hmac.new(secret.encode(), b"octavia page tokens", hashlib.sha256).digest()


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; larger than the maximum is capped; negative is refused."""
    if requested < 0:
        raise invalid_argument({"page_size": "must not be negative"})
    return min(requested or default, maximum)


def encode_token(cursor: dict[str, Any], scope: str) -> str:
    """A page token for `cursor`, valid only for the list and filters named by `scope`."""
    payload = orjson.dumps(cursor)
    return f"{_b64(payload)}.{_b64(_mac(scope, payload))}"


def decode_token(token: str, scope: str) -> dict[str, Any] | None:
    """The cursor inside a page token of `scope`; None for an empty token (the first page)."""
    if not token:
        return None
    encoded, _, mac = token.partition(".")
    try:
        payload, signature = _unb64(encoded), _unb64(mac)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    if not hmac.compare_digest(signature, _mac(scope, payload)):
        raise _invalid()
    cursor = orjson.loads(payload)  # we wrote it: signed, so it parses
    if not isinstance(cursor, dict):
        raise _invalid()
    return cursor


def _invalid() -> ApiError:
    return invalid_argument({"page_token": "is not a token from a previous page of this list"}, reason="INVALID_PAGE_TOKEN")


def _mac(scope: str, payload: bytes) -> bytes:
    return hmac.new(_key, scope.encode() + b"\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Keyset pagination over (created_at, id), newest first: stable while rows are added.


def keyset_after(token: str, scope: str) -> tuple[datetime, UUID] | None:
    """The (created_at, id) a page token continues after; None on the first page."""
    cursor = decode_token(token, scope)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(cursor["t"]), UUID(cursor["id"])
    except (KeyError, TypeError, ValueError):
        raise _invalid() from None


def keyset_page(rows: Sequence[T], limit: int, scope: str) -> tuple[Sequence[T], str]:
    """Split rows fetched with LIMIT limit + 1 into the page and the next page's token."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, ""
    last = page[-1]
    return page, encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, scope)
