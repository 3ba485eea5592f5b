"""How stored jobs look to clients: the Job message and the JobEvents of WatchJob."""

from __future__ import annotations

from datetime import UTC, datetime

from octavia.jobs.v1 import jobs_pb2

from octavia_runtime.resources import timestamp

from .pipeline import TERMINAL_STATES
from .store import JobRow


def job_message(row: JobRow) -> jobs_pb2.Job:
    job = jobs_pb2.Job.FromString(row.spec)
    job.name = f"jobs/{row.id}"
    job.owner = f"users/{row.owner_id}"
    job.state = row.state
    job.create_time.CopyFrom(timestamp(row.created_at))
    job.update_time.CopyFrom(timestamp(row.updated_at))
    return job


def job_event(row: JobRow, kind: jobs_pb2.JobEventType) -> jobs_pb2.JobEvent:
    """The event announcing `row` as it is now: a snapshot, a state change or progress."""
    job = job_message(row)
    final = job.state in TERMINAL_STATES
    event = jobs_pb2.JobEvent(
        job_name=job.name, type=kind, state=job.state, progress=job.progress, final=final, sequence=row.event_seq
    )
    if kind != jobs_pb2.JOB_EVENT_TYPE_PROGRESS or final:
        event.job.CopyFrom(job)
    if job.state == jobs_pb2.STATE_FAILED:
        event.error.CopyFrom(job.error)
    event.event_time.GetCurrentTime()
    return event


def now() -> datetime:
    return datetime.now(UTC)
