"""Timing fit: where each dubbed segment's speech goes and how much it is sped up.

Pure functions over seconds: no I/O, no ffmpeg, no gRPC. The issue's order
(ARCHITECTURE.md, "Output quality rules") is applied to every segment:

1. borrow the silence after the segment, up to the next segment's start (the
   last one may borrow up to the end of the media): the speech never starts
   before its source start and never runs into the next segment's speech;
2. re-synthesize at a faster engine speed: `engine_speed_for` says which;
3. pitch-preserving stretch of the synthesized audio, so that engine speed x
   stretch stays within `FitLimits.max_factor` (1.3 by default).

Speech is never truncated. What still does not fit is the job's fit policy's:
`KEEP_TIMING` allows stretch up to `FitLimits.hard_cap`, then lets the speech
run on and push the following segments later; each pushed segment is fitted
into what is left of its own slot, so the drift is absorbed by the silences
that follow. `EXTEND_VIDEO` slows the picture under the segment by its
overflow instead, so every segment starts at its (moved) source start.

Engine speed needs a new synthesis, which is the caller's I/O, so fitting is
two calls. The TTS stage, per segment, after a first synthesis at normal
speed (`slot` is the task's target_duration, which the orchestrator takes
from `slots`)::

    speed = engine_speed_for(speech_at_normal_speed, slot, max_engine_speed=voice_max)
    # re-synthesize at `speed` when it is above 1.0 and measure the new speech

The mix stage, per language, with every segment's measured speech::

    report = fit([Segment(start, end, speech, speed), ...], media_duration, language="pt")
    # place report.segments[i] at dubbed_start, stretched by its `stretch`

Engine speed only approximately divides the duration (voices do not speed up
uniformly), so the stretch is always computed from the measured speech.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from google.protobuf import duration_pb2, json_format
from octavia.jobs.v1 import jobs_pb2

# Durations closer than this are equal: one nanosecond, the resolution of the
# protos' Duration, so float rounding never reports a phantom overflow.
_TOLERANCE = 1e-9
# The report's factors are rounded to six decimals, its durations to the microsecond.
_REPORT_DECIMALS = 6


class FitPolicy(StrEnum):
    """What happens to speech that does not fit after every step.

    The names of octavia.jobs.v1.FitPolicy (UNSPECIFIED is KEEP_TIMING) as
    plain values, so the fitting itself needs no generated code.
    """

    KEEP_TIMING = "keep_timing"
    EXTEND_VIDEO = "extend_video"


@dataclass(frozen=True)
class FitLimits:
    """The speed caps: combined factor = engine speed x stretch.

    `max_factor` is what every policy may use to fit a segment (speech above
    about 1.3x sounds hurried); `hard_cap` is how far KEEP_TIMING may go
    before it lets the timing drift.
    """

    max_factor: float = 1.3
    hard_cap: float = 1.5

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_factor <= self.hard_cap:
            raise ValueError(f"speed caps must satisfy 1.0 <= max_factor <= hard_cap, got {self.max_factor} and {self.hard_cap}")


@dataclass(frozen=True)
class Segment:
    """One source segment and its synthesized translation.

    `start` and `end` are the original speech's span in seconds; `speech` is
    the length of the synthesized audio as synthesized, at `engine_speed`
    (0 for an empty translation).
    """

    start: float
    end: float
    speech: float
    engine_speed: float = 1.0


@dataclass(frozen=True)
class VideoExtension:
    """Picture to slow down (EXTEND_VIDEO): the original's picture between
    `source_start` and `source_end` plays over its length plus `added`
    seconds (a still frame when the span is empty)."""

    source_start: float
    source_end: float
    added: float


@dataclass(frozen=True)
class SegmentFit:
    """How one segment was fitted; times in seconds.

    `dubbed_start`/`dubbed_end` are in the output's time, which is the
    original's plus the picture added before (EXTEND_VIDEO). `stretch` is the
    pitch-preserving stretch the mixer applies to the synthesized audio.
    `overflow` is speech that ran past the segment's slot after every step;
    under KEEP_TIMING it becomes the next segment's drift, under EXTEND_VIDEO
    the picture added.
    """

    index: int
    source_start: float
    source_end: float
    dubbed_start: float
    dubbed_end: float
    speech: float
    engine_speed: float
    stretch: float
    borrowed: float
    overflow: float
    drift: float
    video_extension: VideoExtension | None
    skipped: bool

    @property
    def speed_factor(self) -> float:
        """Engine speed x stretch: how much faster than the voice's normal rate."""
        return self.engine_speed * self.stretch


