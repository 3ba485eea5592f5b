"""The job state machine: what each stage event, cancel and timeout does to a job.

Pure: no gRPC, SQL or NATS. The functions take the stored `Job` message (its
`stages[i]` is node `i` of `pipeline.plan`), change it in place, and return
`Effects`: the tasks to publish and what to tell watchers. The caller (runner.py)
does that work inside one Postgres transaction with the job row locked, the
tasks going to the outbox.

Rules (ARCHITECTURE.md, "Jobs and stages"):
- events of a finished job, of an attempt other than the current one, or of a
  stage already finished are ignored: duplicates and late events change nothing;
- a stage starts when every stage it depends on has succeeded;
- a permanent failure fails the job and stops its other stages;
- a cancelled job stops queued stages at once and waits (boundedly) for running
  ones to report;
- a node that fans out (tts) sends one task per segment and succeeds when every
  segment has: which segments are done is kept in `segments` (node index to a
  bit mask), so a duplicate segment event counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2
from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2

from octavia_runtime.stages import error_status, event_of, stage_name

from . import pipeline
from .pipeline import TERMINAL_STATES, Node

P = jobs_pb2
R = stages_pb2

FINISHED_STAGES = (P.STAGE_STATE_SUCCEEDED, P.STAGE_STATE_FAILED, P.STAGE_STATE_CANCELLED, P.STAGE_STATE_SKIPPED)
IN_FLIGHT = (P.STAGE_STATE_QUEUED, P.STAGE_STATE_RUNNING)
MAX_ATTEMPTS = 2  # a stage that times out is tried once more, then the job fails
DOMAIN = "jobs.octavia"

_LABELS = {
    P.STAGE_PROBE: "Checking the media",
    P.STAGE_EXTRACT_AUDIO: "Extracting audio",
    P.STAGE_TRANSCRIBE: "Transcribing",
    P.STAGE_TRANSLATE: "Translating",
    P.STAGE_RENDER_SUBTITLES: "Writing subtitles",
    P.STAGE_TTS: "Synthesizing speech",
    P.STAGE_MIX: "Mixing the dub",
    P.STAGE_ENCODE: "Encoding the dubbed audio",
    P.STAGE_MUX: "Making the dubbed video",
}
NO_SPEECH_NOTE = "no speech was found, so the dub is the original audio"


@dataclass(frozen=True)
class Settlement:
    """What billing is owed for a job that ended: capture its hold, or release it."""

    job_id: UUID
    hold: str
    capture: bool


@dataclass
class Effects:
    publish: list[stages_pb2.StageTask] = field(default_factory=list)
    state_changed: bool = False  # a job or stage state moved (else only progress, or nothing)
    progressed: bool = False
    cancel_flag: bool = False  # tell running workers to stop
    ignored: str = ""  # why the input changed nothing
    settle: Settlement | None = None  # the job just ended: capture or release its hold

    @property
    def changed(self) -> bool:
        return self.state_changed or self.progressed


def _ts(now: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(now)
    return stamp


def _label(node: Node) -> str:
    label = _LABELS.get(node.stage, stage_name(node.stage))
    return f"{label} ({node.language})" if node.language else label


def settle(job: jobs_pb2.Job, job_id: UUID, hold: str | None) -> Settlement | None:
    """A job that just ended owes its hold: captured if it succeeded, else released.

    The job's credit fields say so at once; billing hears of it right after
    (runner.py delivers the settlement, which billing applies idempotently).
    """
    if not hold:
        return None
    captured = job.state == P.STATE_SUCCEEDED
    job.credits_charged = job.credits_held if captured else 0
    job.credits_held = 0
    return Settlement(job_id, hold, captured)


def start(job: jobs_pb2.Job, nodes: list[Node], now: datetime, frame_rate: float = 0.0) -> Effects:
    """A new job: every stage pending, the first ones queued."""
    del job.stages[:]
    for node in nodes:
        job.stages.add(stage=node.stage, language=node.language or job.source_language, state=P.STAGE_STATE_PENDING)
    job.state = P.STATE_QUEUED
    job.progress.CopyFrom(P.Progress(percent=0, stage=nodes[0].stage, message="Queued", update_time=_ts(now)))
    effects = Effects(state_changed=True)
    _queue_ready(job, nodes, effects, frame_rate, now)
    return effects


def _queue_ready(job: jobs_pb2.Job, nodes: list[Node], effects: Effects, frame_rate: float, now: datetime) -> None:
    """Queue every pending node whose dependencies succeeded. A node that fans out
    over no segment at all (nothing to say) succeeds at once, which may make
    more nodes ready."""
    ready = True
    while ready:
        ready = False
        for index, node in enumerate(nodes):
            status = job.stages[index]
            if status.state != P.STAGE_STATE_PENDING or not all(
                job.stages[dep].state == P.STAGE_STATE_SUCCEEDED for dep in node.after
            ):
                continue
            status.attempt = 1
            effects.state_changed = True
            if node.fans_out and status.total_segments == 0:
                status.state = P.STAGE_STATE_SUCCEEDED
                status.start_time.CopyFrom(_ts(now))
                status.end_time.CopyFrom(_ts(now))
                ready = True
                continue
            status.state = P.STAGE_STATE_QUEUED
            effects.publish.extend(_tasks(job, nodes, index, frame_rate))


def _tasks(job: jobs_pb2.Job, nodes: list[Node], index: int, frame_rate: float, done: int = 0) -> list[stages_pb2.StageTask]:
    """The tasks of node `index` at its current attempt: one, or one per segment not in `done` (a bit mask)."""
    attempt = job.stages[index].attempt
    if not nodes[index].fans_out:
        return [pipeline.build_task(job, nodes, index, attempt, frame_rate)]
    return [
        pipeline.build_task(job, nodes, index, attempt, frame_rate, segment)
        for segment in range(job.stages[index].total_segments)
        if not done >> segment & 1
    ]


def on_event(
    job: jobs_pb2.Job,
    nodes: list[Node],
    event: stages_pb2.StageEvent,
    now: datetime,
    *,
    assets: dict[str, media_pb2.Asset] | None = None,
    deadlines: dict[int, float] | None = None,
    segments: dict[int, int] | None = None,
    frame_rate: float = 0.0,
) -> Effects:
    """Apply a worker's StageEvent. `assets`: the registered user artifacts of its outputs, by key;
    `deadlines` and `segments` are the job's, changed in place."""
    if job.state in TERMINAL_STATES:
        return Effects(ignored="job finished")
    parsed = pipeline.parse_task_id(event.task_id)
    index = pipeline.node_index(nodes, event.stage, parsed[2]) if parsed else None
    if index is None:
        return Effects(ignored="unknown task")
    status, node = job.stages[index], nodes[index]
    if event.attempt != status.attempt:
        return Effects(ignored="old attempt")
    if status.state in FINISHED_STAGES:
        return Effects(ignored="stage finished")
    deadlines = deadlines if deadlines is not None else {}
    segments = segments if segments is not None else {}
    outcome = event.outcome
    effects = Effects()
    # Stage times are the worker's (when it really started or finished), not when the event was applied.
    at = event.event_time.ToDatetime(tzinfo=now.tzinfo) if event.HasField("event_time") else now
    segment = event.segment_index if node.fans_out and event.HasField("segment_index") else None
    if node.fans_out and (segment is None or not 0 <= segment < status.total_segments):
        return Effects(ignored="unknown segment")
    if segment is not None and segments.get(index, 0) >> segment & 1:
        return Effects(ignored="segment finished")

    if outcome in (R.STAGE_OUTCOME_STARTED, R.STAGE_OUTCOME_PROGRESS):
        deadline = now.timestamp() + pipeline.time_limit(job) + TIMEOUT_GRACE_S
        if status.state != P.STAGE_STATE_RUNNING:
            status.state = P.STAGE_STATE_RUNNING
            if not status.HasField("start_time"):
                status.start_time.CopyFrom(_ts(at))
            deadlines[index] = deadline
            effects.state_changed = True
        elif segment is not None and outcome == R.STAGE_OUTCOME_STARTED:
            # Each segment a worker takes gets the time limit again: a fanned-out node is
            # timed out when its workers stop taking segments, not by its total length.
            deadlines[index] = deadline
        if job.state == P.STATE_QUEUED:
            job.state = P.STATE_RUNNING
            job.start_time.CopyFrom(_ts(at))
            effects.state_changed = True
        if segment is not None:
            fraction, message = _segments_progress(status)
        else:
            fraction = event.progress_percent / 100 if outcome == R.STAGE_OUTCOME_PROGRESS else 0.0
            message = event.progress_message if outcome == R.STAGE_OUTCOME_PROGRESS else ""
        _progress(job, nodes, node, fraction, message, now)
        effects.progressed = True
        return effects

    if outcome == R.STAGE_OUTCOME_FAILED_TRANSIENT:
        _progress(job, nodes, node, 0.0, f"retrying: {event.error.message}", now)
        effects.progressed = True
        return effects

    if segment is not None and outcome == R.STAGE_OUTCOME_SUCCEEDED:
        segments[index] = segments.get(index, 0) | 1 << segment
        status.completed_segments += 1
        if status.completed_segments < status.total_segments:
            fraction, message = _segments_progress(status)
            _progress(job, nodes, node, fraction, message, now)
            effects.progressed = True
            return effects
        segments.pop(index, None)  # every segment is done: the node succeeds below

    deadlines.pop(index, None)
    status.end_time.CopyFrom(_ts(at))
    effects.state_changed = True

    if outcome == R.STAGE_OUTCOME_SUCCEEDED:
        status.state = P.STAGE_STATE_SUCCEEDED
        _record_result(job, nodes, event)
        _record_artifacts(job, event, assets or {})
        if job.state == P.STATE_CANCELLING:
            _settle_cancel(job, now)
            return effects
        _queue_ready(job, nodes, effects, frame_rate, now)
        if all(s.state == P.STAGE_STATE_SUCCEEDED for s in job.stages):
            job.state = P.STATE_SUCCEEDED
            job.end_time.CopyFrom(_ts(now))
            done = f"Done: {NO_SPEECH_NOTE}" if _no_speech(job, nodes) else "Done"
            job.progress.CopyFrom(P.Progress(percent=100, stage=node.stage, message=done, update_time=_ts(now)))
        else:
            _progress(job, nodes, node, 0.0, "", now)
        return effects

    if outcome == R.STAGE_OUTCOME_FAILED_PERMANENT:
        status.state = P.STAGE_STATE_FAILED
        status.error.CopyFrom(event.error)
        if job.state == P.STATE_CANCELLING:
            _settle_cancel(job, now)
            return effects
        _fail(job, event.error, node, now)
        effects.cancel_flag = True
        return effects

    if outcome == R.STAGE_OUTCOME_CANCELLED:
        status.state = P.STAGE_STATE_CANCELLED
        if job.state == P.STATE_CANCELLING:
            _settle_cancel(job, now)
        else:
            # A worker saw a cancel flag this job does not have (left from an earlier
            # failure of the same job id cannot happen; be safe): fail rather than hang.
            _fail(
                job,
                error_status("STAGE_CANCELLED", f"{stage_name(node.stage)} stopped unexpectedly", DOMAIN, code_pb2.ABORTED),
                node,
                now,
            )
        return effects

    return Effects(ignored="unknown outcome")


