"""Dubbed speech is fitted into the original's time: borrowing the silence that
follows, then a faster engine speed, then a pitch-preserving stretch within
1.3x; it is never truncated and never overlaps the next segment's speech.
What still does not fit follows the job's fit policy, and the sync report
says what happened.

The caps are written out here (1.3 and 1.5) rather than imported, so a change
to a default in services/tts/fit.py has to be a change to these promises too.
"""

from __future__ import annotations

import json
import random

import pytest
from octavia.jobs.v1 import jobs_pb2

from octavia_runtime.fit import (
    FitLimits,
    FitPolicy,
    Segment,
    SyncReport,
    VideoExtension,
    engine_speed_for,
    fit,
    slots,
)

KEEP = FitPolicy.KEEP_TIMING
EXTEND = FitPolicy.EXTEND_VIDEO
TOLERANCE = 1e-6


def speech_length(fitted) -> float:
    """How long the dubbed speech sounds: its span in the output."""
    return fitted.dubbed_end - fitted.dubbed_start


# --- Step 1: borrow the silence before the next segment -------------------------


def test_speech_shorter_than_its_segment_is_neither_sped_up_nor_slowed_down():
    report = fit([Segment(1.0, 3.0, speech=1.2)], media_duration=5.0)
    (segment,) = report.segments
    assert (segment.dubbed_start, segment.dubbed_end) == (1.0, pytest.approx(2.2))
    assert segment.engine_speed == segment.stretch == segment.speed_factor == 1.0
    assert engine_speed_for(1.2, 2.0, max_engine_speed=1.3) == 1.0


def test_speech_borrows_the_following_silence_before_any_speed_up():
    # 2 s of source, 1 s of silence, then the next segment: 2.8 s of speech fits unhurried.
    report = fit([Segment(0.0, 2.0, speech=2.8), Segment(3.0, 4.0, speech=1.0)], media_duration=4.0)
    first = report.segments[0]
    assert first.speed_factor == 1.0
    assert first.dubbed_end == pytest.approx(2.8)
    assert first.borrowed == pytest.approx(0.8)
    assert report.segments[1].dubbed_start == 3.0


def test_borrowing_stops_at_the_next_segments_start_and_the_rest_is_sped_up():
    report = fit([Segment(0.0, 2.0, speech=3.6), Segment(3.0, 4.0, speech=1.0)], media_duration=4.0)
    first, second = report.segments
    assert first.dubbed_end == pytest.approx(3.0)
    assert first.stretch == pytest.approx(1.2)
    assert first.borrowed == pytest.approx(1.0)
    assert second.dubbed_start == 3.0


def test_touching_segments_have_no_silence_to_borrow():
    report = fit([Segment(0.0, 2.0, speech=2.4), Segment(2.0, 3.0, speech=1.0)], media_duration=3.0)
    first, second = report.segments
    assert first.borrowed == 0.0
    assert first.stretch == pytest.approx(1.2)
    assert first.dubbed_end == pytest.approx(2.0)
    assert second.dubbed_start == 2.0


def test_slots_run_from_each_start_to_the_next_start_and_the_last_to_the_end_of_the_media():
    assert slots([(0.5, 2.0), (2.0, 3.0), (4.0, 5.0)], media_duration=6.5) == [1.5, 2.0, 2.5]
    assert slots([], media_duration=3.0) == []


def test_the_last_segment_may_borrow_until_the_end_of_the_media():
    report = fit([Segment(1.0, 2.0, speech=2.5)], media_duration=4.0)
    (segment,) = report.segments
    assert segment.speed_factor == 1.0
    assert segment.dubbed_end == pytest.approx(3.5)
    assert report.output_duration == 4.0


def test_a_transcript_ending_a_little_after_the_probed_duration_keeps_its_own_end():
    report = fit([Segment(1.0, 2.01, speech=1.01)], media_duration=2.0)
    assert report.segments[0].speed_factor == 1.0
    assert report.total_overflow == 0.0


# --- Step 2: a faster engine speed, before any stretch --------------------------