@dataclass(frozen=True)
class SyncReport:
    """The sync report of one target language: every segment and a summary."""

    language: str
    policy: FitPolicy
    limits: FitLimits
    media_duration: float
    segments: tuple[SegmentFit, ...]

    @property
    def empty(self) -> bool:
        """No speech to dub (no segments, or only empty translations)."""
        return all(segment.skipped for segment in self.segments)

    @property
    def max_factor(self) -> float:
        return max((s.speed_factor for s in self.segments if not s.skipped), default=1.0)

    @property
    def total_overflow(self) -> float:
        return sum(s.overflow for s in self.segments)

    @property
    def overflowing_segments(self) -> int:
        return sum(1 for s in self.segments if s.overflow > 0)

    @property
    def segments_over_cap(self) -> int:
        """Segments that `max_factor` alone could not fit: they went to the
        hard cap, or overflowed."""
        cap = self.limits.max_factor + _TOLERANCE
        return sum(1 for s in self.segments if s.speed_factor > cap or s.overflow > 0)

    @property
    def max_drift(self) -> float:
        return max((s.drift for s in self.segments), default=0.0)

    @property
    def extensions(self) -> tuple[VideoExtension, ...]:
        return tuple(s.video_extension for s in self.segments if s.video_extension)

    @property
    def total_extension(self) -> float:
        return sum(extension.added for extension in self.extensions)

    @property
    def output_duration(self) -> float:
        """The media plus the picture added, or plus speech that drifted past its end."""
        last_speech = max((s.dubbed_end for s in self.segments), default=0.0)
        return max(self.media_duration + self.total_extension, last_speech)

    @property
    def note(self) -> str:
        return "no speech to dub" if self.empty else ""

    def to_message(self, job: str = "", texts: Sequence[tuple[str, str]] = ()) -> jobs_pb2.SyncReport:
        """The report as the SYNC_REPORT artifact's message (its JSON mapping is the file).

        `texts`: each segment's original and dubbed text, in order, when known.
        """
        message = jobs_pb2.SyncReport(
            job=job,
            language=self.language,
            fit_policy=_POLICY_VALUES[self.policy],
            max_speed_factor=self.limits.max_factor,
            hard_speed_cap=self.limits.hard_cap,
            original_duration=_duration(self.media_duration),
            output_duration=_duration(self.output_duration),
            overflowing_segments=self.overflowing_segments,
            total_overflow=_duration(self.total_overflow),
            max_drift=_duration(self.max_drift),
            total_video_extension=_duration(self.total_extension),
            max_applied_speed_factor=_rounded(self.max_factor),
            segments_over_cap=self.segments_over_cap,
            note=self.note,
        )
        for segment, (source_text, text) in zip(self.segments, itertools.chain(texts, itertools.repeat(("", ""))), strict=False):
            message.segments.add(
                index=segment.index,
                original_start_offset=_duration(segment.source_start),
                original_end_offset=_duration(segment.source_end),
                dubbed_start_offset=_duration(segment.dubbed_start),
                dubbed_end_offset=_duration(segment.dubbed_end),
                speech_duration=_duration(segment.speech),
                speaking_rate=_rounded(segment.engine_speed),
                stretch=_rounded(segment.stretch),
                speed_factor=_rounded(segment.speed_factor),
                borrowed_silence=_duration(segment.borrowed),
                overflow=_duration(segment.overflow),
                drift=_duration(segment.drift),
                video_extension=_duration(segment.video_extension.added if segment.video_extension else 0.0),
                source_text=source_text,
                text=text,
                skipped=segment.skipped,
            )
        return message

    def to_json(self, job: str = "", texts: Sequence[tuple[str, str]] = ()) -> str:
        """The SYNC_REPORT artifact: the JSON mapping of `to_message`."""
        return json_format.MessageToJson(self.to_message(job, texts), indent=2, ensure_ascii=False)


# --- Planning (the TTS stage) --------------------------------------------------


def slots(spans: Sequence[tuple[float, float]], media_duration: float) -> list[float]:
    """Time each segment may fill at its original place: from its start to the
    next segment's start, the last one to the end of the media (step 1)."""
    return [limit - start for (start, _), limit in zip(spans, _slot_ends(spans, media_duration), strict=True)]


def engine_speed_for(speech: float, slot: float, *, max_engine_speed: float, limits: FitLimits = FitLimits()) -> float:
    """Engine speed to re-synthesize at so `speech` (seconds at normal speed)
    fits `slot` (step 2); 1.0 means keep the first synthesis.

    Bounded by what the voice supports (1.0 for a voice without rate control)
    and by `limits.max_factor`, so the stretch that follows can only add to a
    factor that is still within the cap. Never below 1.0: a short translation
    is not slowed down.
    """
    wanted = speech / slot if slot > 0 else float("inf")
    return max(1.0, min(wanted, max_engine_speed, limits.max_factor))


# --- Fitting (the mix stage) ---------------------------------------------------


def fit(
    segments: Sequence[Segment],
    media_duration: float,
    *,
    language: str = "",
    policy: FitPolicy = FitPolicy.KEEP_TIMING,
    limits: FitLimits = FitLimits(),
) -> SyncReport:
    """Place and stretch every segment's synthesized speech (steps 1 and 3 and
    the policy); the engine speed of step 2 is already in each `Segment`."""
    policy = FitPolicy(policy)
    _check(segments, limits)
    spans = [(segment.start, segment.end) for segment in segments]
    place = _keep_timing if policy is FitPolicy.KEEP_TIMING else _extend_video
    return SyncReport(language, policy, limits, media_duration, place(segments, _slot_ends(spans, media_duration), limits))