TIMEOUT_GRACE_S = 60.0


def _fail(job: jobs_pb2.Job, error: status_pb2.Status, node: Node, now: datetime) -> None:
    job.state = P.STATE_FAILED
    job.error.CopyFrom(error)
    if not job.error.message.startswith(_label(node)):
        job.error.message = f"{_label(node)}: {error.message}"
    job.end_time.CopyFrom(_ts(now))
    _drop_outputs(job)
    for other in job.stages:
        if other.state in (P.STAGE_STATE_PENDING, *IN_FLIGHT):
            other.state = P.STAGE_STATE_CANCELLED
    job.progress.message = f"Failed: {job.error.message}"
    job.progress.update_time.CopyFrom(_ts(now))


def _drop_outputs(job: jobs_pb2.Job) -> None:
    """A job that failed or was cancelled keeps no files (runner.py deletes them): it lists none."""
    del job.artifacts[:]


def _settle_cancel(job: jobs_pb2.Job, now: datetime) -> None:
    """A cancelling job is cancelled once no stage is running."""
    if not any(s.state == P.STAGE_STATE_RUNNING for s in job.stages):
        job.state = P.STATE_CANCELLED
        job.end_time.CopyFrom(_ts(now))
        _drop_outputs(job)
        job.progress.message = "Cancelled"
        job.progress.update_time.CopyFrom(_ts(now))