def test_engine_speed_is_what_fits_the_slot_when_the_voice_can_go_that_fast():
    assert engine_speed_for(2.4, 2.0, max_engine_speed=2.0) == pytest.approx(1.2)


def test_engine_speed_stays_within_the_voice_and_the_combined_cap():
    assert engine_speed_for(4.0, 2.0, max_engine_speed=1.15) == 1.15
    assert engine_speed_for(4.0, 2.0, max_engine_speed=2.0) == 1.3
    assert engine_speed_for(4.0, 2.0, max_engine_speed=2.0, limits=FitLimits(max_factor=1.2)) == 1.2
    assert engine_speed_for(4.0, 0.0, max_engine_speed=2.0) == 1.3


def test_a_voice_without_rate_control_is_never_resynthesized():
    assert engine_speed_for(4.0, 2.0, max_engine_speed=1.0) == 1.0


def test_speech_resynthesized_fast_enough_needs_no_stretch():
    slot = slots([(0.0, 2.0)], media_duration=2.0)[0]
    speed = engine_speed_for(2.4, slot, max_engine_speed=1.5)
    report = fit([Segment(0.0, 2.0, speech=2.4 / speed, engine_speed=speed)], media_duration=2.0)
    (segment,) = report.segments
    assert segment.engine_speed == pytest.approx(1.2)
    assert segment.stretch == 1.0
    assert segment.dubbed_end == pytest.approx(2.0)


# --- Step 3: pitch-preserving stretch within the combined cap -------------------


def test_stretch_makes_up_what_the_engine_speed_did_not():
    # The voice sped up less than asked: 1.1 gave 2.2 s for a 2.0 s slot.
    report = fit([Segment(0.0, 2.0, speech=2.2, engine_speed=1.1)], media_duration=2.0)
    (segment,) = report.segments
    assert segment.stretch == pytest.approx(1.1)
    assert segment.speed_factor == pytest.approx(1.21)
    assert segment.overflow == 0.0


def test_engine_speed_times_stretch_stays_within_the_cap_when_the_speech_fits():
    for engine_speed in (1.0, 1.1, 1.2, 1.25):
        report = fit([Segment(0.0, 2.0, speech=2.5 / engine_speed, engine_speed=engine_speed)], media_duration=2.0)
        assert report.segments[0].speed_factor == pytest.approx(1.25)


def test_the_combined_cap_is_configurable():
    limits = FitLimits(max_factor=1.1, hard_cap=1.1)
    report = fit([Segment(0.0, 2.0, speech=2.4), Segment(2.0, 3.0, speech=0.5)], media_duration=3.0, limits=limits)
    first = report.segments[0]
    assert first.speed_factor == pytest.approx(1.1)
    assert first.overflow == pytest.approx(2.4 / 1.1 - 2.0)
    assert report.to_message().max_speed_factor == 1.1


def test_caps_must_be_ordered():
    with pytest.raises(ValueError, match="max_factor <= hard_cap"):
        FitLimits(max_factor=1.6, hard_cap=1.5)
    with pytest.raises(ValueError):
        FitLimits(max_factor=0.9)


# --- Policy keep_timing: the hard cap, then drift absorbed by later silence -------


def test_keep_timing_goes_past_the_combined_cap_up_to_the_hard_cap_before_drifting():
    report = fit([Segment(0.0, 2.0, speech=2.8), Segment(2.0, 3.0, speech=1.0)], media_duration=3.0)
    first, second = report.segments
    assert first.speed_factor == pytest.approx(1.4)
    assert first.overflow == 0.0
    assert second.drift == 0.0
    assert report.segments_over_cap == 1
    assert report.overflowing_segments == 0


