"""SQL against the media schema only."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from octavia.media.v1 import media_pb2


@dataclass(frozen=True)
class AssetRow:
    id: UUID
    owner_id: UUID
    kind: media_pb2.AssetKind
    filename: str
    content_type: str
    size_bytes: int
    media_info: bytes | None
    job_id: UUID | None
    storage_key: str
    created_at: datetime


@dataclass(frozen=True)
class UploadRow:
    id: UUID
    owner_id: UUID
    filename: str
    content_type: str
    size_bytes: int
    state: media_pb2.UploadState
    staging_key: str
    request_id: str | None
    asset_id: UUID | None
    failure_reason: str | None
    expire_time: datetime
    created_at: datetime


@dataclass(frozen=True)
class PutWindow:
    """What decides whether a PUT to an upload's staging key may still store its body."""

    state: media_pb2.UploadState
    expired: bool  # past its expiry: no PUT may begin
    past_grace: bool  # and past the grace a PUT begun just before the expiry gets to finish
    completing: bool  # a CompleteUpload is moving what arrived


_COLUMNS = "id, owner_id, kind, filename, content_type, size_bytes, media_info, job_id, storage_key, created_at"
_UPLOAD_COLUMNS = (
    "id, owner_id, filename, content_type, size_bytes, state, staging_key, request_id, asset_id, failure_reason,"
    " expire_time, created_at"
)
PENDING, COMPLETED, EXPIRED, FAILED = (
    media_pb2.UPLOAD_STATE_PENDING,
    media_pb2.UPLOAD_STATE_COMPLETED,
    media_pb2.UPLOAD_STATE_EXPIRED,
    media_pb2.UPLOAD_STATE_FAILED,
)


def _asset(row) -> AssetRow:
    return AssetRow(**row)


def _upload(row) -> UploadRow:
    return UploadRow(**row)


class MediaStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # ------------------------------------------------------------------ assets

    async def get(self, owner_id: str | UUID, asset_id: UUID) -> AssetRow | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM assets WHERE id = $1 AND owner_id = $2", asset_id, owner_id)
        return _asset(row) if row else None

    async def get_many(self, asset_ids: list[UUID]) -> dict[UUID, AssetRow]:
        """Assets by id whoever owns them (for the services' internal calls)."""
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM assets WHERE id = ANY($1::uuid[])", asset_ids)
        return {row["id"]: _asset(row) for row in rows}

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
        return [_asset(row) for row in rows]

    async def delete_asset(self, owner_id: str, asset_id: UUID) -> AssetRow | None:
        """Delete one of the owner's assets; returns what it was (None: no such asset of theirs)."""
        row = await self.pool.fetchrow(
            f"DELETE FROM assets WHERE id = $1 AND owner_id = $2 RETURNING {_COLUMNS}", asset_id, owner_id
        )
        return _asset(row) if row else None

    async def set_media_info(self, asset_id: UUID, media_info: bytes) -> None:
        await self.pool.execute("UPDATE assets SET media_info = $2 WHERE id = $1", asset_id, media_info)

    async def upsert_artifact(
        self,
        *,
        owner_id: UUID,
        job_id: UUID,
        key: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        media_info: bytes | None,
    ) -> AssetRow | None:
        """The ARTIFACT asset of `key`, created or brought up to date (a stage that ran again may have
        rewritten the blob). None if the key is registered to another owner or job."""
        row = await self.pool.fetchrow(
            "INSERT INTO assets (owner_id, kind, filename, content_type, size_bytes, media_info, job_id, storage_key)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (storage_key) DO UPDATE SET"
            "  filename = EXCLUDED.filename, content_type = EXCLUDED.content_type,"
            "  size_bytes = EXCLUDED.size_bytes, media_info = EXCLUDED.media_info"
            "  WHERE assets.owner_id = EXCLUDED.owner_id AND assets.job_id = EXCLUDED.job_id AND assets.kind = EXCLUDED.kind"
            f" RETURNING {_COLUMNS}",
            owner_id,
            media_pb2.ASSET_KIND_ARTIFACT,
            filename,
            content_type,
            size_bytes,
            media_info,
            job_id,
            key,
        )
        return _asset(row) if row else None

    async def delete_job_artifacts(self, owner_id: UUID, job_id: UUID) -> int:
        result = await self.pool.execute(
            "DELETE FROM assets WHERE owner_id = $1 AND job_id = $2 AND kind = $3",
            owner_id,
            job_id,
            media_pb2.ASSET_KIND_ARTIFACT,
        )
        return int(result.split()[-1])

    # ------------------------------------------------------------------ uploads

    async def create_upload(
        self,
        upload_id: UUID,
        owner_id: str,
        *,
        filename: str,
        content_type: str,
        size_bytes: int,
        staging_key: str,
        request_id: str | None,
        expire_time: datetime,
    ) -> tuple[UploadRow, bool]:
        """A new PENDING upload, or with a request id already used by this owner, the first one.
        Returns (upload, created)."""
        row = await self.pool.fetchrow(
            "INSERT INTO uploads (id, owner_id, filename, content_type, size_bytes, state, staging_key, request_id, expire_time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (owner_id, request_id) DO NOTHING"
            f" RETURNING {_UPLOAD_COLUMNS}",
            upload_id,
            owner_id,
            filename,
            content_type,
            size_bytes,
            PENDING,
            staging_key,
            request_id,
            expire_time,
        )
        if row:
            return _upload(row), True
        first = await self.pool.fetchrow(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE owner_id = $1 AND request_id = $2", owner_id, request_id
        )
        return _upload(first), False

    async def get_upload(self, owner_id: str | UUID, upload_id: UUID) -> UploadRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND owner_id = $2", upload_id, owner_id
        )
        return _upload(row) if row else None

    async def expire_upload(self, upload_id: UUID) -> UploadRow | None:
        """Mark a PENDING upload past its expiry EXPIRED; None if it was not (any more)."""
        row = await self.pool.fetchrow(
            f"UPDATE uploads SET state = $2, updated_at = now()"
            f" WHERE id = $1 AND state = $3 AND expire_time <= now() RETURNING {_UPLOAD_COLUMNS}",
            upload_id,
            EXPIRED,
            PENDING,
        )
        return _upload(row) if row else None

    async def renew_upload(self, upload_id: UUID, expire_time: datetime) -> UploadRow:
        """Give an unused (PENDING or EXPIRED) upload a new expiry: it is PENDING again."""
        row = await self.pool.fetchrow(
            f"UPDATE uploads SET state = $2, expire_time = $3, swept = false, updated_at = now()"
            f" WHERE id = $1 AND state IN ($2, $4) RETURNING {_UPLOAD_COLUMNS}",
            upload_id,
            PENDING,
            expire_time,
            EXPIRED,
        )
        if row is None:  # completed or failed meanwhile: it stays as it is
            row = await self.pool.fetchrow(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = $1", upload_id)
        return _upload(row)

    async def claim_completion(self, owner_id: str, upload_id: UUID, lease: timedelta) -> tuple[UploadRow | None, bool]:
        """Take the right to complete a PENDING, unexpired upload for `lease`.
        Returns (upload, claimed); upload is None if the owner has no such upload."""
        row = await self.pool.fetchrow(
            f"UPDATE uploads SET completing_until = now() + $3::interval, updated_at = now()"
            f" WHERE id = $1 AND owner_id = $2 AND state = $4 AND expire_time > now()"
            f" AND (completing_until IS NULL OR completing_until < now()) RETURNING {_UPLOAD_COLUMNS}",
            upload_id,
            owner_id,
            lease,
            PENDING,
        )
        if row:
            return _upload(row), True
        return await self.get_upload(owner_id, upload_id), False

    async def release_completion(self, upload_id: UUID) -> None:
        await self.pool.execute("UPDATE uploads SET completing_until = NULL WHERE id = $1", upload_id)

    async def fail_upload(self, upload_id: UUID, reason: str) -> None:
        await self.pool.execute(
            "UPDATE uploads SET state = $2, failure_reason = $3, completing_until = NULL, updated_at = now() WHERE id = $1",
            upload_id,
            FAILED,
            reason,
        )

    async def complete_upload(self, upload: UploadRow, *, storage_key: str, size_bytes: int, media_info: bytes) -> AssetRow:
        """Create the upload's asset (id = the upload's id) and mark the upload COMPLETED, together."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                "INSERT INTO assets (id, owner_id, kind, filename, content_type, size_bytes, media_info, storage_key)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                f" ON CONFLICT (id) DO UPDATE SET media_info = EXCLUDED.media_info RETURNING {_COLUMNS}",
                upload.id,
                upload.owner_id,
                media_pb2.ASSET_KIND_UPLOAD,
                upload.filename,
                upload.content_type,
                size_bytes,
                media_info,
                storage_key,
            )
            await con.execute(
                "UPDATE uploads SET state = $2, asset_id = $1, completing_until = NULL, updated_at = now() WHERE id = $1",
                upload.id,
                COMPLETED,
            )
        return _asset(row)

    async def uploads_to_sweep(self, older_than: timedelta, limit: int) -> builtins.list[tuple[UUID, str]]:
        """(id, staging key) of uploads expired for longer than `older_than`, not yet swept."""
        rows = await self.pool.fetch(
            "SELECT id, staging_key FROM uploads WHERE NOT swept AND expire_time < now() - $1::interval"
            " ORDER BY expire_time LIMIT $2",
            older_than,
            limit,
        )
        return [(row["id"], row["staging_key"]) for row in rows]

    async def put_window(self, staging_key: str, grace: timedelta) -> PutWindow | None:
        """Whether the upload of `staging_key` still takes its file; None if no upload has that key."""
        row = await self.pool.fetchrow(
            "SELECT state, expire_time <= now() AS expired, expire_time <= now() - $2::interval AS past_grace,"
            " coalesce(completing_until > now(), false) AS completing FROM uploads WHERE staging_key = $1",
            staging_key,
            grace,
        )
        return PutWindow(**row) if row else None

    async def upload_states(self, upload_ids: builtins.list[UUID]) -> dict[UUID, int]:
        """The state of each of these uploads that exists."""
        rows = await self.pool.fetch("SELECT id, state FROM uploads WHERE id = ANY($1::uuid[])", upload_ids)
        return {row["id"]: row["state"] for row in rows}

    async def mark_swept(self, upload_ids: builtins.list[UUID]) -> None:
        await self.pool.execute(
            "UPDATE uploads SET swept = true, state = CASE WHEN state = $2 THEN $3 ELSE state END, updated_at = now()"
            " WHERE id = ANY($1::uuid[])",
            upload_ids,
            PENDING,
            EXPIRED,
        )