def cancel(job: jobs_pb2.Job, now: datetime) -> Effects:
    """The user asked to stop. Queued and pending stages stop now; running ones at their next chunk."""
    if job.state not in (P.STATE_QUEUED, P.STATE_RUNNING):
        return Effects(ignored="not running")
    for status in job.stages:
        if status.state in (P.STAGE_STATE_PENDING, P.STAGE_STATE_QUEUED):
            status.state = P.STAGE_STATE_CANCELLED
    job.state = P.STATE_CANCELLING
    job.progress.message = "Cancelling"
    job.progress.update_time.CopyFrom(_ts(now))
    _settle_cancel(job, now)
    return Effects(state_changed=True, cancel_flag=True)


def expire(
    job: jobs_pb2.Job,
    nodes: list[Node],
    deadlines: dict[int, float],
    now: datetime,
    *,
    cancel_timeout_s: float,
    segments: dict[int, int] | None = None,
    frame_rate: float = 0.0,
) -> Effects:
    """Stages past their time limit (a worker hung or vanished): one more attempt, then the job fails.

    A cancelling job whose running stages do not report within cancel_timeout_s is
    cancelled anyway: a dead worker must not keep it cancelling forever.
    """
    effects = Effects()
    if job.state == P.STATE_CANCELLING:
        if now.timestamp() - job.progress.update_time.ToDatetime().timestamp() > cancel_timeout_s:
            for status in job.stages:
                if status.state == P.STAGE_STATE_RUNNING:
                    status.state = P.STAGE_STATE_CANCELLED
            _settle_cancel(job, now)
            effects.state_changed = True
        return effects
    if job.state in TERMINAL_STATES:
        deadlines.clear()
        return effects
    for index, deadline in list(deadlines.items()):
        if deadline > now.timestamp():
            continue
        status, node = job.stages[index], nodes[index]
        del deadlines[index]
        effects.state_changed = True
        if status.attempt < MAX_ATTEMPTS:
            status.attempt += 1
            status.state = P.STAGE_STATE_QUEUED
            effects.publish.extend(_tasks(job, nodes, index, frame_rate, (segments or {}).get(index, 0)))
            continue
        status.state = P.STAGE_STATE_FAILED
        limit = int(pipeline.time_limit(job))
        error = error_status(
            "STAGE_TIMEOUT",
            f"did not finish within its time limit of {limit} s, {status.attempt} times",
            DOMAIN,
            code_pb2.DEADLINE_EXCEEDED,
        )
        status.error.CopyFrom(error)
        _fail(job, error, node, now)
        effects.cancel_flag = True
        return effects
    return effects