def test_keep_timing_lets_speech_beyond_the_hard_cap_push_the_next_segment_and_reports_the_drift():
    report = fit([Segment(0.0, 2.0, speech=3.6), Segment(2.0, 3.0, speech=0.5), Segment(5.0, 6.0, speech=1.0)], 6.0)
    first, second, third = report.segments
    assert first.speed_factor == pytest.approx(1.5)
    assert first.overflow == pytest.approx(0.4)
    assert second.dubbed_start == pytest.approx(2.4)
    assert second.drift == pytest.approx(0.4)
    # The pause after the second segment absorbs the drift: the third is on time.
    assert second.speed_factor == 1.0
    assert third.dubbed_start == 5.0
    assert third.drift == 0.0
    assert report.max_drift == pytest.approx(0.4)
    assert report.total_overflow == pytest.approx(0.4)
    assert report.output_duration == 6.0


def test_drift_accumulates_until_a_pause_is_long_enough():
    # Four touching 1 s segments each with 1.8 s of speech, then a long pause.
    segments = [Segment(float(i), float(i + 1), speech=1.8) for i in range(4)] + [Segment(8.0, 9.0, speech=1.0)]
    report = fit(segments, media_duration=9.0)
    drifts = [segment.drift for segment in report.segments]
    assert drifts[0] == 0.0
    assert drifts[1] < drifts[2] < drifts[3]
    assert drifts[4] == 0.0
    assert all(segment.speed_factor <= 1.5 + TOLERANCE for segment in report.segments)


def test_a_pushed_segment_is_sped_up_to_win_back_the_drift():
    report = fit([Segment(0.0, 1.0, speech=1.8), Segment(1.0, 3.0, speech=1.9), Segment(3.0, 4.0, speech=1.0)], 4.0)
    first, second, third = report.segments
    assert second.drift == pytest.approx(0.2)
    assert second.stretch > 1.0
    assert second.dubbed_end == pytest.approx(3.0)
    assert third.drift == 0.0


def test_keep_timing_speech_that_drifts_past_the_end_of_the_media_makes_the_output_longer_and_says_so():
    report = fit([Segment(0.0, 1.0, speech=2.0)], media_duration=1.0)
    (segment,) = report.segments
    assert segment.speed_factor == pytest.approx(1.5)
    assert segment.overflow == pytest.approx(2.0 / 1.5 - 1.0)
    assert report.output_duration == pytest.approx(2.0 / 1.5)
    assert report.to_message().output_duration.ToTimedelta().total_seconds() == pytest.approx(2.0 / 1.5, abs=1e-6)


# --- Policy extend_video: picture added under the segment ------------------------


def test_extend_video_adds_picture_under_the_segment_instead_of_going_past_the_combined_cap():
    segments = [Segment(0.0, 2.0, speech=3.25), Segment(2.0, 3.0, speech=1.0), Segment(4.0, 5.0, speech=1.56)]
    report = fit(segments, media_duration=5.0, policy=EXTEND)
    first, second, third = report.segments
    assert first.speed_factor == pytest.approx(1.3)
    assert first.video_extension == VideoExtension(0.0, 2.0, pytest.approx(0.5))
    assert second.dubbed_start == pytest.approx(2.5)
    assert third.dubbed_start == pytest.approx(4.5)
    assert third.video_extension == VideoExtension(4.0, 5.0, pytest.approx(0.2))
    assert report.total_extension == pytest.approx(0.7)
    assert report.output_duration == pytest.approx(5.7)
    assert all(segment.drift == 0.0 for segment in report.segments)


def test_extend_video_total_extension_is_the_sum_of_the_insertions_and_each_segment_starts_at_its_moved_source_start():
    segments = random_segments(random.Random(7), count=30)
    report = fit(segments, media_duration=segments[-1].end + 1.0, policy=EXTEND)
    assert report.extensions
    assert report.total_extension == pytest.approx(sum(extension.added for extension in report.extensions))
    added_before = 0.0
    for segment in report.segments:
        assert segment.dubbed_start == pytest.approx(segment.source_start + added_before)
        if segment.video_extension:
            assert segment.video_extension.source_start == segment.source_start
            assert segment.video_extension.added == pytest.approx(segment.overflow)
            added_before += segment.video_extension.added
    assert report.output_duration == pytest.approx(report.media_duration + added_before)


