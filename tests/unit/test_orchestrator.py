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
        name="jobs/j1",
        owner="users/u1",
        kind=kind,
        input_asset="assets/a1",
        display_name="talk.mp4",
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
        ("probe", ""),
        ("extract_audio", ""),
        ("transcribe", ""),
        ("render_subtitles", "en"),
        ("translate", "pt"),
        ("translate", "es"),
        ("render_subtitles", "pt"),
        ("render_subtitles", "es"),
    ]
    # The source subtitles are rendered in the detected language and read the transcript.
    source_render = published[3]
    assert source_render.inputs[0].role == R.ARTIFACT_ROLE_TRANSCRIPT
    assert {o.role for o in source_render.outputs} == {
        R.ARTIFACT_ROLE_SUBTITLES_SRT,
        R.ARTIFACT_ROLE_SUBTITLES_VTT,
        R.ARTIFACT_ROLE_TRANSCRIPT_JSON,
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


def test_an_event_whose_result_cannot_be_used_fails_its_stage_at_once_saying_why():
    job, nodes, effects = new_job()
    probe = effects.publish[0]
    orchestrator.on_event(job, nodes, event(probe, R.STAGE_OUTCOME_STARTED), T0)
    done = event(probe, R.STAGE_OUTCOME_SUCCEEDED, outputs=list(probe.outputs))
    rejected = orchestrator.reject(job, nodes, done, "INVALID_ARGUMENT: filename: must not contain control characters", T0)
    assert job.state == P.STATE_FAILED and rejected.cancel_flag and not rejected.publish
    assert job.stages[0].state == P.STAGE_STATE_FAILED
    assert "could not be used: INVALID_ARGUMENT: filename" in job.error.message
    assert orchestrator.on_event(job, nodes, done, T0).ignored == "job finished"  # a redelivery changes nothing


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
        task = succeed(
            job,
            nodes,
            task,
            **({"transcribe": R.TranscribeResult(detected_language="en")} if task.stage == P.STAGE_TRANSCRIBE else {}),
        ).publish[0]
    task = succeed(job, nodes, task, transcribe=R.TranscribeResult(detected_language="en")).publish[0]
    assert task.stage == P.STAGE_RENDER_SUBTITLES and task.language == "en"
    assets = {
        o.key: media_pb2.Asset(
            name=f"assets/{i}", filename=pipeline.artifact_filename(job, o), content_type=o.content_type, size_bytes=10
        )
        for i, o in enumerate(task.outputs)
    }
    outputs = R.StageEvent(
        task_id=task.task_id, job=task.job, stage=task.stage, attempt=1, outcome=R.STAGE_OUTCOME_SUCCEEDED, outputs=task.outputs
    )
    orchestrator.on_event(job, nodes, outputs, T0, assets=assets)
    assert job.state == P.STATE_SUCCEEDED
    assert sorted(a.filename for a in job.artifacts) == ["talk.en.json", "talk.en.srt", "talk.en.vtt"]
    assert {a.kind for a in job.artifacts} == {
        P.ARTIFACT_KIND_SUBTITLES_SRT,
        P.ARTIFACT_KIND_SUBTITLES_VTT,
        P.ARTIFACT_KIND_TRANSCRIPT_JSON,
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


# --- Dubbing: the tts stage fans out per segment --------------------------------


def dub_job(targets=("pt", "es"), kind=P.JOB_KIND_VIDEO_DUBBING, **options):
    job, nodes, effects = new_job(kind, targets)
    job.dubbing_options.CopyFrom(P.DubbingOptions(voices={t: f"voices/v-{t}" for t in targets}, **options))
    return job, nodes, effects


def run_until_tts(job, nodes, effects, segments=3, segments_done=None):
    """Succeed every task up to the tts ones, which are returned (translate reports `segments` segments)."""
    queue, tts = list(effects.publish), []
    while queue:
        task = queue.pop(0)
        if task.stage == P.STAGE_TTS:
            tts.append(task)
            continue
        extra = {}
        if task.stage == P.STAGE_TRANSCRIBE:
            extra["transcribe"] = R.TranscribeResult(detected_language="en", segment_count=segments)
        if task.stage == P.STAGE_TRANSLATE:
            extra["translate"] = R.TranslateResult(segment_count=segments)
        orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_STARTED), T0, segments=segments_done)
        queue.extend(orchestrator.on_event(
            job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED, outputs=list(task.outputs), **extra), T0, segments=segments_done
        ).publish)  # fmt: skip
    return tts


def test_a_video_dub_plans_every_stage_per_language():
    _, nodes, _ = dub_job(("pt",))
    assert [(pipeline.stage_name(n.stage), n.language) for n in nodes] == [
        ("probe", ""), ("extract_audio", ""), ("transcribe", ""), ("render_subtitles", ""),
        ("translate", "pt"), ("render_subtitles", "pt"), ("tts", "pt"), ("mix", "pt"), ("encode", "pt"), ("mux", "pt"),
    ]  # fmt: skip
    audio_nodes = pipeline.plan(P.JOB_KIND_AUDIO_TRANSLATION, ["pt"])
    assert P.STAGE_MUX not in {n.stage for n in audio_nodes} and P.STAGE_ENCODE in {n.stage for n in audio_nodes}


