"""NATS JetStream: the streams, subjects and consumers of the job pipeline.

Defined once here and declared idempotently by every service that uses them,
so start-up order does not matter:

- OCTAVIA_TASKS (work queue): `octavia.tasks.<stage>.<priority>`, one message
  per unit of stage work (a `octavia.jobs.v1.StageTask`). The service that
  owns a stage consumes it through three durable pull consumers,
  `<service>-worker-high`, `-default` and `-low`.
- OCTAVIA_EVENTS (limits, kept 7 days): `octavia.events.<job id>`, stage
  results and progress (`octavia.jobs.v1.StageEvent`), consumed by the jobs
  orchestrator and read by WatchJob.

Both streams drop a message whose `Nats-Msg-Id` was seen within the duplicate
window, which is what makes the outbox relay's re-publishes harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = structlog.get_logger("bus")

TASKS_STREAM = "OCTAVIA_TASKS"
EVENTS_STREAM = "OCTAVIA_EVENTS"
DUPLICATE_WINDOW_S = 120.0
DAY_S = 86400.0

# Which service's workers run each stage (names match octavia.jobs.v1.Stage without the prefix).
STAGE_OWNERS: dict[str, str] = {
    "probe": "media",
    "extract_audio": "media",
    "transcribe": "transcribe",
    "translate": "translate",
    "tts": "tts",
    "mix": "media",
    "encode": "media",
    "mux": "media",
    "burn_subtitles": "media",
    "render_subtitles": "media",
}

STREAMS = (
    StreamConfig(
        name=TASKS_STREAM,
        subjects=["octavia.tasks.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=7 * DAY_S,
        duplicate_window=DUPLICATE_WINDOW_S,
    ),
    StreamConfig(
        name=EVENTS_STREAM,
        subjects=["octavia.events.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * DAY_S,
        duplicate_window=DUPLICATE_WINDOW_S,
    ),
)


PRIORITIES = ("high", "default", "low")


def task_subject(stage: str, priority: str) -> str:
    return f"octavia.tasks.{stage}.{priority}"


def event_subject(job_id: str) -> str:
    return f"octavia.events.{job_id}"


def job_event_subject(job_id: str) -> str:
    """Core NATS (not stored): JobEvents for WatchJob, published after each committed change."""
    return f"octavia.jobevents.{job_id}"


# Key-value bucket of cancel flags: key <job id> present while the job is being cancelled.
CANCEL_BUCKET = "octavia_cancel"
CANCEL_TTL_S = DAY_S


def max_deliveries_advisories(stream: str) -> str:
    """Where JetStream announces a message of any consumer of `stream` that ran out of deliveries."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"


@dataclass(frozen=True)
class Consumer:
    """A durable pull consumer: its stream, name and delivery rules."""

    stream: str
    durable: str
    subjects: tuple[str, ...]
    # Long stages keep their message with in_progress() every third of ack_wait, so a short
    # ack_wait only decides how soon the task of a killed worker goes to another one.
    ack_wait_s: float = 15.0
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (2.0, 10.0, 30.0, 60.0)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            backoff=list(self.backoff_s[: self.max_deliver - 1]) or None,
            filter_subjects=list(self.subjects),
        )


def stages_of(service: str) -> tuple[str, ...]:
    return tuple(sorted(stage for stage, owner in STAGE_OWNERS.items() if owner == service))


def stage_workers(service: str) -> tuple[Consumer, ...]:
    """The consumers through which `service` receives the stage tasks it owns: one per priority, highest first.

    Separate consumers let a worker look for high-priority work before the rest
    (octavia_runtime/stages.py); a work-queue stream needs their subjects apart.
    """
    return tuple(
        Consumer(
            stream=TASKS_STREAM,
            durable=f"{service}-worker-{priority}",
            subjects=tuple(task_subject(stage, priority) for stage in stages_of(service)),
        )
        for priority in PRIORITIES
    )


ORCHESTRATOR = Consumer(
    stream=EVENTS_STREAM, durable="jobs-orchestrator", subjects=("octavia.events.>",), ack_wait_s=30.0, max_deliver=10
)


async def connect(url: str, name: str) -> nats.NATS:
    return await nats.connect(
        url, name=f"octavia-{name}", connect_timeout=3, max_reconnect_attempts=-1, reconnect_time_wait=1, allow_reconnect=True
    )


async def _drop_legacy_worker(js: JetStreamContext, name: str) -> None:
    """Before priorities, each service had one consumer `<service>-worker` over all of its
    subjects; a work-queue stream refuses the per-priority ones beside it. Unacked tasks
    stay in the stream and go to the new consumers."""
    try:
        await js.delete_consumer(TASKS_STREAM, name)
    except NotFoundError:
        return
    log.info("bus.legacy_consumer_deleted", stream=TASKS_STREAM, consumer=name)


async def declare(js: JetStreamContext, consumers: tuple[Consumer, ...] = ()) -> None:
    """Create or update the streams and create the consumers; safe to run on every start."""
    for wanted in STREAMS:
        assert wanted.name, "every stream of STREAMS is named"
        try:
            await js.stream_info(wanted.name)
        except NotFoundError:
            await js.add_stream(wanted)
            log.info("bus.stream_created", stream=wanted.name)
        else:
            await js.update_stream(wanted)
    for consumer in consumers:
        if consumer.stream == TASKS_STREAM and consumer.durable.endswith(f"-{PRIORITIES[0]}"):
            await _drop_legacy_worker(js, consumer.durable.removesuffix(f"-{PRIORITIES[0]}"))
        await js.add_consumer(consumer.stream, consumer.config())
        log.info("bus.consumer_ready", stream=consumer.stream, consumer=consumer.durable)
    await js.create_key_value(KeyValueConfig(bucket=CANCEL_BUCKET, ttl=CANCEL_TTL_S, storage=StorageType.FILE))