def test_policies_are_named_as_in_the_api():
    api_names = {name.removeprefix("FIT_POLICY_").lower() for name in jobs_pb2.FitPolicy.keys()} - {"unspecified"}
    assert {policy.value for policy in FitPolicy} == api_names
    assert fit([], 1.0, policy="extend_video").policy is EXTEND


# --- Never overlap, never truncate: any input -----------------------------------


def random_segments(rng: random.Random, count: int, max_engine_speed: float = 1.3) -> list[Segment]:
    """Segments with random gaps (a quarter of them touching), lengths, and
    translations from empty to 2.5 times the source, some re-synthesized at
    an engine speed as the TTS stage would ask."""
    segments, cursor = [], rng.uniform(0.0, 1.0)
    for _ in range(count):
        length = rng.uniform(0.3, 5.0)
        ratio = 0.0 if rng.random() < 0.1 else rng.uniform(0.5, 2.5)
        engine_speed = rng.choice([1.0, 1.0, rng.uniform(1.0, max_engine_speed)])
        segments.append(Segment(cursor, cursor + length, speech=length * ratio / engine_speed, engine_speed=engine_speed))
        cursor += length + (0.0 if rng.random() < 0.25 else rng.uniform(0.0, 1.5))
    return segments


def assert_sound(report: SyncReport, segments: list[Segment], limits: FitLimits) -> None:
    """What every report promises, whatever the input."""
    policy_cap = limits.hard_cap if report.policy is KEEP else limits.max_factor
    spoken = [fitted for fitted in report.segments if not fitted.skipped]
    for fitted, segment in zip(report.segments, segments, strict=True):
        assert fitted.dubbed_start >= fitted.source_start - TOLERANCE
        assert 1.0 <= fitted.engine_speed and 1.0 <= fitted.stretch
        assert fitted.speed_factor <= policy_cap + TOLERANCE
        if fitted.skipped:
            assert fitted.stretch == 1.0 and fitted.overflow == 0.0
        if fitted.overflow > 0:  # only what the policy's cap could not fit overflows
            assert fitted.speed_factor == pytest.approx(policy_cap)
        # Never truncated: all the speech sounds, at the stretch reported.
        assert speech_length(fitted) == pytest.approx(segment.speech / fitted.stretch, abs=TOLERANCE)
    for before, after in zip(spoken, spoken[1:], strict=False):
        assert after.dubbed_start >= before.dubbed_end - TOLERANCE
    assert report.total_overflow == pytest.approx(sum(fitted.overflow for fitted in report.segments))
    assert report.overflowing_segments == sum(1 for fitted in report.segments if fitted.overflow > 0)


def assert_every_overflow_reported(report: SyncReport) -> None:
    """Speech sounding after the next segment's start (moved by any picture
    added), or after the end of the media for the last, is that segment's
    reported overflow; under keep_timing the next segment starts that much
    later and says so in its drift."""
    if not report.segments:
        return
    media_end = max([report.media_duration] + [fitted.source_end for fitted in report.segments])
    next_starts = [fitted.source_start for fitted in report.segments[1:]] + [media_end]
    shift = 0.0
    for index, (fitted, next_start) in enumerate(zip(report.segments, next_starts, strict=True)):
        slot_end = next_start + shift
        assert fitted.overflow == pytest.approx(max(0.0, fitted.dubbed_end - max(slot_end, fitted.dubbed_start)), abs=TOLERANCE)
        if report.policy is KEEP and index + 1 < len(report.segments):
            after = report.segments[index + 1]
            assert after.drift == pytest.approx(max(0.0, fitted.dubbed_end - after.source_start), abs=TOLERANCE)
        shift += fitted.video_extension.added if fitted.video_extension else 0.0


@pytest.mark.parametrize("policy", [KEEP, EXTEND])
@pytest.mark.parametrize("limits", [FitLimits(), FitLimits(max_factor=1.2, hard_cap=1.4)])
def test_any_segments_get_non_overlapping_untruncated_speech_within_the_caps(policy, limits):
    rng = random.Random(20261122)
    for _ in range(300):
        segments = random_segments(rng, count=rng.randint(0, 15), max_engine_speed=limits.max_factor)
        media_duration = (segments[-1].end if segments else 0.0) + rng.choice([0.0, rng.uniform(0.0, 3.0)])
        report = fit(segments, media_duration, policy=policy, limits=limits)
        assert_sound(report, segments, limits)
        assert_every_overflow_reported(report)


