"""Stage workers: how a service runs the job-pipeline tasks it owns.

A service hands `StageWorker` one handler per stage. The worker pulls
`StageTask`s from the service's durable consumer and, for each one:

- reports STARTED, then runs the handler while it
  - keeps the message with `in_progress()` every third of `ack_wait`, so long
    work is not redelivered but a killed worker's task is, soon;
  - watches the job's cancel flag (KV `octavia_cancel`) and the task's
    deadline, and sets `ctx.stop` (a threading.Event that model code running
    in a thread checks between chunks);
- reports SUCCEEDED with the outputs and result, then acks;
- on `StageError(permanent=True)` reports FAILED_PERMANENT and `term()`s;
- on any other failure reports FAILED_TRANSIENT and `nak(delay)`s with
  backoff, or, on the last allowed delivery, reports FAILED_PERMANENT with
  reason RETRIES_EXHAUSTED and `term()`s: the job fails, it is never stuck;
- on cancel, reports CANCELLED and acks.

Terminal events carry `Nats-Msg-Id` `<task id>/<outcome>`: a task redelivered
after its event was published but before its ack emits a duplicate that
JetStream drops. Handlers write to deterministic keys, so running twice is
harmless.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from octavia.jobs.v1 import jobs_pb2, stages_pb2

from . import bus
from .errors import MAX_MESSAGE_CHARS, clip, without_paths
from .metrics import STAGE_SECONDS

log = structlog.get_logger("stages")

WORKER_ID = f"{socket.gethostname()}/{os.getpid()}"
PROGRESS_INTERVAL_S = 0.5  # at most two progress events a second per task
# An empty consumer answers a fetch only when the request expires: this is what looking at
# an empty priority costs before the next one is tried.
TAKE_TIMEOUT_S = 0.02
IDLE_POLL_S = 5.0  # look again this often even without a doorbell (one may have been missed)
CANCEL_POLL_S = 1.0


class StageError(Exception):
    """A stage failed. Permanent: retrying cannot help (bad media, unsupported language)."""

    def __init__(self, reason: str, message: str, *, permanent: bool, code: int = code_pb2.FAILED_PRECONDITION):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.code = code


def permanent(reason: str, message: str, code: int = code_pb2.FAILED_PRECONDITION) -> StageError:
    return StageError(reason, message, permanent=True, code=code)


def transient(reason: str, message: str) -> StageError:
    return StageError(reason, message, permanent=False, code=code_pb2.UNAVAILABLE)


class Stopped(Exception):
    """Raised by handler code that noticed `ctx.stop`: the job is being cancelled or the deadline passed."""


@dataclass
class StageOutput:
    """What a handler returns: the outputs it wrote, and the stage's result message if it has one."""

    outputs: list[stages_pb2.ArtifactRef] = field(default_factory=list)
    result: Any = None  # ProbeResult, TranscribeResult, ... (the StageEvent oneof field is found by type)


@dataclass
class StageContext:
    task: stages_pb2.StageTask
    domain: str
    publish_progress: Callable[[int, str], Awaitable[None]]
    stop: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    _last_progress: float = 0.0

    @property
    def job_id(self) -> str:
        return self.task.job.removeprefix("jobs/")

    async def progress(self, percent: float, message: str = "") -> None:
        """Report how far the task is (throttled; 100 % is left to SUCCEEDED)."""
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            await self.publish_progress(max(0, min(99, int(percent))), message)

    def progress_from_thread(self, percent: float, message: str = "") -> None:
        """`progress` for code running in a worker thread; raises Stopped once the task should stop."""
        if self.stop.is_set():
            raise Stopped()
        asyncio.run_coroutine_threadsafe(self.progress(int(percent), message), self.loop)

    def output(self, role: int) -> stages_pb2.ArtifactRef:
        """The output of `role` the orchestrator asked for (it chose the key)."""
        return _find(self.task.outputs, role, "output")

    def input(self, role: int) -> stages_pb2.ArtifactRef:
        return _find(self.task.inputs, role, "input")


def _find(refs, role: int, kind: str) -> stages_pb2.ArtifactRef:
    for ref in refs:
        if ref.role == role:
            return ref
    raise permanent("BAD_TASK", f"the task has no {kind} of role {stages_pb2.ArtifactRole.Name(role)}")


Handler = Callable[[StageContext], Coroutine[Any, Any, StageOutput]]

_RESULT_FIELDS = {
    stages_pb2.ProbeResult: "probe",
    stages_pb2.TranscribeResult: "transcribe",
    stages_pb2.TranslateResult: "translate",
    stages_pb2.TtsResult: "tts",
    stages_pb2.MixResult: "mix",
    stages_pb2.RenderSubtitlesResult: "render_subtitles",
}


