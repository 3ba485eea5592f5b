"""SQL against the jobs schema only."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from octavia.jobs.v1 import jobs_pb2, stages_pb2

from octavia_runtime import bus
from octavia_runtime.stages import stage_name

from .orchestrator import Effects, Settlement
from .pipeline import TERMINAL_STATES


@dataclass(frozen=True)
class JobRow:
    id: UUID
    owner_id: UUID
    kind: jobs_pb2.JobKind
    state: jobs_pb2.State
    spec: bytes
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    event_seq: int = 0
    request_hash: bytes | None = None
    deadlines: dict | None = None
    frame_rate: float = 0.0
    hold: str | None = None
    segments: dict | None = None


_COLUMNS = (
    "id, owner_id, kind, state, spec, request_id, created_at, updated_at, event_seq, request_hash, deadlines, frame_rate,"
    " hold, segments"
)


@dataclass
class Locked:
    """A job row held FOR UPDATE inside a transaction: what a mutation may change."""

    row: JobRow
    job: jobs_pb2.Job
    deadlines: dict[int, float]
    frame_rate: float
    segments: dict[int, int]  # fanned-out stage index: bit mask of its finished segments


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
        tasks: builtins.list[stages_pb2.StageTask],
        frame_rate: float = 0.0,
        hold: str | None = None,
    ) -> tuple[JobRow, bool]:
        """Insert the job and its first tasks at once; (row, created). A known request_id returns the first job.

        The job's reservation is settled with it; when the request_id was
        already used the reservation stays, for the caller to release.
        """
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                "INSERT INTO jobs (id, owner_id, kind, state, spec, request_id, request_hash, frame_rate, hold, event_seq)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)"
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
                hold,
            )
            if row is None:  # the same request_id was used before
                existing = await con.fetchrow(
                    f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1 AND request_id = $2", owner_id, request_id
                )
                return JobRow(**existing), False
            await con.execute("DELETE FROM reservations WHERE job_id = $1", job_id)
            await _enqueue(con, tasks)
            return JobRow(**row), True

    # -- credits ----------------------------------------------------------------------------------

    async def reserving(self, job_id: UUID) -> None:
        """Note that a hold is being asked for `job_id` (before the job exists)."""
        await self.pool.execute("INSERT INTO reservations (job_id) VALUES ($1) ON CONFLICT DO NOTHING", job_id)

    async def reserved_without_job(self, job_id: UUID) -> None:
        """The hold for `job_id` was refused or released: nothing is left to clean up."""
        await self.pool.execute("DELETE FROM reservations WHERE job_id = $1", job_id)

    async def abandoned_reservations(self, older_than_s: float, limit: int = 100) -> builtins.list[UUID]:
        """Reservations whose job was never created (CreateJob crashed or lost its caller)."""
        rows = await self.pool.fetch(
            "SELECT job_id FROM reservations WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
            older_than_s,
            limit,
        )
        return [row["job_id"] for row in rows]

    async def settle(self, deliver: Callable, batch: int = 50) -> int:
        """Hand waiting settlements to `deliver(settlement) -> bool` and delete the delivered.

        The first one not delivered (billing away) ends the round: its attempt is counted, the rest wait.
        """
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(
                "SELECT job_id, hold, capture FROM settlements ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED", batch
            )
            delivered, pending = [], []
            for row in rows:
                if not await deliver(Settlement(**row)):
                    pending.append(row["job_id"])
                    break
                delivered.append(row["job_id"])
            await con.execute("DELETE FROM settlements WHERE job_id = ANY($1::uuid[])", delivered)
            await con.execute("UPDATE settlements SET attempts = attempts + 1 WHERE job_id = ANY($1::uuid[])", pending)
            return len(delivered)

    async def mutate(self, job_id: UUID, change: Callable[[Locked], Effects]) -> tuple[JobRow, Effects] | None:
        """Lock the job, let `change` edit it, and save it with the tasks it queued and the
        settlement it owes, in one transaction. Nothing is written when nothing changed.
        None: no such job.
        """
        async with self.pool.acquire() as con, con.transaction():
            found = await con.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if found is None:
                return None
            row = JobRow(**found)
            locked = Locked(
                row,
                jobs_pb2.Job.FromString(row.spec),
                {int(k): v for k, v in (row.deadlines or {}).items()},
                row.frame_rate,
                {int(k): int(v, 16) for k, v in (row.segments or {}).items()},
            )
            effects = change(locked)
            if not effects.changed:
                return row, effects
            saved = await con.fetchrow(
                "UPDATE jobs SET spec = $2, state = $3, deadlines = $4, frame_rate = $5, segments = $6,"
                f" event_seq = event_seq + 1, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
                job_id,
                locked.job.SerializeToString(),
                locked.job.state,
                {str(k): v for k, v in locked.deadlines.items()},
                locked.frame_rate,
                {str(k): format(v, "x") for k, v in locked.segments.items()},
            )
            await _enqueue(con, effects.publish)
            if effects.settle is not None:
                await _owe(con, effects.settle)
            return JobRow(**saved), effects

    async def delete(self, job_id: UUID) -> None:
        """Delete the job; the hold of one that had not finished is released."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow("DELETE FROM jobs WHERE id = $1 RETURNING state, hold", job_id)
            if row is not None and row["hold"] and row["state"] not in TERMINAL_STATES:
                await _owe(con, Settlement(job_id, row["hold"], capture=False))

    async def unfinished_due(self, limit: int = 100) -> builtins.list[UUID]:
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


async def _owe(con: asyncpg.Connection, settlement: Settlement) -> None:
    """Record what billing is owed; a job settles once (its first end state decides)."""
    await con.execute(
        "INSERT INTO settlements (job_id, hold, capture) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        settlement.job_id,
        settlement.hold,
        settlement.capture,
    )


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
