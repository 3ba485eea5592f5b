"""SQL against the jobs schema only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class JobRow:
    id: UUID
    owner_id: UUID
    kind: int
    state: int
    spec: bytes
    request_id: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, owner_id, kind, state, spec, request_id, created_at, updated_at"


class JobStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get(self, owner_id: str, job_id: UUID) -> JobRow | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND owner_id = $2", job_id, owner_id)
        return JobRow(**row) if row else None

    async def list(
        self, owner_id: str, limit: int, *, state: int = 0, kind: int = 0, after: tuple[datetime, UUID] | None = None
    ) -> list[JobRow]:
        """The owner's jobs, newest first, optionally filtered, after a (created_at, id) cursor."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1"
            " AND ($2 = 0 OR state = $2) AND ($3 = 0 OR kind = $3)"
            " AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))"
            " ORDER BY created_at DESC, id DESC LIMIT $6",
            owner_id,
            state,
            kind,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [JobRow(**row) for row in rows]