# --- Portuguese: translations 1.4 to 2.1 times the English ----------------------


def portuguese_dub(policy: FitPolicy, max_engine_speed: float) -> SyncReport:
    """English segments with natural pauses, dubbed into Portuguese that runs
    1.4 to 2.1 times longer, through the TTS stage's two calls. The voice
    speeds up less than asked (duration / speed ** 0.9), as real voices do."""
    rng = random.Random(1422)
    spans, cursor = [], 0.6
    for _ in range(40):
        length = rng.uniform(1.0, 4.5)
        spans.append((cursor, cursor + length))
        cursor += length + rng.choice([0.0, 0.15, 0.4, 0.9, 1.8])
    media_duration = cursor + 0.5
    segments = []
    for (start, end), slot in zip(spans, slots(spans, media_duration), strict=True):
        natural = (end - start) * rng.uniform(1.4, 2.1)
        speed = engine_speed_for(natural, slot, max_engine_speed=max_engine_speed)
        segments.append(Segment(start, end, speech=natural / speed**0.9, engine_speed=speed))
    return fit(segments, media_duration, language="pt", policy=policy)


@pytest.mark.parametrize("max_engine_speed", [1.0, 2.0])
def test_portuguese_with_keep_timing_stays_within_the_hard_cap_and_reports_its_drift(max_engine_speed):
    report = portuguese_dub(KEEP, max_engine_speed)
    assert report.max_factor <= 1.5 + TOLERANCE
    assert report.segments_over_cap > 0
    assert report.max_drift > 0
    assert report.total_overflow > 0
    assert_every_overflow_reported(report)
    # Drift is absorbed, not carried to the end: some segment after a drifting one is on time again.
    drifting = [i for i, segment in enumerate(report.segments) if segment.drift > 0]
    assert any(report.segments[i].drift == 0 for i in range(drifting[0], len(report.segments)))


def test_portuguese_uses_the_engine_speed_first_when_the_voice_has_one():
    with_rate = portuguese_dub(KEEP, max_engine_speed=2.0)
    without_rate = portuguese_dub(KEEP, max_engine_speed=1.0)
    assert any(segment.engine_speed > 1.0 for segment in with_rate.segments)
    assert all(segment.engine_speed == 1.0 for segment in without_rate.segments)
    stretch_with = sum(segment.stretch for segment in with_rate.segments)
    stretch_without = sum(segment.stretch for segment in without_rate.segments)
    assert stretch_with < stretch_without


def test_portuguese_with_extend_video_keeps_the_combined_cap_and_says_how_much_longer_the_video_is():
    report = portuguese_dub(EXTEND, max_engine_speed=2.0)
    assert report.max_factor <= 1.3 + TOLERANCE
    assert report.max_drift == 0.0
    assert report.total_extension > 0
    assert report.output_duration == pytest.approx(report.media_duration + report.total_extension)
    extension = report.to_message().total_video_extension.ToTimedelta().total_seconds()
    assert extension == pytest.approx(report.total_extension, abs=1e-6)


# --- Edge cases ----------------------------------------------------------------


def test_an_empty_translation_is_skipped_and_reported():
    report = fit([Segment(0.0, 1.0, speech=1.0), Segment(1.5, 2.5, speech=0.0), Segment(3.0, 4.0, 1.0)], 4.0)
    skipped = report.segments[1]
    assert skipped.skipped
    assert speech_length(skipped) == 0.0
    assert skipped.overflow == 0.0 and skipped.speed_factor == 1.0
    assert [s.skipped for s in report.to_message().segments] == [False, True, False]
    assert not report.empty


