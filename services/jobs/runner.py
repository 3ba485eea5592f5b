"""The orchestrator's moving parts: the loops that connect the state machine to the world.

- `relay`: publishes the outbox to JetStream (`Nats-Msg-Id` = task id, so a
  row published twice, after a crash between publish and delete, is dropped).
- `consume_events`: applies workers' StageEvents to jobs, in order per job.
- `sweep`: stages past their deadline and cancels nobody confirms.
- `watch_exhausted`: tasks JetStream stopped delivering (max deliveries).
- `settle`: delivers what ended jobs owe billing (capture or release their
  hold), and releases holds whose job was never created.

Each change is one transaction (`JobStore.mutate`); after it commits, the
JobEvent goes to watchers on core NATS and the cancel flag, when set, to the
KV bucket that running workers poll.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import grpc
import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KeyValue
from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.errors import clip, dependency_down

from . import orchestrator, pipeline
from .credits import Credits
from .orchestrator import Effects
from .store import JobRow, JobStore, Locked
from .views import job_event, now

log = structlog.get_logger("orchestrator")

RELAY_POLL_S = 1.0
SWEEP_INTERVAL_S = 2.0
CANCEL_TIMEOUT_S = 30.0
EVENT_BATCH = 64
SETTLE_POLL_S = 5.0
# A reservation still without its job after this long lost its CreateJob (which takes seconds at most).
ABANDONED_RESERVATION_S = 120.0


class Runner:
    def __init__(self, store: JobStore, js, nc, media_channel, credits: Credits):
        self.store = store
        self.js = js
        self.nc = nc
        self.media = media_pb2_grpc.MediaServiceStub(media_channel)
        self.credits = credits
        self._outbox = asyncio.Event()
        self._settlements = asyncio.Event()
        self._cancel_kv: KeyValue | None = None
        self._cleanups: set[asyncio.Task] = set()

    # -- changes ---------------------------------------------------------------------------

    async def change(self, job_id: UUID, change) -> tuple[JobRow, Effects] | None:
        """Apply `change(locked) -> Effects` in one transaction, then tell the world.

        A job that ends in it owes billing its settlement, written in the same transaction.
        """
        before: list[int] = []

        def remembering(locked: Locked) -> Effects:
            before.append(locked.job.state)
            effects = change(locked)
            if before[0] not in pipeline.TERMINAL_STATES and locked.job.state in pipeline.TERMINAL_STATES:
                effects.settle = orchestrator.settle(locked.job, locked.row.id, locked.row.hold)
            return effects

        done = await self.store.mutate(job_id, remembering)
        if done is None:
            return None
        row, effects = done
        await self.after_commit(row, effects)
        if effects.settle is not None:
            self._settlements.set()
        if row.state in (jobs_pb2.STATE_FAILED, jobs_pb2.STATE_CANCELLED) and before and before[0] != row.state:
            # A job that gave nothing keeps nothing: its intermediate blobs go (the record stays).
            cleanup = asyncio.create_task(self._discard_blobs(row))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
        return row, effects

    async def _discard_blobs(self, row: JobRow) -> None:
        try:
            await self.media.DeleteJobArtifacts(
                media_pb2.DeleteJobArtifactsRequest(job=f"jobs/{row.id}", owner=f"users/{row.owner_id}"), timeout=60
            )
        except Exception:  # noqa: BLE001 - left for DeleteJob; logged
            log.exception("jobs.discard_failed", job_id=str(row.id))

    async def after_commit(self, row: JobRow, effects: Effects) -> None:
        if effects.publish:
            self._outbox.set()
        if effects.cancel_flag:
            await self.flag_cancel(str(row.id))
        if effects.changed:
            kind = jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED if effects.state_changed else jobs_pb2.JOB_EVENT_TYPE_PROGRESS
            await self.announce(job_event(row, kind))

    async def announce(self, event: jobs_pb2.JobEvent) -> None:
        """Tell every jobs replica's watchers (core NATS: a watcher that misses it re-reads the job)."""
        await self.nc.publish(bus.job_event_subject(event.job_name.removeprefix("jobs/")), event.SerializeToString())

    async def flag_cancel(self, job_id: str) -> None:
        if self._cancel_kv is None:
            self._cancel_kv = await self.js.key_value(bus.CANCEL_BUCKET)
        await self._cancel_kv.put(job_id, b"1")

    def kick(self) -> None:
        """New outbox rows were committed: publish them now rather than at the next poll."""
        self._outbox.set()

    # -- loops -------------------------------------------------------------------------------

    async def relay(self) -> None:
        async def publish(subject: str, payload: bytes, msg_id: str) -> None:
            await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})

        async for _ in _wakes(self._outbox, RELAY_POLL_S):
            try:
                while await self.store.relay(publish) > 0:
                    pass
            except Exception as exc:  # noqa: BLE001 - NATS or Postgres away: rows wait for the next round
                log.warning("outbox.relay_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RELAY_POLL_S)

    async def consume_events(self) -> None:
        sub = await self.js.pull_subscribe_bind(durable=bus.ORCHESTRATOR.durable, stream=bus.ORCHESTRATOR.stream)
        while True:
            try:
                messages = await sub.fetch(EVENT_BATCH, timeout=5)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as exc:  # noqa: BLE001
                log.warning("events.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1)
                continue
            # In order within a job, jobs side by side.
            by_job = defaultdict(list)
            for msg in messages:
                by_job[msg.subject].append(msg)
            await asyncio.gather(*(self._apply_all(batch) for batch in by_job.values()))

    async def _apply_all(self, messages) -> None:
        for msg in messages:
            try:
                event = stages_pb2.StageEvent.FromString(msg.data)
            except Exception:  # noqa: BLE001
                log.error("events.undecodable", subject=msg.subject)
                await msg.term()
                continue
            try:
                await self.apply_event(event)
            except Exception as exc:  # noqa: BLE001 - sorted below: retried, or the job fails now
                if _retryable(exc) and msg.metadata.num_delivered < bus.ORCHESTRATOR.max_deliver:
                    # Media or Postgres away while registering artifacts or saving: soon again.
                    log.warning("events.apply_failed", job_id=event.job, task_id=event.task_id, error=_describe(exc))
                    await msg.nak(delay=2)
                    continue
                log.exception("events.rejected", job_id=event.job, task_id=event.task_id)
                await self._reject(event, _describe(exc))
                await msg.term()
            else:
                await msg.ack()

    async def _reject(self, event: stages_pb2.StageEvent, why: str) -> None:
        """Fail the stage of an event that cannot be applied, at once and saying why."""
        try:
            job_id = UUID(event.job.removeprefix("jobs/"))

            def change(locked: Locked) -> Effects:
                nodes = pipeline.plan(locked.job.kind, list(locked.job.target_languages))
                return orchestrator.reject(_named(locked), nodes, event, why, now())

            await self.change(job_id, change)
        except Exception:  # noqa: BLE001 - Postgres away too: the deadline sweep still ends the job
            log.exception("events.reject_failed", job_id=event.job, task_id=event.task_id)

    async def apply_event(self, event: stages_pb2.StageEvent) -> None:
        try:
            job_id = UUID(event.job.removeprefix("jobs/"))
        except ValueError:
            return
        assets: dict[str, media_pb2.Asset] = {}
        if event.outcome == stages_pb2.STAGE_OUTCOME_SUCCEEDED and any(o.role in pipeline.ARTIFACT_KINDS for o in event.outputs):
            row = await self.store.get(None, job_id)
            if row is None or row.state in pipeline.TERMINAL_STATES:
                return
            assets = await self._register(jobs_pb2.Job.FromString(row.spec), row, event)

        def change(locked: Locked) -> Effects:
            if event.WhichOneof("result") == "probe":
                locked.frame_rate = pipeline.video_frame_rate(event.probe.media_info) or locked.frame_rate
            nodes = pipeline.plan(locked.job.kind, list(locked.job.target_languages))
            return orchestrator.on_event(
                _named(locked),
                nodes,
                event,
                now(),
                assets=assets,
                deadlines=locked.deadlines,
                segments=locked.segments,
                frame_rate=locked.frame_rate,
            )

        result = await self.change(job_id, change)
        if result and result[1].ignored:
            log.debug("events.ignored", job_id=event.job, task_id=event.task_id, why=result[1].ignored)

    async def _register(self, job: jobs_pb2.Job, row: JobRow, event: stages_pb2.StageEvent) -> dict[str, media_pb2.Asset]:
        """Make the user-facing outputs assets of the job's owner (idempotent by key)."""
        job.name = f"jobs/{row.id}"
        assets = {}
        for output in event.outputs:
            if output.role not in pipeline.ARTIFACT_KINDS:
                continue
            reply = await self.media.RegisterArtifact(
                media_pb2.RegisterArtifactRequest(
                    key=output.key,
                    owner=f"users/{row.owner_id}",
                    job=job.name,
                    filename=pipeline.artifact_filename(job, output),
                    content_type=output.content_type,
                ),
                timeout=10,
            )
            assets[output.key] = reply.asset
        return assets

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                for job_id in await self.store.unfinished_due():

                    def change(locked: Locked) -> Effects:
                        nodes = pipeline.plan(locked.job.kind, list(locked.job.target_languages))
                        return orchestrator.expire(
                            _named(locked),
                            nodes,
                            locked.deadlines,
                            now(),
                            cancel_timeout_s=CANCEL_TIMEOUT_S,
                            segments=locked.segments,
                            frame_rate=locked.frame_rate,
                        )

                    await self.change(job_id, change)
            except Exception:  # noqa: BLE001
                log.exception("sweep.failed")

    async def settle(self) -> None:
        async for _ in _wakes(self._settlements, SETTLE_POLL_S):
            try:
                while await self.store.settle(self.credits.deliver) > 0:
                    pass
                for job_id in await self.store.abandoned_reservations(ABANDONED_RESERVATION_S):
                    if await self.credits.release_reference(job_id):
                        await self.store.reserved_without_job(job_id)
            except Exception:  # noqa: BLE001 - billing or Postgres away: rows wait for the next round
                log.exception("settle.failed")

    async def watch_exhausted(self) -> None:
        """Fail the job of a task JetStream gave up on (its workers died on every delivery)."""
        sub = await self.nc.subscribe(bus.max_deliveries_advisories(bus.TASKS_STREAM))
        async for msg in sub.messages:
            try:
                advisory = json.loads(msg.data)
                stored = await self.js.get_msg(bus.TASKS_STREAM, advisory["stream_seq"])
                task = stages_pb2.StageTask.FromString(stored.data)
                log.warning("tasks.exhausted", task_id=task.task_id, deliveries=advisory.get("deliveries"))

                def change(locked: Locked, task=task) -> Effects:
                    nodes = pipeline.plan(locked.job.kind, list(locked.job.target_languages))
                    return orchestrator.exhausted(_named(locked), nodes, task, now())

                await self.change(UUID(task.job.removeprefix("jobs/")), change)
                await self.js.delete_msg(bus.TASKS_STREAM, advisory["stream_seq"])
            except Exception:  # noqa: BLE001 - the deadline sweep still catches the job
                log.exception("tasks.exhausted_unhandled")


# A peer's answer that says nothing about the event itself: the same call may work soon.
_PEER_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
    }
)  # fmt: skip


def _retryable(exc: Exception) -> bool:
    """Whether applying an event failed for a reason of the moment (a server away, a lock
    conflict) rather than because of the event (an output a peer refuses, a bug): only those
    are tried again."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _PEER_TRANSIENT
    return dependency_down(exc) or isinstance(exc, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError))


def _describe(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details()}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return clip(text, 300)


async def _wakes(event: asyncio.Event, poll_s: float) -> AsyncIterator[None]:
    """Forever: once `event` is set (new work was committed), or `poll_s` passed without it
    (work committed by another replica, or left from a failed round)."""
    while True:
        try:
            await asyncio.wait_for(event.wait(), poll_s)
        except TimeoutError:
            pass
        event.clear()
        yield


def _named(locked: Locked) -> jobs_pb2.Job:
    """The stored Job with the name and owner the tasks need (they are columns, not stored in spec)."""
    locked.job.name = f"jobs/{locked.row.id}"
    locked.job.owner = f"users/{locked.row.owner_id}"
    return locked.job
