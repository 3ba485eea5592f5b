"""SQL against the auth schema only."""

from __future__ import annotations

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


class EmailTaken(Exception):
    pass


_USER_COLUMNS = "id, email, display_name, password_hash, email_verified, created_at"


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

    async def set_password(self, user_id: UUID, password_hash: str) -> None:
        await self.pool.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1", user_id, password_hash
        )

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
            await con.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", new_hash, row["session_id"]
            )
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

    async def revoke_sessions_of(self, user_id: UUID, reason: str, keep: UUID | None = None) -> list[UUID]:
        rows = await self.pool.fetch(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = $2"
            " WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING id",
            user_id,
            reason,
            keep,
        )
        return [row["id"] for row in rows]
