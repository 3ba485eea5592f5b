"""The stage worker against the stack's real NATS: priorities, and what happens to a task that fails."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.js.api import RetentionPolicy, StreamConfig
from octavia.jobs.v1 import jobs_pb2, stages_pb2

from octavia_runtime import bus
from octavia_runtime.stages import StageOutput, StageWorker, permanent

pytestmark = pytest.mark.integration


@pytest.fixture
async def lane(stack):
    """A private work-queue stream with one consumer per priority, shaped like OCTAVIA_TASKS."""
    nc = await bus.connect(stack.nats_url, "test-stage-worker")
    js = nc.jetstream()
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    prefix = f"test.{name.lower()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"], retention=RetentionPolicy.WORK_QUEUE))
    consumers = tuple(
        bus.Consumer(
            stream=name, durable=f"w-{p}", subjects=(f"{prefix}.probe.{p}",), ack_wait_s=3.0, max_deliver=2, backoff_s=(0.2,)
        )
        for p in bus.PRIORITIES
    )
    await bus.declare(js, consumers)
    yield nc, js, consumers, prefix
    await js.delete_stream(name)
    await nc.close()


def task(job_id: str, priority: str) -> stages_pb2.StageTask:
    return stages_pb2.StageTask(
        task_id=f"{job_id}/probe/_/_/1", job=f"jobs/{job_id}", stage=jobs_pb2.STAGE_PROBE, attempt=1, request_id=priority
    )


async def events_of(js, job_id: str, count: int) -> list[stages_pb2.StageEvent]:
    sub = await js.subscribe(bus.event_subject(job_id), ordered_consumer=True)
    events = []
    try:
        while len(events) < count:
            events.append(stages_pb2.StageEvent.FromString((await sub.next_msg(timeout=10)).data))
    finally:
        await sub.unsubscribe()
    return events


async def test_a_free_worker_takes_high_priority_work_before_older_default_and_low_work(lane):
    nc, js, consumers, prefix = lane
    order = ["low", "default", "default", "high"]  # published oldest first
    for i, priority in enumerate(order):
        await js.publish(f"{prefix}.probe.{priority}", task(f"{uuid.uuid4()}", f"{priority}-{i}").SerializeToString())
    taken: list[str] = []
    done = asyncio.Event()

    async def probe(ctx):
        taken.append(ctx.task.request_id)
        if len(taken) == len(order):
            done.set()
        return StageOutput()

    worker = StageWorker(nc, js, consumers, {jobs_pb2.STAGE_PROBE: probe}, domain="test.octavia")
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(done.wait(), 15)
    finally:
        running.cancel()
    assert taken == ["high-3", "default-1", "default-2", "low-0"]


async def test_a_permanent_failure_is_reported_once_and_not_retried(lane):
    nc, js, consumers, prefix = lane
    job_id = str(uuid.uuid4())
    attempts = []

    async def probe(ctx):
        attempts.append(ctx.task.task_id)
        raise permanent("NOT_MEDIA", "the input is not audio or video")

    worker = StageWorker(nc, js, consumers, {jobs_pb2.STAGE_PROBE: probe}, domain="test.octavia")
    running = asyncio.create_task(worker.run())
    try:
        await js.publish(f"{prefix}.probe.default", task(job_id, "default").SerializeToString())
        started, failed = await events_of(js, job_id, 2)
        await asyncio.sleep(1)  # longer than the backoff: a retry would have happened
    finally:
        running.cancel()
    assert started.outcome == stages_pb2.STAGE_OUTCOME_STARTED
    assert failed.outcome == stages_pb2.STAGE_OUTCOME_FAILED_PERMANENT
    assert len(attempts) == 1


async def test_a_task_that_keeps_crashing_ends_as_retries_exhausted(lane):
    nc, js, consumers, prefix = lane
    job_id = str(uuid.uuid4())

    async def probe(ctx):
        raise RuntimeError("disk full")

    worker = StageWorker(nc, js, consumers, {jobs_pb2.STAGE_PROBE: probe}, domain="test.octavia")
    running = asyncio.create_task(worker.run())
    try:
        await js.publish(f"{prefix}.probe.default", task(job_id, "default").SerializeToString())
        events = await events_of(js, job_id, 4)  # started, transient, started, permanent (max_deliver 2)
    finally:
        running.cancel()
    outcomes = [e.outcome for e in events]
    assert outcomes == [
        stages_pb2.STAGE_OUTCOME_STARTED,
        stages_pb2.STAGE_OUTCOME_FAILED_TRANSIENT,
        stages_pb2.STAGE_OUTCOME_STARTED,
        stages_pb2.STAGE_OUTCOME_FAILED_PERMANENT,
    ]
    assert "disk full" in events[1].error.message
    assert "gave up after 2 attempts" in events[3].error.message