def stage_name(stage: int) -> str:
    """`STAGE_EXTRACT_AUDIO` -> `extract_audio`, the subject token."""
    return jobs_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()


def error_status(reason: str, message: str, domain: str, code: int) -> status_pb2.Status:
    """A stage's or a job's error as its owner will read it: clipped, and naming no server path."""
    message = clip(without_paths(message), MAX_MESSAGE_CHARS)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    return status_pb2.Status(code=code, message=message, details=[detail])


class StageWorker:
    """Runs `handlers` for the tasks on `consumers` (one per priority, highest first), `concurrency` at a time.

    A free slot takes the next task from the highest priority that has one.
    While there is nothing, it sleeps until a task is published on one of its
    subjects (a core NATS subscription on them is the doorbell; the task
    itself is fetched from JetStream) or IDLE_POLL_S passes.
    """

    def __init__(
        self,
        nc,
        js,
        consumers: tuple[bus.Consumer, ...],
        handlers: dict[int, Handler],
        *,
        domain: str,
        concurrency: int = 1,
    ):
        self.nc = nc
        self.js = js
        self.consumers = consumers
        self.handlers = handlers
        self.domain = domain
        self.concurrency = concurrency
        self._cancel_kv: KeyValue | None = None
        self._doorbells = [asyncio.Event() for _ in range(concurrency)]

    async def run(self) -> None:
        self._cancel_kv = await self.js.key_value(bus.CANCEL_BUCKET)
        subs = [await self.js.pull_subscribe_bind(durable=c.durable, stream=c.stream) for c in self.consumers]

        async def ring(_msg) -> None:
            for doorbell in self._doorbells:
                doorbell.set()

        subjects = {subject for consumer in self.consumers for subject in consumer.subjects}
        bells = [await self.nc.subscribe(subject, cb=ring) for subject in sorted(subjects)]
        try:
            await asyncio.gather(*(self._loop(subs, doorbell) for doorbell in self._doorbells))
        finally:
            for bell in bells:
                await bell.unsubscribe()

    async def _loop(self, subs, doorbell: asyncio.Event) -> None:
        while True:
            doorbell.clear()
            msg = await self._take(subs)
            if msg is not None:
                await self._handle(msg)
                continue
            try:
                await asyncio.wait_for(doorbell.wait(), IDLE_POLL_S)
            except TimeoutError:
                pass

    async def _take(self, subs):
        """The next task, from the highest priority that has one; None when all are empty."""
        for sub in subs:
            try:
                return (await sub.fetch(1, timeout=TAKE_TIMEOUT_S))[0]
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as exc:  # noqa: BLE001 - NATS reconnecting: try again shortly
                log.warning("stages.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1)
                return None
        return None

    @property
    def max_deliver(self) -> int:
        return self.consumers[0].max_deliver

    async def _handle(self, msg) -> None:
        try:
            task = stages_pb2.StageTask.FromString(msg.data)
        except Exception:  # noqa: BLE001 - a message nobody can read is dropped loudly, never retried
            log.error("stages.undecodable_task", subject=msg.subject)
            await msg.term()
            return
        stage = stage_name(task.stage)
        delivery = msg.metadata.num_delivered
        last_try = delivery >= self.max_deliver
        structlog.contextvars.bind_contextvars(job_id=task.job, task_id=task.task_id, stage=stage, delivery=delivery)
        started = time.monotonic()
        ctx = StageContext(
            task, self.domain, lambda pct, text: self._publish(task, stages_pb2.STAGE_OUTCOME_PROGRESS, progress=(pct, text))
        )
        try:
            if await self._cancelled(ctx.job_id):
                await self._publish(task, stages_pb2.STAGE_OUTCOME_CANCELLED, msg_id=f"{task.task_id}/cancelled")
                await msg.ack()
                return
            handler = self.handlers.get(task.stage)
            if handler is None:
                raise permanent("BAD_TASK", f"this worker does not run stage {stage}")
            await self._publish(task, stages_pb2.STAGE_OUTCOME_STARTED)
            output = await self._run(ctx, msg, handler)
        except Stopped:
            if await self._cancelled(ctx.job_id):
                log.info("stages.cancelled")
                await self._publish(task, stages_pb2.STAGE_OUTCOME_CANCELLED, msg_id=f"{task.task_id}/cancelled")
                await msg.ack()
            else:
                await self._fail(msg, task, transient("STAGE_TIMEOUT", f"{stage} ran past its deadline"), last_try, started)
        except StageError as exc:
            await self._fail(msg, task, exc, last_try, started)
        except Exception as exc:  # noqa: BLE001 - unexpected: retried, and reported
            log.exception("stages.crashed")
            await self._fail(msg, task, transient("STAGE_CRASHED", f"{stage} failed: {exc}"), last_try, started)
        else:
            elapsed = time.monotonic() - started
            await self._publish(
                task, stages_pb2.STAGE_OUTCOME_SUCCEEDED, msg_id=f"{task.task_id}/succeeded", output=output, elapsed=elapsed
            )
            await msg.ack()
            STAGE_SECONDS.labels(stage=stage, outcome="succeeded").observe(elapsed)
            log.info("stages.succeeded", seconds=round(elapsed, 3))
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "task_id", "stage", "delivery")

    async def _run(self, ctx: StageContext, msg, handler: Handler) -> StageOutput:
        """The handler, with heartbeats, the cancel flag and the deadline watched beside it."""
        work = asyncio.create_task(handler(ctx))
        heartbeat = self.consumers[0].ack_wait_s / 3
        limit = ctx.task.time_limit.ToTimedelta()
        deadline = datetime.now(UTC) + limit if limit.total_seconds() > 0 else None
        if ctx.task.HasField("deadline"):
            deadline = min(filter(None, (deadline, ctx.task.deadline.ToDatetime(tzinfo=UTC))))
        next_cancel_check = time.monotonic() + CANCEL_POLL_S
        while True:
            done, _ = await asyncio.wait({work}, timeout=min(heartbeat, CANCEL_POLL_S))
            if done:
                return work.result()
            await msg.in_progress()
            if time.monotonic() >= next_cancel_check:
                next_cancel_check = time.monotonic() + CANCEL_POLL_S
                if await self._cancelled(ctx.job_id) or (deadline and datetime.now(UTC) > deadline):
                    # Model code in threads sees the flag at its next chunk; wait for it to notice.
                    ctx.stop.set()

    async def _cancelled(self, job_id: str) -> bool:
        assert self._cancel_kv is not None, "run() opens the cancel bucket before any task"
        try:
            await self._cancel_kv.get(job_id)
        except KeyNotFoundError:
            return False
        return True

    async def _fail(self, msg, task, exc: StageError, last_try: bool, started: float) -> None:
        elapsed = time.monotonic() - started
        stage = stage_name(task.stage)
        if exc.permanent or last_try:
            reason = exc.reason if exc.permanent else "RETRIES_EXHAUSTED"
            message = exc.message if exc.permanent else f"{exc.message} (gave up after {msg.metadata.num_delivered} attempts)"
            log.warning("stages.failed", reason=reason, error=message)
            await self._publish(
                task,
                stages_pb2.STAGE_OUTCOME_FAILED_PERMANENT,
                msg_id=f"{task.task_id}/failed",
                error=error_status(reason, message, self.domain, exc.code),
                elapsed=elapsed,
            )
            await msg.term()
            STAGE_SECONDS.labels(stage=stage, outcome="failed").observe(elapsed)
            return
        backoff = self.consumers[0].backoff_s
        delay = backoff[min(msg.metadata.num_delivered - 1, len(backoff) - 1)]
        log.warning("stages.retrying", reason=exc.reason, error=exc.message, retry_in_s=delay)
        await self._publish(
            task,
            stages_pb2.STAGE_OUTCOME_FAILED_TRANSIENT,
            error=error_status(exc.reason, exc.message, self.domain, exc.code),
            elapsed=elapsed,
        )
        await msg.nak(delay=delay)

    async def _publish(
        self,
        task: stages_pb2.StageTask,
        outcome: stages_pb2.StageOutcome,
        *,
        msg_id: str | None = None,
        output: StageOutput | None = None,
        error: status_pb2.Status | None = None,
        progress: tuple[int, str] | None = None,
        elapsed: float | None = None,
    ) -> None:
        event = event_of(task, outcome, worker=WORKER_ID)
        event.event_time.GetCurrentTime()
        if output is not None:
            event.outputs.extend(output.outputs)
            if output.result is not None:
                getattr(event, _RESULT_FIELDS[type(output.result)]).CopyFrom(output.result)
        if error is not None:
            event.error.CopyFrom(error)
        if progress is not None:
            event.progress_percent, event.progress_message = progress
        if elapsed is not None:
            event.processing_duration.CopyFrom(duration(elapsed))
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self.js.publish(bus.event_subject(task.job.removeprefix("jobs/")), event.SerializeToString(), headers=headers)


def event_of(task: stages_pb2.StageTask, outcome: stages_pb2.StageOutcome, **fields) -> stages_pb2.StageEvent:
    """An event about `task`: its identity (task, job, stage, attempt, language, segment), `outcome` and `fields`."""
    event = stages_pb2.StageEvent(
        task_id=task.task_id,
        job=task.job,
        stage=task.stage,
        attempt=task.attempt,
        language=task.language,
        outcome=outcome,
        **fields,
    )
    if task.HasField("segment_index"):
        event.segment_index = task.segment_index
    return event


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(round(seconds * 1e9)))
    return value
