"""AIP-158 pagination: page_size checks and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


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
