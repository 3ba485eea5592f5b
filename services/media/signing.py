"""Signed URLs of the local blob backend: what a URL allows, proven with HMAC-SHA256.

A URL's query states its grant (method, expiry, the object's digest and, for
PUT, the maximum size and the content type; for GET, how to present the file)
and `sig`, an HMAC over all of it with the blob signing key:

    /blobs/uploads/1f0c.../talk.mp4?method=PUT&expires=1767225600&obj=...&max=5242880&type=video%2Fmp4&sig=...

Verification checks the signature over the stated grant first, then the
request against the grant. So a URL whose query was edited (a later expiry, a
larger size) fails as SIGNATURE_INVALID, while an authentic URL used the wrong
way says how: SIGNATURE_EXPIRED, METHOD_NOT_ALLOWED or WRONG_OBJECT.

The grant names the object by a digest of its key, not the key itself: the key
is already the URL's path, and the digest lets a URL used on another path be
told apart from a forged one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

VERSION = "v1"
METHODS = ("GET", "PUT")
DISPOSITIONS = ("attachment", "inline")


class SignatureError(Exception):
    """A signed URL does not allow this request; `reason` says why in UPPER_SNAKE_CASE."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Grant:
    """What one signed URL allows."""

    method: str  # GET (which also allows HEAD) or PUT
    key: str
    expires: int  # Unix time, seconds
    max_bytes: int | None = None  # PUT: the largest body accepted
    content_type: str | None = None  # PUT: the Content-Type the request must carry; GET: the one served
    disposition: str | None = None  # GET: attachment or inline
    filename: str | None = None  # GET: the name the browser saves the file as


def object_digest(key: str) -> str:
    return _b64(hashlib.sha256(key.encode()).digest())


def sign(secret: str, grant: Grant) -> dict[str, str]:
    """The query parameters of a URL carrying `grant`."""
    if grant.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {grant.method!r}")
    if grant.disposition is not None and grant.disposition not in DISPOSITIONS:
        raise ValueError(f"disposition must be one of {', '.join(DISPOSITIONS)}, not {grant.disposition!r}")
    params = {"method": grant.method, "expires": str(grant.expires), "obj": object_digest(grant.key)}
    if grant.max_bytes is not None:
        params["max"] = str(grant.max_bytes)
    if grant.content_type:
        params["type"] = grant.content_type
    if grant.disposition:
        params["disposition"] = grant.disposition
    if grant.filename:
        params["filename"] = grant.filename
    if any("\n" in value for value in params.values()):
        raise ValueError("a signed field cannot contain a line break")
    params["sig"] = _signature(secret, params)
    return params


def verify(secret: str, method: str, key: str, params: Mapping[str, str], now: float) -> Grant:
    """The grant of a signed URL if it allows `method` on `key` at `now`; else SignatureError."""
    given = params.get("sig", "")
    if not given or "method" not in params or "expires" not in params or "obj" not in params:
        raise SignatureError("SIGNATURE_INVALID", "the URL is not signed: it lacks method, expires, obj or sig")
    expected = _signature(secret, params)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("SIGNATURE_INVALID", "the URL's signature does not match its parameters")
    # From here on, every parameter is as the service signed it (an empty one as if absent:
    # both sign the same message).
    grant = Grant(
        method=params["method"],
        key=key,
        expires=int(params["expires"]),
        max_bytes=int(params["max"]) if params.get("max") else None,
        content_type=params.get("type") or None,
        disposition=params.get("disposition") or None,
        filename=params.get("filename") or None,
    )
    if not hmac.compare_digest(params["obj"].encode(), object_digest(key).encode()):
        raise SignatureError("WRONG_OBJECT", "the URL was signed for another object")
    allowed = ("GET", "HEAD") if grant.method == "GET" else (grant.method,)
    if method not in allowed:
        raise SignatureError("METHOD_NOT_ALLOWED", f"the URL allows {grant.method}, not {method}")
    if now >= grant.expires:
        raise SignatureError("SIGNATURE_EXPIRED", "the URL has expired")
    return grant


def _signature(secret: str, params: Mapping[str, str]) -> str:
    # One field per line, in a fixed order, absent ones empty: no two grants share a message.
    fields = (VERSION, *(params.get(name, "") for name in ("method", "expires", "obj", "max", "type", "disposition", "filename")))
    if any("\n" in value for value in fields):
        return ""  # cannot come from sign(): never matches a real signature
    return _b64(hmac.new(secret.encode(), "\n".join(fields).encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