def test_a_single_one_second_clip():
    report = fit([Segment(0.1, 0.9, speech=1.1)], media_duration=1.0)
    (segment,) = report.segments
    assert segment.dubbed_start == pytest.approx(0.1)
    assert segment.stretch == pytest.approx(1.1 / 0.9)
    assert segment.dubbed_end == pytest.approx(1.0)
    assert report.output_duration == 1.0


@pytest.mark.parametrize("policy", [KEEP, EXTEND])
def test_media_that_is_all_silence_gets_an_empty_report_that_says_so(policy):
    report = fit([], media_duration=12.0, language="pt", policy=policy)
    document = json.loads(report.to_json())
    assert report.segments == () and report.empty
    assert document["note"] == "no speech to dub"
    assert "segments" not in document
    assert document["outputDuration"] == "12s"


def test_only_empty_translations_make_an_empty_dub():
    report = fit([Segment(0.0, 1.0, speech=0.0)], media_duration=2.0)
    assert report.empty
    assert report.to_message().note == "no speech to dub"


def test_input_the_fit_cannot_honour_is_refused_naming_the_segment():
    with pytest.raises(ValueError, match="segment 1: starts at 0.5"):
        fit([Segment(1.0, 2.0, 1.0), Segment(0.5, 0.8, 1.0)], 3.0)
    with pytest.raises(ValueError, match="segment 0: speech duration"):
        fit([Segment(1.0, 2.0, -1.0)], 3.0)
    with pytest.raises(ValueError, match="segment 0: engine speed 1.4"):
        fit([Segment(1.0, 2.0, 1.0, engine_speed=1.4)], 3.0)
    with pytest.raises(ValueError, match="segment 0: engine speed 0.9"):
        fit([Segment(1.0, 2.0, 1.0, engine_speed=0.9)], 3.0)
    with pytest.raises(ValueError, match="segment 0: span"):
        fit([Segment(2.0, 1.0, 1.0)], 3.0)


# --- The report artifact -------------------------------------------------------


def test_the_report_says_per_segment_what_was_done_and_sums_it_up():
    report = fit([Segment(0.0, 2.0, speech=3.6), Segment(2.0, 3.0, speech=0.5)], 3.0, language="pt")
    document = json.loads(report.to_json("jobs/1", [("Hello there.", "Olá."), ("Bye.", "Tchau.")]))
    assert document["job"] == "jobs/1"
    assert document["language"] == "pt"
    assert document["fitPolicy"] == "FIT_POLICY_KEEP_TIMING"
    assert (document["maxSpeedFactor"], document["hardSpeedCap"]) == (1.3, 1.5)
    first = document["segments"][0]
    assert (first["originalStartOffset"], first["originalEndOffset"]) == ("0s", "2s")
    assert (first["dubbedStartOffset"], first["dubbedEndOffset"]) == ("0s", "2.400s")
    assert first["speedFactor"] == 1.5
    assert first["overflow"] == "0.400s"
    assert (first["sourceText"], first["text"]) == ("Hello there.", "Olá.")
    assert document["segments"][1]["drift"] == "0.400s"
    summary = {
        key: document.get(key)
        for key in (
            "maxAppliedSpeedFactor",
            "segmentsOverCap",
            "overflowingSegments",
            "totalOverflow",
            "maxDrift",
            "outputDuration",
        )
    }
    assert summary == {
        "maxAppliedSpeedFactor": 1.5,
        "segmentsOverCap": 1,
        "overflowingSegments": 1,
        "totalOverflow": "0.400s",
        "maxDrift": "0.400s",
        "outputDuration": "3s",
    }
    assert document["totalVideoExtension"] == "0s" and "note" not in document


def test_the_report_lists_where_the_picture_is_extended():
    report = fit([Segment(1.0, 2.0, speech=2.6), Segment(2.5, 3.0, speech=0.5)], 3.0, policy=EXTEND)
    extended = [
        (s.original_start_offset.ToTimedelta().total_seconds(), s.video_extension.ToTimedelta().total_seconds())
        for s in report.to_message().segments
        if s.video_extension.ToNanoseconds()
    ]
    assert extended == [(1.0, pytest.approx(0.5, abs=1e-6))]
