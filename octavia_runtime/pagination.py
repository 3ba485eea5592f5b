"""AIP-158 pagination: page_size checks and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from .errors import invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
T = TypeVar("T")


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; larger than the maximum is capped; negative is refused."""
    if requested < 0:
        raise invalid_argument({"page_size": "must not be negative"})
    return min(requested or default, maximum)


def encode_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """The cursor inside a page token; None for an empty token (the first page)."""
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        cursor = None
    if not isinstance(cursor, dict):
        raise invalid_argument({"page_token": "is not a token from a previous page of this list"})
    return cursor


# Keyset pagination over (created_at, id), newest first: stable while rows are added.


def keyset_after(token: str) -> tuple[datetime, UUID] | None:
    """The (created_at, id) a page token continues after; None on the first page."""
    cursor = decode_token(token)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(cursor["t"]), UUID(cursor["id"])
    except (KeyError, TypeError, ValueError):
        raise invalid_argument({"page_token": "is not a token from a previous page of this list"}) from None


def keyset_page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], str]:
    """Split rows fetched with LIMIT limit + 1 into the page and the next page's token."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, ""
    last = page[-1]
    return page, encode_token({"t": last.created_at.isoformat(), "id": str(last.id)})