def test_the_tts_stage_sends_one_task_per_segment_and_the_mix_waits_for_all_of_them():
    job, nodes, effects = dub_job(("pt",))
    done: dict[int, int] = {}
    tts = run_until_tts(job, nodes, effects, segments=3, segments_done=done)
    assert [t.task_id for t in tts] == ["j1/tts/pt/0/1", "j1/tts/pt/1/1", "j1/tts/pt/2/1"]
    assert [t.segment_index for t in tts] == [0, 1, 2]
    assert [t.outputs[0].key for t in tts] == [f"jobs/j1/tts/pt/speech_segment.0000{i}.pb" for i in range(3)]
    assert all(t.tts.voice == "voices/v-pt" and t.inputs[0].role == R.ARTIFACT_ROLE_TRANSLATION for t in tts)
    index = nodes.index(next(n for n in nodes if n.stage == P.STAGE_TTS))
    status = job.stages[index]
    assert (status.total_segments, status.completed_segments) == (3, 0)

    orchestrator.on_event(job, nodes, event(tts[1], R.STAGE_OUTCOME_STARTED), T0, segments=done)
    first = orchestrator.on_event(job, nodes, event(tts[1], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done)
    assert first.publish == [] and status.completed_segments == 1 and status.state == P.STAGE_STATE_RUNNING
    assert job.progress.message == "Synthesizing speech (pt): 1 of 3 segments"
    # The same segment again (a redelivery, a replayed event) counts once.
    again = orchestrator.on_event(job, nodes, event(tts[1], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done)
    assert again.ignored == "segment finished" and status.completed_segments == 1
    orchestrator.on_event(job, nodes, event(tts[0], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done)
    last = orchestrator.on_event(job, nodes, event(tts[2], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done)
    assert status.state == P.STAGE_STATE_SUCCEEDED and status.completed_segments == 3
    assert done == {}  # the finished node's mask is dropped
    (mix,) = last.publish
    assert mix.stage == P.STAGE_MIX and mix.mix.segment_count == 3
    speech_inputs = [ref.key for ref in mix.inputs if ref.role == R.ARTIFACT_ROLE_SPEECH_SEGMENT]
    assert speech_inputs == [t.outputs[0].key for t in tts]
    assert (mix.mix.max_speed_factor, mix.mix.hard_speed_cap) == (1.3, 1.5)
    assert mix.mix.fit_policy == P.FIT_POLICY_KEEP_TIMING and mix.mix.ducking_level == P.DUCKING_LEVEL_MEDIUM


def test_a_dub_in_two_languages_succeeds_with_its_audio_video_and_report_artifacts():
    job, nodes, effects = dub_job(("pt", "es"), keep_original_audio=True, soft_subtitles=True)
    done: dict[int, int] = {}
    tts = run_until_tts(job, nodes, effects, segments=2, segments_done=done)
    assert sorted(t.task_id for t in tts) == sorted(f"j1/tts/{lang}/{i}/1" for lang in ("pt", "es") for i in range(2))
    queue = []
    for task in tts:
        queue.extend(orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done).publish)
    published = []
    while queue:
        task = queue.pop(0)
        published.append(task)
        queue.extend(orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done).publish)
    assert sorted((pipeline.stage_name(t.stage), t.language) for t in published) == [
        ("encode", "es"),
        ("encode", "pt"),
        ("mix", "es"),
        ("mix", "pt"),
        ("mux", "es"),
        ("mux", "pt"),
    ]
    mux = next(t for t in published if t.stage == P.STAGE_MUX)
    assert mux.mux.keep_original_audio and mux.mux.soft_subtitles and mux.mux.source_language == "en"
    assert mux.outputs[0].key.endswith("/mux/" + mux.language + "/dub.mp4")
    encode = next(t for t in published if t.stage == P.STAGE_ENCODE)
    assert encode.outputs[0].key.endswith("dub.m4a") and encode.outputs[0].content_type == "audio/mp4"
    assert job.state == P.STATE_SUCCEEDED and job.progress.message == "Done"


def test_a_dub_of_no_speech_skips_the_tts_stage_and_says_so():
    job, nodes, effects = dub_job(("pt",))
    assert run_until_tts(job, nodes, effects, segments=0) == []  # mix ran straight after translate
    tts = job.stages[nodes.index(next(n for n in nodes if n.stage == P.STAGE_TTS))]
    assert tts.state == P.STAGE_STATE_SUCCEEDED and tts.total_segments == 0
    assert job.state == P.STATE_SUCCEEDED
    assert job.progress.message == f"Done: {orchestrator.NO_SPEECH_NOTE}"


def test_a_timed_out_tts_stage_is_tried_again_only_for_the_segments_not_done():
    job, nodes, effects = dub_job(("pt",))
    done: dict[int, int] = {}
    tts = run_until_tts(job, nodes, effects, segments=4, segments_done=done)
    deadlines: dict[int, float] = {}
    for task in tts:
        orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_STARTED), T0, deadlines=deadlines, segments=done)
    orchestrator.on_event(job, nodes, event(tts[0], R.STAGE_OUTCOME_SUCCEEDED), T0, deadlines=deadlines, segments=done)
    orchestrator.on_event(job, nodes, event(tts[2], R.STAGE_OUTCOME_SUCCEEDED), T0, deadlines=deadlines, segments=done)
    later = T0 + timedelta(seconds=pipeline.DEFAULT_TIME_LIMIT_S + orchestrator.TIMEOUT_GRACE_S + 1)
    retry = orchestrator.expire(job, nodes, deadlines, later, cancel_timeout_s=30, segments=done)
    assert [t.task_id for t in retry.publish] == ["j1/tts/pt/1/2", "j1/tts/pt/3/2"]
    # The first attempt's late answer for segment 1 is ignored; the second attempt's counts.
    assert (
        orchestrator.on_event(job, nodes, event(tts[1], R.STAGE_OUTCOME_SUCCEEDED), later, segments=done).ignored == "old attempt"
    )
    for task in retry.publish:
        orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED), later, segments=done)
    status = job.stages[nodes.index(next(n for n in nodes if n.stage == P.STAGE_TTS))]
    assert status.state == P.STAGE_STATE_SUCCEEDED and status.completed_segments == 4


