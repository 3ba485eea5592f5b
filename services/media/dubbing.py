"""The dub's media work, one language at a time: fit and mix (MIX), the audio file
(ENCODE), the video (MUX). Blocking functions over local files, run in a worker
thread by the stage handlers in stages.py.

    report, mixed = mix_dub(source, translation, speeches, folder, DubSettings(...))
    mux_dub(source, mixed, report, translation, out, MuxSettings(...))

The sync report (the SyncReport message) is what MIX hands MUX: where each
segment's speech went, and where the picture is held for FIT_POLICY_EXTEND_VIDEO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime import fit

from . import mixing, subtitles

P = jobs_pb2
# Background level under the new voice per DuckingLevel (linear gain; 0 leaves it out).
BACKGROUND_LEVELS = {
    P.DUCKING_LEVEL_NONE: 1.0,
    P.DUCKING_LEVEL_LIGHT: 10 ** (-6 / 20),
    P.DUCKING_LEVEL_MEDIUM: 10 ** (-12 / 20),
    P.DUCKING_LEVEL_STRONG: 10 ** (-20 / 20),
    P.DUCKING_LEVEL_REPLACE: 0.0,
}
_POLICIES = {P.FIT_POLICY_EXTEND_VIDEO: fit.FitPolicy.EXTEND_VIDEO}


@dataclass(frozen=True)
class DubSettings:
    job: str
    language: str
    media_duration: float  # the job's paid duration: no more of the source is used
    policy: jobs_pb2.FitPolicy
    limits: fit.FitLimits
    background_level: float

    @classmethod
    def of(cls, task: stages_pb2.StageTask, media_duration: float) -> DubSettings:
        params = task.mix  # the orchestrator fills in the caps' defaults (pipeline.speed_caps)
        return cls(
            job=task.job,
            language=task.language,
            media_duration=media_duration,
            policy=params.fit_policy,
            limits=fit.FitLimits(params.max_speed_factor, params.hard_speed_cap),
            background_level=BACKGROUND_LEVELS.get(params.ducking_level, BACKGROUND_LEVELS[P.DUCKING_LEVEL_MEDIUM]),
        )


def mix_dub(
    source: Path,
    translation: transcribe_pb2.Transcript,
    speeches: Sequence[stages_pb2.SynthesizedSpeech],
    folder: Path,
    settings: DubSettings,
) -> tuple[jobs_pb2.SyncReport, Path]:
    """Fit every segment's speech (octavia_runtime.fit), lay it on a voice track at
    its place, and mix that over the source's audio, ducked. Returns the sync
    report and the mixed WAV (in `folder`)."""
    segments = [
        fit.Segment(_seconds(s.start_offset), _seconds(s.end_offset), _seconds(speech.duration), speech.speaking_rate or 1.0)
        for s, speech in zip(translation.segments, speeches, strict=True)
    ]
    report = fit.fit(
        segments,
        settings.media_duration,
        language=settings.language,
        policy=_POLICIES.get(settings.policy, fit.FitPolicy.KEEP_TIMING),
        limits=settings.limits,
    )
    texts = [(s.source_text, s.text) for s in translation.segments]
    message = report.to_message(settings.job, texts)

    placed = []
    for fitted, speech in zip(report.segments, speeches, strict=True):
        if fitted.skipped:
            continue
        wav = folder / f"speech.{fitted.index:05d}.wav"
        mixing.stretch_speech(speech.wav, fitted.stretch, mixing.MIX_SAMPLE_RATE, wav)
        placed.append(mixing.VoiceSegment(fitted.dubbed_start, _fitted(wav, fitted)))
    voice = folder / "voice.wav"
    mixing.voice_track(placed, mixing.MIX_SAMPLE_RATE, _track_length(placed, report.output_duration), voice)

    paid = settings.media_duration or None
    background: Path = source
    limit = paid
    holds = holds_of(message)
    if holds and settings.background_level:
        background = folder / "background.wav"
        mixing.hold_audio(source, holds, background, max_seconds=paid)
        limit = None  # already the paid length plus the holds, on purpose
    mixed = folder / "mixed.wav"
    mixing.mix(background, voice, mixed, background_level=settings.background_level, max_seconds=limit)
    return message, mixed


@dataclass(frozen=True)
class MuxSettings:
    language: str
    source_language: str
    keep_original_audio: bool
    soft_subtitles: bool
    burn_in: bool
    frame_rate: float
    media_duration: float | None = None  # the job's paid duration: no more of the source is used


def mux_dub(
    source: Path,
    mixed: Path,
    report: jobs_pb2.SyncReport,
    translation: transcribe_pb2.Transcript,
    out: Path,
    settings: MuxSettings,
) -> None:
    """The dubbed video: the source's picture (held where the report extends it),
    the mix as its default audio, and the options' extra tracks."""
    folder = out.parent
    video = source
    holds = holds_of(report)
    if holds:
        video = folder / "extended.mp4"
        mixing.extend_picture(source, holds, video, max_seconds=settings.media_duration)
    srt = None
    if settings.soft_subtitles or settings.burn_in:
        srt = folder / f"{settings.language}.srt"
        cues = subtitles.build_cues(
            dubbed_timing(translation, report), frame_rate=settings.frame_rate, language=settings.language
        )
        srt.write_text(subtitles.to_srt(cues.cues), encoding="utf-8")
    mixing.mux_video(
        video,
        mixed,
        out,
        language=settings.language,
        original_audio=settings.keep_original_audio,
        original_language=settings.source_language or None,
        subtitles=(srt, settings.language) if srt and settings.soft_subtitles else None,
        burn_in=srt if settings.burn_in else None,
        # An extended picture is already the paid length plus the holds, on purpose.
        max_seconds=None if holds else settings.media_duration,
    )


