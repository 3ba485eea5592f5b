"""The job state machine, without any server: what events, cancels and timeouts do to a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from octavia.jobs.v1 import jobs_pb2 as P
from octavia.jobs.v1 import stages_pb2 as R
from octavia.media.v1 import media_pb2

from octavia_runtime.stages import event_of
from services.jobs import orchestrator, pipeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_job(kind=P.JOB_KIND_SUBTITLES, targets=("pt", "es")):
    job = P.Job(
        name="jobs/j1", owner="users/u1", kind=kind, input_asset="assets/a1", display_name="talk.mp4",
        target_languages=list(targets),
    )
    nodes = pipeline.plan(kind, list(targets))
    effects = orchestrator.start(job, nodes, T0)
    return job, nodes, effects


event = event_of  # what a worker reports about a task


def succeed(job, nodes, task, now=T0, **fields):
    outputs = list(task.outputs)
    return orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED, outputs=outputs, **fields), now)


def run_to_end(job, nodes, effects):
    """Succeed every task as it is queued; returns every task published."""
    queue, published = list(effects.publish), []
    while queue:
        task = queue.pop(0)
        published.append(task)
        orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_STARTED), T0)
        extra = {}
        if task.stage == P.STAGE_TRANSCRIBE:
            extra["transcribe"] = R.TranscribeResult(detected_language="en", segment_count=3)
        queue.extend(succeed(job, nodes, task, **extra).publish)
    return published


def test_a_new_job_is_queued_with_only_its_probe_task_published():
    job, nodes, effects = new_job()
    assert job.state == P.STATE_QUEUED
    assert [t.stage for t in effects.publish] == [P.STAGE_PROBE]
    assert effects.publish[0].task_id == "j1/probe/_/_/1"
    assert [s.state for s in job.stages] == [P.STAGE_STATE_QUEUED] + [P.STAGE_STATE_PENDING] * (len(nodes) - 1)


def test_subtitles_in_two_languages_run_every_stage_once_and_succeed():
    job, nodes, effects = new_job()
    published = run_to_end(job, nodes, effects)
    assert job.state == P.STATE_SUCCEEDED
    assert job.progress.percent == 100
    assert job.detected_language == "en"
    stages = [(pipeline.stage_name(t.stage), t.language) for t in published]
    assert stages == [
        ("probe", ""), ("extract_audio", ""), ("transcribe", ""),
        ("render_subtitles", "en"), ("translate", "pt"), ("translate", "es"),
        ("render_subtitles", "pt"), ("render_subtitles", "es"),
    ]
    # The source subtitles are rendered in the detected language and read the transcript.
    source_render = published[3]
    assert source_render.inputs[0].role == R.ARTIFACT_ROLE_TRANSCRIPT
    assert {o.role for o in source_render.outputs} == {
        R.ARTIFACT_ROLE_SUBTITLES_SRT, R.ARTIFACT_ROLE_SUBTITLES_VTT, R.ARTIFACT_ROLE_TRANSCRIPT_JSON,
    }
    assert len({t.task_id for t in published}) == len(published)


def test_duplicate_and_late_events_change_nothing():
    job, nodes, effects = new_job(P.JOB_KIND_TRANSCRIPTION, ())
    probe = effects.publish[0]
    first = succeed(job, nodes, probe)
    assert [t.stage for t in first.publish] == [P.STAGE_EXTRACT_AUDIO]
    before = job.SerializeToString()
    again = succeed(job, nodes, probe)
    assert again.ignored == "stage finished" and not again.publish
    late_progress = orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_PROGRESS, progress_percent=50), T0)
    assert late_progress.ignored
    assert job.SerializeToString() == before


def test_an_event_of_an_older_attempt_is_ignored():
    job, nodes, effects = new_job(P.JOB_KIND_TRANSCRIPTION, ())
    probe = effects.publish[0]
    job.stages[0].attempt = 2
    assert orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_SUCCEEDED), T0).ignored == "old attempt"


def test_a_permanent_failure_fails_the_job_with_the_reason_and_stops_the_rest():
    job, nodes, effects = new_job()
    probe = effects.publish[0]
    job.artifacts.add(kind=P.ARTIFACT_KIND_SUBTITLES_SRT, asset="assets/partial")
    error = orchestrator.error_status("NOT_MEDIA", "the file is not audio or video", "media.octavia", 9)
    result = orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_FAILED_PERMANENT, error=error), T0)
    assert job.state == P.STATE_FAILED
    assert result.cancel_flag and not result.publish
    assert "the file is not audio or video" in job.error.message
    assert job.stages[0].state == P.STAGE_STATE_FAILED
    assert all(s.state == P.STAGE_STATE_CANCELLED for s in job.stages[1:])
    assert not job.artifacts, "a failed job's files are deleted, so it lists none"
    # Anything arriving afterwards is ignored.
    assert succeed(job, nodes, probe).ignored == "job finished"


def test_a_transient_failure_keeps_the_job_running():
    job, nodes, effects = new_job()
    probe = effects.publish[0]
    error = orchestrator.error_status("BLOB_UNAVAILABLE", "media is restarting", "media.octavia", 14)
    orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_FAILED_TRANSIENT, error=error), T0)
    assert job.state == P.STATE_QUEUED
    assert "retrying" in job.progress.message


def test_cancel_waits_for_the_running_stage_then_ends_cancelled():
    job, nodes, effects = new_job()
    probe = effects.publish[0]
    orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_STARTED), T0)
    cancelled = orchestrator.cancel(job, T0)
    assert cancelled.cancel_flag
    assert job.state == P.STATE_CANCELLING
    assert all(s.state == P.STAGE_STATE_CANCELLED for s in job.stages[1:])
    orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_CANCELLED), T0)
    assert job.state == P.STATE_CANCELLED


def test_cancel_of_a_queued_job_is_immediate_and_a_second_cancel_changes_nothing():
    job, nodes, _ = new_job()
    orchestrator.cancel(job, T0)
    assert job.state == P.STATE_CANCELLED
    assert orchestrator.cancel(job, T0).ignored


def test_a_cancelling_job_whose_worker_vanished_ends_cancelled_after_the_timeout():
    job, nodes, effects = new_job()
    orchestrator.on_event(job, nodes, event(effects.publish[0], R.STAGE_OUTCOME_STARTED), T0)
    orchestrator.cancel(job, T0)
    orchestrator.expire(job, nodes, {}, T0 + timedelta(seconds=5), cancel_timeout_s=30)
    assert job.state == P.STATE_CANCELLING
    orchestrator.expire(job, nodes, {}, T0 + timedelta(seconds=31), cancel_timeout_s=30)
    assert job.state == P.STATE_CANCELLED


def test_a_stage_past_its_deadline_is_tried_again_then_fails_the_job():
    job, nodes, effects = new_job()
    deadlines: dict[int, float] = {}
    probe = effects.publish[0]
    orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_STARTED), T0, deadlines=deadlines)
    assert 0 in deadlines
    late = T0 + timedelta(seconds=pipeline.DEFAULT_TIME_LIMIT_S + orchestrator.TIMEOUT_GRACE_S + 1)
    retry = orchestrator.expire(job, nodes, deadlines, late, cancel_timeout_s=30)
    assert [t.task_id for t in retry.publish] == ["j1/probe/_/_/2"]
    # The first attempt's late success no longer counts.
    assert succeed(job, nodes, probe).ignored == "old attempt"
    orchestrator.on_event(job, nodes, event(retry.publish[0], R.STAGE_OUTCOME_STARTED), late, deadlines=deadlines)
    later = late + timedelta(seconds=pipeline.DEFAULT_TIME_LIMIT_S + orchestrator.TIMEOUT_GRACE_S + 1)
    failed = orchestrator.expire(job, nodes, deadlines, later, cancel_timeout_s=30)
    assert job.state == P.STATE_FAILED and failed.cancel_flag
    assert job.stages[0].error.message.startswith("did not finish within")


def test_a_task_out_of_deliveries_fails_the_job():
    job, nodes, effects = new_job()
    orchestrator.exhausted(job, nodes, effects.publish[0], T0)
    assert job.state == P.STATE_FAILED
    assert "no worker finished it" in job.error.message


def test_progress_only_moves_forward():
    job, nodes, effects = new_job(P.JOB_KIND_TRANSCRIPTION, ())
    probe = effects.publish[0]
    extract = succeed(job, nodes, probe).publish[0]
    transcribe = succeed(job, nodes, extract).publish[0]
    seen = []
    for percent in (10, 60, 30, 90):
        orchestrator.on_event(job, nodes, event(transcribe, R.STAGE_OUTCOME_PROGRESS, progress_percent=percent), T0)
        seen.append(job.progress.percent)
    assert seen == sorted(seen) and seen[-1] > seen[0]
    assert job.progress.stage == P.STAGE_TRANSCRIBE
    assert job.state == P.STATE_RUNNING


def test_user_artifacts_are_recorded_once_with_the_registered_asset():
    job, nodes, effects = new_job(P.JOB_KIND_TRANSCRIPTION, ())
    task = effects.publish[0]
    for _ in range(2):
        task = succeed(job, nodes, task, **({"transcribe": R.TranscribeResult(detected_language="en")} if task.stage == P.STAGE_TRANSCRIBE else {})).publish[0]
    task = succeed(job, nodes, task, transcribe=R.TranscribeResult(detected_language="en")).publish[0]
    assert task.stage == P.STAGE_RENDER_SUBTITLES and task.language == "en"
    assets = {
        o.key: media_pb2.Asset(name=f"assets/{i}", filename=pipeline.artifact_filename(job, o), content_type=o.content_type, size_bytes=10)
        for i, o in enumerate(task.outputs)
    }
    outputs = R.StageEvent(task_id=task.task_id, job=task.job, stage=task.stage, attempt=1, outcome=R.STAGE_OUTCOME_SUCCEEDED, outputs=task.outputs)
    orchestrator.on_event(job, nodes, outputs, T0, assets=assets)
    assert job.state == P.STATE_SUCCEEDED
    assert sorted(a.filename for a in job.artifacts) == ["talk.en.json", "talk.en.srt", "talk.en.vtt"]
    assert {a.kind for a in job.artifacts} == {
        P.ARTIFACT_KIND_SUBTITLES_SRT, P.ARTIFACT_KIND_SUBTITLES_VTT, P.ARTIFACT_KIND_TRANSCRIPT_JSON,
    }


def test_output_keys_are_deterministic_per_job_stage_and_language():
    job, nodes, _ = new_job()
    first = pipeline.build_task(job, nodes, 5, 1)
    again = pipeline.build_task(job, nodes, 5, 3)
    assert [o.key for o in first.outputs] == [o.key for o in again.outputs]
    assert first.outputs[0].key == "jobs/j1/render_subtitles/pt/subtitles.srt"
    assert first.task_id == "j1/render_subtitles/pt/_/1" and again.task_id.endswith("/3")


def test_a_job_that_ends_owes_its_hold_captured_on_success_and_released_otherwise():
    from uuid import uuid4

    job_id = uuid4()
    succeeded, nodes, effects = new_job()
    succeeded.credits_held = 12
    run_to_end(succeeded, nodes, effects)
    owed = orchestrator.settle(succeeded, job_id, "holds/h1")
    assert (owed.hold, owed.capture) == ("holds/h1", True)
    assert (succeeded.credits_held, succeeded.credits_charged) == (0, 12)

    cancelled, _, _ = new_job()
    cancelled.credits_held = 12
    orchestrator.cancel(cancelled, T0)
    owed = orchestrator.settle(cancelled, job_id, "holds/h2")
    assert owed.capture is False
    assert (cancelled.credits_held, cancelled.credits_charged) == (0, 0)

    assert orchestrator.settle(succeeded, job_id, None) is None, "a job from before billing owes nothing"


def test_the_statement_line_says_what_the_job_was():
    from google.protobuf import duration_pb2

    from services.jobs.credits import description, usage

    job = P.Job(kind=P.JOB_KIND_SUBTITLES, target_languages=["pt", "es"], media_duration=duration_pb2.Duration(seconds=185))
    assert description(job) == "Subtitles, 3 min 5 s, 2 languages: pt, es"
    assert usage(job).target_language_count == 2 and usage(job).duration.seconds == 185
    short = P.Job(kind=P.JOB_KIND_TRANSCRIPTION, media_duration=duration_pb2.Duration(seconds=9, nanos=600_000_000))
    assert description(short) == "Transcription, 10 s"


def test_an_event_carries_its_tasks_identity_segment_included():
    task = R.StageTask(task_id="j1/tts/pt/3/1", job="jobs/j1", stage=P.STAGE_TTS, attempt=1, language="pt", segment_index=3)
    reported = event_of(task, R.STAGE_OUTCOME_SUCCEEDED)
    assert (reported.task_id, reported.stage, reported.language, reported.segment_index) == (task.task_id, P.STAGE_TTS, "pt", 3)
    assert not event_of(R.StageTask(task_id="j1/probe/_/_/1"), R.STAGE_OUTCOME_STARTED).HasField("segment_index")
