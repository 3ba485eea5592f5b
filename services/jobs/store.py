"""SQL against the jobs schema only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from octavia.jobs.v1 import jobs_pb2, stages_pb2

from octavia_runtime import bus
from octavia_runtime.stages import stage_name


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
    event_seq: int = 0
    request_hash: bytes | None = None
    deadlines: dict | None = None
    frame_rate: float = 0.0


_COLUMNS = "id, owner_id, kind, state, spec, request_id, created_at, updated_at, event_seq, request_hash, deadlines, frame_rate"


@dataclass
class Locked:
    """A job row held FOR UPDATE inside a transaction: what a mutation may change."""

    row: JobRow
    job: jobs_pb2.Job
    deadlines: dict[int, float]
    frame_rate: float


class JobStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get(self, owner_id: str | None, job_id: UUID) -> JobRow | None:
        """The job; with owner_id, only if that user owns it."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)", job_id, owner_id
        )
        return JobRow(**row) if row else None

    async def by_request_id(self, owner_id: str, request_id: str) -> JobRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1 AND request_id = $2", owner_id, request_id
        )
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

    async def create(
        self,
        job_id: UUID,
        owner_id: str,
        job: jobs_pb2.Job,
        request_id: str | None,
        request_hash: bytes | None,
        tasks: list[stages_pb2.StageTask],
        frame_rate: float = 0.0,
    ) -> tuple[JobRow, bool]:
        """Insert the job and its first tasks at once; (row, created). A known request_id returns the first job."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                "INSERT INTO jobs (id, owner_id, kind, state, spec, request_id, request_hash, frame_rate, event_seq)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)"
                " ON CONFLICT (owner_id, request_id) DO NOTHING"
                f" RETURNING {_COLUMNS}",
                job_id,
                owner_id,
                job.kind,
                job.state,
                job.SerializeToString(),
                request_id,
                request_hash,
                frame_rate,
            )
            if row is None:  # the same request_id was used before
                existing = await con.fetchrow(
                    f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1 AND request_id = $2", owner_id, request_id
                )
                return JobRow(**existing), False
            await _enqueue(con, tasks)
            return JobRow(**row), True

    async def mutate(self, job_id: UUID, change: Callable[[Locked], object]) -> tuple[JobRow, object] | None:
        """Lock the job, let `change` edit it, and save it with the tasks it queued, in one transaction.

        `change` returns the orchestrator's Effects (anything with `changed` and
        `publish`); nothing is written when nothing changed. None: no such job.
        """
        async with self.pool.acquire() as con, con.transaction():
            found = await con.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if found is None:
                return None
            row = JobRow(**found)
            locked = Locked(
                row, jobs_pb2.Job.FromString(row.spec), {int(k): v for k, v in (row.deadlines or {}).items()}, row.frame_rate
            )
            effects = change(locked)
            if not effects.changed:
                return row, effects
            saved = await con.fetchrow(
                "UPDATE jobs SET spec = $2, state = $3, deadlines = $4, frame_rate = $5, event_seq = event_seq + 1,"
                f" updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
                job_id,
                locked.job.SerializeToString(),
                locked.job.state,
                {str(k): v for k, v in locked.deadlines.items()},
                locked.frame_rate,
            )
            await _enqueue(con, effects.publish)
            return JobRow(**saved), effects

    async def delete(self, job_id: UUID) -> None:
        await self.pool.execute("DELETE FROM jobs WHERE id = $1", job_id)

    async def unfinished_due(self, limit: int = 100) -> list[UUID]:
        """Unfinished jobs with a stage past its deadline, or cancelling: the sweeper looks at them."""
        rows = await self.pool.fetch(
            "SELECT id FROM jobs WHERE state IN (1, 2, 3) AND (state = 3 OR EXISTS ("
            " SELECT 1 FROM jsonb_each_text(deadlines) AS d(k, v) WHERE v::float8 < extract(epoch FROM now())))"
            " ORDER BY updated_at LIMIT $1",
            limit,
        )
        return [row["id"] for row in rows]

    async def relay(self, publish: Callable, batch: int = 100) -> int:
        """Publish waiting outbox rows in order, then delete them; rows stay if publishing fails."""
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(
                "SELECT id, subject, msg_id, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", batch
            )
            for row in rows:
                await publish(row["subject"], row["payload"], row["msg_id"])
            if rows:
                await con.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
            return len(rows)


async def _enqueue(con: asyncpg.Connection, tasks: list[stages_pb2.StageTask]) -> None:
    if not tasks:
        return
    await con.executemany(
        "INSERT INTO outbox (subject, msg_id, payload) VALUES ($1, $2, $3)",
        [
            (
                bus.task_subject(stage_name(task.stage), jobs_pb2.Priority.Name(task.priority).removeprefix("PRIORITY_").lower()),
                task.task_id,
                task.SerializeToString(),
            )
            for task in tasks
        ],
    )