def holds_of(report: jobs_pb2.SyncReport) -> list[tuple[float, float]]:
    """Where the picture is held and for how long, on the original's timeline: after each
    extended segment's slot (the next segment's start, or the end)."""
    holds = []
    segments = report.segments
    for i, segment in enumerate(segments):
        added = _seconds(segment.video_extension)
        if added > 0:
            at = _seconds(segments[i + 1].original_start_offset) if i + 1 < len(segments) else _seconds(report.original_duration)
            holds.append((at, added))
    return holds


def dubbed_timing(translation: transcribe_pb2.Transcript, report: jobs_pb2.SyncReport) -> transcribe_pb2.Transcript:
    """The translation with each segment at its dubbed time, so subtitles follow the new speech;
    segments with nothing spoken are left out."""
    timed = transcribe_pb2.Transcript()
    timed.CopyFrom(translation)
    del timed.segments[:]
    for segment, fitted in zip(translation.segments, report.segments, strict=True):
        if fitted.skipped or not segment.text.strip():
            continue
        moved = timed.segments.add()
        moved.CopyFrom(segment)
        del moved.words[:]
        moved.start_offset.CopyFrom(fitted.dubbed_start_offset)
        moved.end_offset.CopyFrom(fitted.dubbed_end_offset)
    timed.duration.CopyFrom(report.output_duration)
    return timed


def _fitted(wav: Path, fitted: fit.SegmentFit) -> Path:
    """Cut the stretched speech to the length the fit gave it: atempo's output may run a few
    milliseconds long, which is the trimmed speech's own trailing silence, and must not
    reach into the next segment."""
    mixing.trim_wav(wav, fitted.dubbed_end - fitted.dubbed_start)
    return wav


def _track_length(placed: Sequence[mixing.VoiceSegment], output_duration: float) -> float:
    return max([output_duration, *(segment.start_s + mixing.wav_seconds(segment.wav) for segment in placed)])


def _seconds(duration) -> float:
    return duration.ToTimedelta().total_seconds()