def exhausted(job: jobs_pb2.Job, nodes: list[Node], task: stages_pb2.StageTask, now: datetime) -> Effects:
    """JetStream gave up delivering `task` (its workers kept dying): fail the job, never leave it stuck."""
    event = event_of(
        task,
        R.STAGE_OUTCOME_FAILED_PERMANENT,
        error=error_status(
            "RETRIES_EXHAUSTED", "no worker finished it after every allowed delivery", DOMAIN, code_pb2.UNAVAILABLE
        ),
    )
    return on_event(job, nodes, event, now)


def reject(job: jobs_pb2.Job, nodes: list[Node], event: stages_pb2.StageEvent, why: str, now: datetime) -> Effects:
    """A worker's event that cannot be applied (its outputs refused, say): its stage fails at once,
    saying why, rather than the event being retried until it is dropped and the job times out."""
    failed = stages_pb2.StageEvent(
        task_id=event.task_id, job=event.job, stage=event.stage, attempt=event.attempt, language=event.language,
        outcome=R.STAGE_OUTCOME_FAILED_PERMANENT,
        error=error_status("RESULT_REJECTED", f"its result could not be used: {why}", DOMAIN, code_pb2.INTERNAL),
    )  # fmt: skip
    if event.HasField("segment_index"):
        failed.segment_index = event.segment_index
    return on_event(job, nodes, failed, now)


