"""Standard Webhooks (standardwebhooks.com): checking a webhook's signature over its raw body.

A sender signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 and
sends `v1,<base64 signature>` in `webhook-signature`; the header may hold
several space-separated signatures (while a secret is rotated), and one
match is enough. A secret `whsec_<base64>` stands for the key it encodes.
The timestamp must be within 5 minutes of now, so a captured request cannot
be replayed later; within that window, the receiver deduplicates by
`webhook-id`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from octavia_runtime.errors import unauthenticated

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


def standard_key(secret: str) -> bytes | None:
    """The key of a `whsec_<base64>` secret; None when the secret is not in that form."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True) or None
    except binascii.Error:
        return None


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of a webhook."""
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The webhook's id if a signature in its headers matches `body` under one of `keys`.

    Raises UNAUTHENTICATED with reason INVALID_WEBHOOK_SIGNATURE (headers
    missing or no signature matches) or STALE_WEBHOOK (timestamp more than
    5 minutes away from `now`).
    """
    webhook_id = headers.get(ID_HEADER, "")
    raw_timestamp = headers.get(TIMESTAMP_HEADER, "")
    signatures = headers.get(SIGNATURE_HEADER, "")
    if not (webhook_id and raw_timestamp and signatures):
        raise unauthenticated(
            "INVALID_WEBHOOK_SIGNATURE", f"a webhook needs the {ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
        )
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise unauthenticated("INVALID_WEBHOOK_SIGNATURE", f"{TIMESTAMP_HEADER} must be whole seconds since the epoch") from None
    if abs(now - timestamp) > TOLERANCE_S:
        raise unauthenticated("STALE_WEBHOOK", f"{TIMESTAMP_HEADER} is more than {TOLERANCE_S} s away from now")
    expected = [sign(key, webhook_id, timestamp, body).encode() for key in keys]
    for candidate in signatures.split():
        # compare_digest: how long a comparison takes does not tell how much of a signature was right.
        if any(hmac.compare_digest(candidate.encode(), signature) for signature in expected):
            return webhook_id
    raise unauthenticated("INVALID_WEBHOOK_SIGNATURE", "no webhook-signature matches the body")
