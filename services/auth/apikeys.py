"""API keys: long-lived credentials for scripts and servers, with no gRPC in them.

- A key is `oct_<8 hex>_<43 url-safe characters>`: 256 random bits after a
  prefix that tells keys apart in a list. Only its SHA-256 is stored. A slow
  password hash is for low-entropy secrets; guessing 256 bits is hopeless
  already, and every call of every service checks a key, so it must be cheap.
- A key acts for its owner with the owner's rights, on every service, until it
  is deleted. Creating and deleting keys takes a signed-in session (an access
  token): a leaked key cannot mint itself successors nor delete the owner's
  other keys, nor change the owner's password (and so log them out).
  Listing is allowed with a key (scripts may check what exists).
- Each auth process remembers the keys it has checked (`Memory`, Postgres is
  the source of truth). Deleting a key, or a change to its owner, publishes
  the key's hash so that every process forgets it: a deleted key is refused
  at once everywhere. A key's use is recorded when it is read from Postgres,
  at most once per `USE_RESOLUTION_S` across all processes; memory entries
  live that long, so a key in steady use is recorded about once a minute.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

import redis.asyncio as redis
from octavia.auth.v1 import auth_pb2

from octavia_runtime.auth import Principal
from octavia_runtime.errors import invalid_argument, not_found, permission_denied, unauthenticated
from octavia_runtime.validation import max_length

from .memory import Memory
from .store import ApiKeyRow, AuthStore, KeyOwner

CHANNEL = "auth:apikeys:forget"
USE_RESOLUTION_S = 60
MAX_DISPLAY_NAME = max_length(auth_pb2.CreateApiKeyRequest, "display_name")
_FORMAT = re.compile(r"oct_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
_SHOWN_PREFIX = len("oct_") + 8


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeys:
    def __init__(self, store: AuthStore, cache: redis.Redis):
        self.store = store
        self.memory: Memory[KeyOwner] = Memory(cache, CHANNEL, max_age_s=USE_RESOLUTION_S)

    async def create(self, principal: Principal, display_name: str) -> tuple[ApiKeyRow, str]:
        """A new key of the caller and its secret, which is never shown again."""
        require_session(principal)
        display_name = display_name.strip()
        if not display_name:
            raise invalid_argument({"display_name": "is required"})
        if len(display_name) > MAX_DISPLAY_NAME:
            raise invalid_argument({"display_name": f"must be at most {MAX_DISPLAY_NAME} characters long"})
        secret = f"oct_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
        row = await self.store.create_api_key(uuid.UUID(principal.user_id), display_name, secret[:_SHOWN_PREFIX], _digest(secret))
        return row, secret

    async def page(self, user_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None) -> Sequence[ApiKeyRow]:
        """The user's keys, newest first, after a (created_at, id) cursor."""
        return await self.store.api_keys_of(uuid.UUID(user_id), limit, after)

    async def delete(self, principal: Principal, key_id: uuid.UUID, name: str) -> None:
        require_session(principal)
        secret_hash = await self.store.delete_api_key(uuid.UUID(principal.user_id), key_id)
        if secret_hash is None:  # another user's key is as absent as one that never existed
            raise not_found("api_key", name)
        await self.memory.forget([secret_hash.hex()])

    async def owner_changed(self, user_id: uuid.UUID) -> None:
        """The user's details changed (email verified): their keys are read afresh everywhere."""
        await self.memory.forget([h.hex() for h in await self.store.api_key_hashes_of(user_id)])

    async def authenticate(self, secret: str) -> Principal:
        if not _FORMAT.fullmatch(secret):
            raise unauthenticated("INVALID_API_KEY", "the API key is not valid")
        digest = _digest(secret)
        owner = self.memory.recall(digest.hex())
        if owner is None:
            ticket = self.memory.ticket()
            owner = await self.store.use_api_key(digest, USE_RESOLUTION_S)
            if owner is None:
                raise unauthenticated("INVALID_API_KEY", "the API key is unknown or has been deleted")
            self.memory.remember(digest.hex(), owner, ticket)
        return Principal(
            kind="api_key",
            user_id=str(owner.user_id),
            session=f"apiKeys/{owner.key_id}",
            email_verified=owner.email_verified,
        )

    async def follow(self) -> None:
        """Apply other processes' deleted and changed keys; run for the life of the process."""
        await self.memory.follow()


def require_session(principal: Principal, what: str = "API keys are created and deleted") -> None:
    """Refuse anything but a signed-in session's access token (an API key above all) for `what`."""
    if principal.kind != "user":
        raise permission_denied("ACCESS_TOKEN_REQUIRED", f"{what} from a signed-in session, not with an API key")