def _record_result(job: jobs_pb2.Job, nodes: list[Node], event: stages_pb2.StageEvent) -> None:
    result = event.WhichOneof("result")
    if result == "probe":
        job.media_duration.CopyFrom(event.probe.media_info.duration)
    elif result == "transcribe":
        job.detected_language = event.transcribe.detected_language
        for index, node in enumerate(nodes):
            if node.language == pipeline.SOURCE and node.stage == P.STAGE_RENDER_SUBTITLES:
                job.stages[index].language = job.detected_language
    elif result == "translate":
        # The tts node of the language fans out over the translation's segments.
        for index, node in enumerate(nodes):
            if node.fans_out and node.language == event.language:
                job.stages[index].total_segments = event.translate.segment_count


def _no_speech(job: jobs_pb2.Job, nodes: list[Node]) -> bool:
    """A dubbing job whose transcript had no segment: every dub is the original audio."""
    fanned = [status for node, status in zip(nodes, job.stages, strict=True) if node.fans_out]
    return bool(fanned) and all(status.total_segments == 0 for status in fanned)


def _segments_progress(status: jobs_pb2.StageStatus) -> tuple[float, str]:
    done, total = status.completed_segments, status.total_segments
    return (done / total if total else 0.0), f"{done} of {total} segments"


def _record_artifacts(job: jobs_pb2.Job, event: stages_pb2.StageEvent, assets: dict[str, media_pb2.Asset]) -> None:
    known = {artifact.asset for artifact in job.artifacts}
    for output in event.outputs:
        kind = pipeline.ARTIFACT_KINDS.get(output.role)
        asset = assets.get(output.key)
        if kind is None or asset is None or asset.name in known:
            continue
        job.artifacts.add(
            kind=kind,
            language=output.language,
            asset=asset.name,
            filename=asset.filename,
            content_type=asset.content_type,
            size_bytes=asset.size_bytes,
        )


def _progress(job: jobs_pb2.Job, nodes: list[Node], node: Node, fraction: float, message: str, now: datetime) -> None:
    """Overall percent: finished stages' weights plus the running one's share; never decreases."""
    total = sum(n.weight for n in nodes)
    done: float = sum(n.weight for n, s in zip(nodes, job.stages, strict=True) if s.state == P.STAGE_STATE_SUCCEEDED)
    if job.stages[nodes.index(node)].state == P.STAGE_STATE_RUNNING:
        done += node.weight * max(0.0, min(1.0, fraction))
    percent = min(99, int(100 * done / total))
    job.progress.percent = max(job.progress.percent, percent)
    running = [n for n, s in zip(nodes, job.stages, strict=True) if s.state == P.STAGE_STATE_RUNNING]
    current = node if node in running or not running else running[-1]
    job.progress.stage = current.stage
    job.progress.message = f"{_label(current)}: {message}" if message else _label(current)
    job.progress.update_time.CopyFrom(_ts(now))