def _keep_timing(segments: Sequence[Segment], slot_ends: list[float], limits: FitLimits) -> tuple[SegmentFit, ...]:
    """Each segment starts at its source start or, when the speech before it
    ran on, right after that speech; it is fitted into what is left of its
    slot. The stretch is the smallest that fits, so the hard cap is only
    reached by speech that `max_factor` could not fit."""
    fits = []
    previous_end = 0.0
    for index, (segment, slot_end) in enumerate(zip(segments, slot_ends, strict=True)):
        start = max(segment.start, previous_end)
        stretch = _stretch(segment, slot_end - start, limits.hard_cap)
        fitted = _placed(index, segment, start, stretch, slot_end, shift=0.0)
        fits.append(fitted)
        previous_end = fitted.dubbed_end
    return tuple(fits)


def _extend_video(segments: Sequence[Segment], slot_ends: list[float], limits: FitLimits) -> tuple[SegmentFit, ...]:
    """Each segment starts at its source start moved by the picture added
    before it; what overflows its slot at `max_factor` is added as picture
    under the segment and the silence it borrowed."""
    fits = []
    shift = 0.0
    for index, (segment, slot_end) in enumerate(zip(segments, slot_ends, strict=True)):
        stretch = _stretch(segment, slot_end - segment.start, limits.max_factor)
        fitted = _placed(index, segment, segment.start + shift, stretch, slot_end + shift, shift=shift)
        if fitted.overflow > 0:
            extension = VideoExtension(segment.start, slot_end, fitted.overflow)
            fitted = replace(fitted, video_extension=extension)
            shift += extension.added
        fits.append(fitted)
    return tuple(fits)


def _stretch(segment: Segment, room: float, cap: float) -> float:
    """The smallest stretch (at least 1.0) that fits the speech into `room`,
    with engine speed x stretch at most `cap`."""
    if segment.speech == 0 or segment.speech <= room + _TOLERANCE:
        return 1.0
    most = max(1.0, cap / segment.engine_speed)
    if room <= 0:
        return most
    return min(segment.speech / room, most)


def _placed(index: int, segment: Segment, start: float, stretch: float, slot_end: float, *, shift: float) -> SegmentFit:
    """The fit of a segment whose speech starts at `start` (output time) with
    `stretch`, against a slot ending at `slot_end` (output time)."""
    end = start + segment.speech / stretch
    if end - slot_end <= _TOLERANCE:
        # Rounding of speech / stretch must not spill into the next segment.
        end = min(end, max(slot_end, start))
    moved_start, moved_end = segment.start + shift, segment.end + shift
    return SegmentFit(
        index=index,
        source_start=segment.start,
        source_end=segment.end,
        dubbed_start=start,
        dubbed_end=end,
        speech=segment.speech,
        engine_speed=segment.engine_speed,
        stretch=stretch,
        borrowed=max(0.0, min(end, slot_end) - max(start, moved_end)),
        overflow=max(0.0, end - max(slot_end, start)),
        drift=start - moved_start,
        video_extension=None,
        skipped=segment.speech == 0,
    )


def _slot_ends(spans: Sequence[tuple[float, float]], media_duration: float) -> list[float]:
    """Where each segment's slot ends in the original: the next segment's start;
    for the last, the media's end, or its own end when the transcript runs a
    little past the probed duration (their clocks differ by a few ms)."""
    if not spans:
        return []
    starts = [start for start, _ in spans[1:]]
    return [*starts, max(media_duration, spans[-1][1])]


def _check(segments: Sequence[Segment], limits: FitLimits) -> None:
    """Refuse input the fit cannot honour, naming the segment."""
    previous_start = 0.0
    for index, segment in enumerate(segments):
        if not 0 <= segment.start <= segment.end:
            raise ValueError(f"segment {index}: span {segment.start}..{segment.end} is not a span from 0 on")
        if segment.start < previous_start:
            raise ValueError(f"segment {index}: starts at {segment.start}, before the segment before it")
        if segment.speech < 0:
            raise ValueError(f"segment {index}: speech duration {segment.speech} is negative")
        if not 1.0 <= segment.engine_speed <= limits.max_factor + _TOLERANCE:
            raise ValueError(f"segment {index}: engine speed {segment.engine_speed} is outside 1.0..{limits.max_factor}")
        previous_start = segment.start


def _rounded(value: float) -> float:
    return round(float(value), _REPORT_DECIMALS)


def _duration(seconds: float) -> duration_pb2.Duration:
    """A Duration to the microsecond (finer than any audio sample, and readable)."""
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(round(seconds * 1_000_000))
    return duration


_POLICY_VALUES = {
    FitPolicy.KEEP_TIMING: jobs_pb2.FIT_POLICY_KEEP_TIMING,
    FitPolicy.EXTEND_VIDEO: jobs_pb2.FIT_POLICY_EXTEND_VIDEO,
}
