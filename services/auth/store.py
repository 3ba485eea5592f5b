"""SQL against the auth schema only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class UserRow:
    id: UUID
    email: str
    display_name: str
    password_hash: str
    email_verified: bool
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRow:
    id: UUID
    display_name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class KeyOwner:
    """What an API key stands for, as a credential check needs it."""

    key_id: UUID
    user_id: UUID
    email_verified: bool


class EmailTaken(Exception):
    pass


_USER_COLUMNS = "id, email, display_name, password_hash, email_verified, created_at"
_API_KEY_COLUMNS = "id, display_name, prefix, created_at, last_used_at"


class AuthStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def create_user(self, email: str, display_name: str, password_hash: str) -> UserRow:
        try:
            row = await self.pool.fetchrow(
                f"INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING {_USER_COLUMNS}",
                email,
                display_name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        return UserRow(**row)

    async def user_by_email(self, email: str) -> UserRow | None:
        row = await self.pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", email)
        return UserRow(**row) if row else None

    async def user_by_id(self, user_id: UUID) -> UserRow | None:
        row = await self.pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return UserRow(**row) if row else None

    @asynccontextmanager
    async def changing_password(self, user_id: UUID, password_hash: str, keep: UUID) -> AsyncIterator[list[UUID]]:
        """Set the user's password and revoke their other sessions (all but `keep`), in one transaction.

        The block gets the revoked sessions' ids, to end them elsewhere before
        the commit: if it raises, neither the password nor any session changes.
        """
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(
                "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1", user_id, password_hash
            )
            yield await _revoke_sessions_of(con, user_id, "password changed", keep)

    async def create_session(self, user_id: UUID, expires_at: datetime, refresh_hash: bytes) -> UUID:
        async with self.pool.acquire() as con, con.transaction():
            session_id = await con.fetchval(
                "INSERT INTO sessions (user_id, expires_at) VALUES ($1, $2) RETURNING id", user_id, expires_at
            )
            await con.execute("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", refresh_hash, session_id)
        return session_id

    async def rotate_refresh_token(self, old_hash: bytes, new_hash: bytes) -> tuple[str, UUID | None, UUID | None]:
        """Use up `old_hash` and issue `new_hash` in its session.

        Returns (outcome, session_id, user_id) with outcome one of "rotated",
        "unknown", "inactive" (session revoked or expired) or "reused" (the
        token was already used: the session is now revoked).
        """
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                "SELECT t.session_id, t.used_at, s.user_id, s.revoked_at, s.expires_at <= now() AS expired"
                " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
                " WHERE t.token_hash = $1 FOR UPDATE OF t, s",
                old_hash,
            )
            if row is None:
                return "unknown", None, None
            if row["revoked_at"] is not None or row["expired"]:
                return "inactive", row["session_id"], row["user_id"]
            if row["used_at"] is not None:
                await con.execute(
                    "UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh token reused' WHERE id = $1",
                    row["session_id"],
                )
                return "reused", row["session_id"], row["user_id"]
            await con.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", old_hash)
            await con.execute("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", new_hash, row["session_id"])
            return "rotated", row["session_id"], row["user_id"]

    async def session_expiry(self, session_id: UUID) -> datetime | None:
        return await self.pool.fetchval(
            "SELECT expires_at FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()", session_id
        )

    async def revoke_session(self, session_id: UUID, reason: str) -> None:
        await self.pool.execute(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
            session_id,
            reason,
        )

    @asynccontextmanager
    async def revoking_sessions_of(self, user_id: UUID, reason: str) -> AsyncIterator[list[UUID]]:
        """Revoke the user's sessions in a transaction that commits only if the block (given their ids) does not raise."""
        async with self.pool.acquire() as con, con.transaction():
            yield await _revoke_sessions_of(con, user_id, reason)

    async def active_sessions_of(self, user_id: UUID) -> list[UUID]:
        rows = await self.pool.fetch(
            "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()", user_id
        )
        return [row["id"] for row in rows]

    # --- email verification ---

    async def create_verification(self, user_id: UUID, token_hash: bytes, expires_at: datetime) -> None:
        await self.pool.execute(
            "INSERT INTO email_verifications (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            token_hash,
            user_id,
            expires_at,
        )

    async def use_verification(self, token_hash: bytes) -> tuple[str, UUID | None]:
        """Use up a verification token and mark its user verified.

        Returns (outcome, user_id) with outcome one of "verified", "unknown",
        "used" or "expired"; only "verified" changes anything.
        """
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                "SELECT user_id, used_at, expires_at <= now() AS expired FROM email_verifications"
                " WHERE token_hash = $1 FOR UPDATE",
                token_hash,
            )
            if row is None:
                return "unknown", None
            if row["used_at"] is not None:
                return "used", row["user_id"]
            if row["expired"]:
                return "expired", row["user_id"]
            await con.execute("UPDATE email_verifications SET used_at = now() WHERE token_hash = $1", token_hash)
            await con.execute("UPDATE users SET email_verified = true WHERE id = $1", row["user_id"])
            return "verified", row["user_id"]

    # --- API keys ---

    async def create_api_key(self, user_id: UUID, display_name: str, prefix: str, secret_hash: bytes) -> ApiKeyRow:
        row = await self.pool.fetchrow(
            "INSERT INTO api_keys (user_id, display_name, prefix, secret_hash) VALUES ($1, $2, $3, $4)"
            f" RETURNING {_API_KEY_COLUMNS}",
            user_id,
            display_name,
            prefix,
            secret_hash,
        )
        return ApiKeyRow(**row)

    async def api_keys_of(self, user_id: UUID, limit: int, after: tuple[datetime, UUID] | None = None) -> list[ApiKeyRow]:
        """The user's keys, newest first, after a (created_at, id) cursor."""
        rows = await self.pool.fetch(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1"
            " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            user_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [ApiKeyRow(**row) for row in rows]

    async def api_key_hashes_of(self, user_id: UUID) -> list[bytes]:
        rows = await self.pool.fetch("SELECT secret_hash FROM api_keys WHERE user_id = $1", user_id)
        return [row["secret_hash"] for row in rows]

    async def delete_api_key(self, user_id: UUID, key_id: UUID) -> bytes | None:
        """Delete one of the user's keys; returns its secret hash, or None if the user has no such key."""
        return await self.pool.fetchval(
            "DELETE FROM api_keys WHERE id = $1 AND user_id = $2 RETURNING secret_hash", key_id, user_id
        )

    async def use_api_key(self, secret_hash: bytes, touch_every_s: int) -> KeyOwner | None:
        """The owner of a key, recording its use if the last one recorded is `touch_every_s` old."""
        row = await self.pool.fetchrow(
            "WITH key AS ("
            "  SELECT k.id, k.user_id, u.email_verified FROM api_keys k JOIN users u ON u.id = k.user_id"
            "  WHERE k.secret_hash = $1"
            "), touched AS ("
            "  UPDATE api_keys SET last_used_at = now() WHERE id = (SELECT id FROM key)"
            "  AND (last_used_at IS NULL OR last_used_at <= now() - $2 * interval '1 second')"
            ") SELECT id AS key_id, user_id, email_verified FROM key",
            secret_hash,
            touch_every_s,
        )
        return KeyOwner(**row) if row else None


async def _revoke_sessions_of(con: asyncpg.Connection, user_id: UUID, reason: str, keep: UUID | None = None) -> list[UUID]:
    rows = await con.fetch(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $2"
        " WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING id",
        user_id,
        reason,
        keep,
    )
    return [row["id"] for row in rows]