def test_a_segment_that_cannot_be_spoken_fails_the_job_and_a_cancel_stops_the_others():
    job, nodes, effects = dub_job(("pt",))
    done: dict[int, int] = {}
    tts = run_until_tts(job, nodes, effects, segments=3, segments_done=done)
    failed = orchestrator.on_event(
        job, nodes,
        event(tts[1], R.STAGE_OUTCOME_FAILED_PERMANENT, error=orchestrator.error_status("VOICE_UNAVAILABLE", "no voice", "tts", 9)),
        T0, segments=done,
    )  # fmt: skip
    assert job.state == P.STATE_FAILED and failed.cancel_flag
    assert "Synthesizing speech (pt)" in job.error.message
    late = orchestrator.on_event(job, nodes, event(tts[0], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done)
    assert late.ignored == "job finished"


def test_an_event_for_a_segment_the_stage_does_not_have_is_ignored():
    job, nodes, effects = dub_job(("pt",))
    tts = run_until_tts(job, nodes, effects, segments=2)
    stray = event(tts[0], R.STAGE_OUTCOME_SUCCEEDED)
    stray.segment_index = 7
    assert orchestrator.on_event(job, nodes, stray, T0).ignored == "unknown segment"
    stray.ClearField("segment_index")
    assert orchestrator.on_event(job, nodes, stray, T0).ignored == "unknown segment"


def test_the_job_options_reach_the_dub_stages():
    job, nodes, effects = dub_job(
        ("pt",), fit_policy=P.FIT_POLICY_EXTEND_VIDEO, max_speed_factor=1.2, hard_speed_cap=1.8,
        ducking_level=P.DUCKING_LEVEL_REPLACE, audio_format=P.AUDIO_FORMAT_MP3,
    )  # fmt: skip
    job.subtitle_options.burn_in = True
    done: dict[int, int] = {}
    tts = run_until_tts(job, nodes, effects, segments=1, segments_done=done)
    assert tts[0].tts.max_speaking_rate == 1.2
    queue = list(orchestrator.on_event(job, nodes, event(tts[0], R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done).publish)
    by_stage = {}
    while queue:
        task = queue.pop(0)
        by_stage[task.stage] = task
        queue.extend(orchestrator.on_event(job, nodes, event(task, R.STAGE_OUTCOME_SUCCEEDED), T0, segments=done).publish)
    mix, encode, mux = by_stage[P.STAGE_MIX].mix, by_stage[P.STAGE_ENCODE], by_stage[P.STAGE_MUX].mux
    assert (mix.fit_policy, mix.max_speed_factor, mix.hard_speed_cap) == (P.FIT_POLICY_EXTEND_VIDEO, 1.2, 1.8)
    assert mix.ducking_level == P.DUCKING_LEVEL_REPLACE
    assert encode.encode.audio_format == P.AUDIO_FORMAT_MP3 and encode.outputs[0].key.endswith("dub.mp3")
    assert mux.fit_policy == P.FIT_POLICY_EXTEND_VIDEO and mux.burn_in and mux.frame_rate == 25.0
    probe = effects.publish[0]
    assert probe.probe.require_video


def test_dub_artifacts_are_named_for_download():
    job, _, _ = dub_job(("pt",))
    ref = R.ArtifactRef(role=R.ARTIFACT_ROLE_SYNC_REPORT, key="jobs/j1/mix/pt/sync.json", language="pt")
    assert pipeline.artifact_filename(job, ref) == "talk.pt.sync.json"
    ref = R.ArtifactRef(role=R.ARTIFACT_ROLE_VIDEO, key="jobs/j1/mux/pt/dub.mp4", language="pt")
    assert pipeline.artifact_filename(job, ref) == "talk.pt.mp4"
