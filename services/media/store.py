"""SQL against the media schema only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class AssetRow:
    id: UUID
    owner_id: UUID
    kind: int
    filename: str
    content_type: str
    size_bytes: int
    media_info: bytes | None
    job_id: UUID | None
    created_at: datetime


_COLUMNS = "id, owner_id, kind, filename, content_type, size_bytes, media_info, job_id, created_at"


class MediaStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get(self, owner_id: str, asset_id: UUID) -> AssetRow | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM assets WHERE id = $1 AND owner_id = $2", asset_id, owner_id)
        return AssetRow(**row) if row else None

    async def list(
        self, owner_id: str, limit: int, *, kind: int = 0, job_id: UUID | None = None, after: tuple[datetime, UUID] | None = None
    ) -> list[AssetRow]:
        """The owner's assets, newest first, optionally of one kind or job, after a (created_at, id) cursor."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM assets WHERE owner_id = $1"
            " AND ($2 = 0 OR kind = $2) AND ($3::uuid IS NULL OR job_id = $3)"
            " AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))"
            " ORDER BY created_at DESC, id DESC LIMIT $6",
            owner_id,
            kind,
            job_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [AssetRow(**row) for row in rows]
