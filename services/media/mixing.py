"""The dub's last steps: lay the synthesized speech on a track, mix it over the
original audio, encode it, and put it beside the picture.

    voice_track(segments, rate, duration_s, "voice.wav")     # speech at its segment times
    mix("source.mp4", "voice.wav", "mix.wav")                # original ducked under it, -16 LUFS
    encode_audio("mix.wav", "dub.m4a", language="pt")         # AUDIO_TRANSLATION's output
    mux_video("source.mp4", "mix.wav", "dub.mp4", language="pt",
              original_audio=True, subtitles=("pt.srt", "pt"))  # VIDEO_DUBBING's output
    extend_picture("source.mp4", [(12.4, 1.6)], "longer.mp4") # the extend_video fit policy

Every function blocks for as long as ffmpeg runs and writes its output through a
temporary file renamed into place (see ffmpeg.py): run them in a worker thread.
Only `mux_video` with `burn_in` and `extend_picture` re-encode the picture; the
plain mux copies the video stream bit for bit.
"""

from __future__ import annotations

import itertools
import os
import re
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

from octavia_runtime.languages import three_letter_code
from services.media.ffmpeg import FfmpegError, default_audio_stream, limit_samples, read_seconds, replacing, run

# The mix is made at the rate AAC and MP3 encoders like best, in stereo whatever the
# source: the outputs are for listening, and a dub of a 5.1 film is still a stereo dub.
MIX_SAMPLE_RATE = 48000
MIX_LAYOUT = "stereo"

# How loud the original stays under the new voice (linear gain; 0.2 is about -14 dB):
# still heard, the new voice on top, as in a voice-over.
DEFAULT_BACKGROUND_LEVEL = 0.2
# EBU R128 as streaming platforms apply it to speech: -16 LUFS integrated, true peak
# at most -1.5 dBTP (room for the AAC/MP3 encoders' overshoot).
DEFAULT_TARGET_LUFS = -16.0
TRUE_PEAK_DBTP = -1.5
LOUDNESS_RANGE_LU = 11.0

# The original fades down this long before the voice starts and back up after it
# ends, so the duck is not heard as a click and the first syllable is never masked.
DUCK_RAMP_S = 0.15
# Pauses shorter than this inside the voice keep the original ducked: pumping up and
# down between two words of one line sounds worse than staying down.
DUCK_HOLD_S = 0.5
# Samples quieter than this are the voice track's silence (-50 dBFS).
_VOICE_FLOOR = 10 ** (-50 / 20)
_SILENT_LUFS = -70.0  # what EBU R128's absolute gate leaves of silence
# The duck's envelope is computed at 100 Hz (10 ms steps) and resampled to the mix's rate.
_ENVELOPE_RATE = 100

AUDIO_FORMATS = {
    "m4a": ["-c:a", "aac", "-b:a", "192k", "-f", "ipod"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k", "-f", "mp3"],
}
_DUB_AUDIO = ["-c:a:0", "aac", "-b:a:0", "192k"]
# Re-encoding the picture (burned subtitles, held frames): visually lossless and
# playable everywhere.
_X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p"]
# Audio codecs an MP4 can carry as they are, so the original track is copied, not re-encoded.
_MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})

# The burned-in subtitles' font, shipped with the project (SIL Open Font License 1.1):
# libass draws nothing, silently, when it finds no font.
FONTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "fonts"
SUBTITLE_FONT = "Source Sans Pro"


@dataclass(frozen=True)
class VoiceSegment:
    """One dubbed segment's speech: a mono 16-bit PCM WAV that starts at `start_s` on the output timeline."""

    start_s: float
    wav: str | os.PathLike


def voice_track(segments: Iterable[VoiceSegment], sample_rate: int, duration_s: float, out: str | os.PathLike) -> None:
    """A mono 16-bit WAV of `duration_s` with each segment's speech starting at exactly
    `round(start_s * sample_rate)` and silence elsewhere.

    Built in memory rather than with ffmpeg's adelay/amix, whose offsets round to
    milliseconds and whose mixing rescales levels. Segments that overlap add up
    (the fit step should prevent it; a sum is the least bad answer). Raises
    ValueError for a WAV at another rate or format, or speech that would run past
    the end: silently cutting a line of the dub is never right."""
    total = round(duration_s * sample_rate)
    track = np.zeros(total, dtype=np.int32)
    for segment in segments:
        speech = _read_mono_pcm16(segment.wav, sample_rate)
        start = round(segment.start_s * sample_rate)
        if start < 0 or start + len(speech) > total:
            raise ValueError(
                f"the speech of {segment.wav} spans {segment.start_s:.3f} s to "
                f"{segment.start_s + len(speech) / sample_rate:.3f} s, outside the track's 0 to {duration_s:.3f} s"
            )
        track[start : start + len(speech)] += speech
    with replacing(out) as temp:
        _write_mono_pcm16(temp, sample_rate, np.clip(track, -32768, 32767).astype(np.int16))


def mix(
    original_audio: str | os.PathLike,
    voice: str | os.PathLike,
    out: str | os.PathLike,
    *,
    background_level: float = DEFAULT_BACKGROUND_LEVEL,
    target_lufs: float | None = DEFAULT_TARGET_LUFS,
    max_seconds: float | None = None,
) -> None:
    """The voice track over the original audio, as a 48 kHz stereo 16-bit WAV as long as the
    longer of the two (speech that runs past the original's end is never cut).

    `original_audio` is any media file (its default audio stream is used); `voice`
    is a WAV from `voice_track`. The original keeps its full level between lines
    and drops to `background_level` (a linear gain) while the voice speaks, with
    short ramps around each line; `background_level=0` leaves the original out
    entirely, a clean dub whose length is the voice track's. The ducked spans are
    read from the voice track itself, so a line's leading silence ducks nothing.

    The mix is then brought to `target_lufs` integrated loudness (EBU R128) in two
    passes: the ebur128 meter measures it, then loudnorm in linear mode applies one
    gain, which keeps the dynamics (loudnorm itself falls back to gentle compression
    when that gain would push true peaks over -1.5 dBTP or the loudness range is
    wider than 11 LU). Expect about 2 s per minute of audio. `target_lufs=None`
    skips it, as does a mix that is all silence, which has no loudness to correct.

    `max_seconds` (the job's paid duration) bounds how much of the original is
    used; the voice is never cut.
    """
    if not 0 <= background_level <= 1:
        raise ValueError(f"background_level must be between 0 and 1, not {background_level}")
    depth = None
    if background_level:
        depth = _duck_depth(voice).astype("<f4").tobytes()
        stream = default_audio_stream(original_audio)
        limit = "" if max_seconds is None else "," + limit_samples(max_seconds, MIX_SAMPLE_RATE)
        inputs = [*_read(max_seconds), "-i", os.fspath(original_audio), "-i", os.fspath(voice),
                  "-f", "f32le", "-ar", str(_ENVELOPE_RATE), "-ac", "1", "-i", "pipe:0"]  # fmt: skip
        # mix = original + voice - (1 - level) * original * depth: the depth stream is 0 away
        # from the voice, so padding it with silence past the voice's end ducks nothing.
        graph = (
            f"[0:{stream}]{_mix_format()}{limit},asplit[bg][under];"
            f"[2:a]aresample={MIX_SAMPLE_RATE},aformat=sample_fmts=fltp,pan={MIX_LAYOUT}|c0=c0|c1=c0,apad[depth];"
            f"[under][depth]amultiply,volume={background_level - 1:.6f}[duck];"
            f"[1:a:0]{_mix_format()}[voice];"
            "[bg][duck][voice]amix=inputs=3:duration=longest:normalize=0"
        )
    else:
        inputs = ["-i", os.fspath(voice)]
        graph = f"[0:a:0]{_mix_format()}"

    what = f"mixing {voice} over {original_audio}"
    normalize = ""
    if target_lufs is not None:
        measured = _measure_loudness(inputs, graph, what, depth)
        if measured is not None:
            normalize = "," + _loudnorm(target_lufs, measured)
    with replacing(out) as temp:
        run(
            [*inputs, "-filter_complex", f"{graph}{normalize}[out]", "-map", "[out]", "-ar", str(MIX_SAMPLE_RATE),
             "-c:a", "pcm_s16le", "-rf64", "auto", "-map_metadata", "-1", "-f", "wav", os.fspath(temp)],
            what,
            stdin=depth,
        )  # fmt: skip


def encode_audio(mixed: str | os.PathLike, out: str | os.PathLike, format: str = "m4a", *, language: str | None = None) -> None:
    """The mix as a listening file: `format` m4a (AAC, the default) or mp3, tagged with `language` (BCP-47).

    The tag goes on the track, where MP4 keeps it, and on the file, where MP3 keeps it (ID3 TLAN)."""
    if format not in AUDIO_FORMATS:
        raise ValueError(f"audio format {format!r}: use one of {', '.join(AUDIO_FORMATS)}")
    tag = []
    if language:
        code = three_letter_code(language)
        tag = ["-metadata:s:a:0", f"language={code}", "-metadata", f"language={code}"]
    with replacing(out) as temp:
        run(["-i", os.fspath(mixed), "-map", "0:a:0", *tag, *AUDIO_FORMATS[format], os.fspath(temp)],
            f"encoding {mixed} as {format}")  # fmt: skip


def mux_video(
    video_in: str | os.PathLike,
    dubbed_audio: str | os.PathLike,
    out: str | os.PathLike,
    *,
    language: str,
    original_audio: bool = False,
    original_language: str | None = None,
    subtitles: tuple[str | os.PathLike, str] | None = None,
    burn_in: str | os.PathLike | None = None,
    max_seconds: float | None = None,
) -> None:
    """An MP4 of `video_in`'s picture with the dub as its default sound.

    Tracks, in order: the video stream, copied as it is (never re-encoded, unless
    `burn_in`); the dubbed audio in AAC, tagged `language` (BCP-47) and marked
    default; with `original_audio`, `video_in`'s own audio, copied where MP4 can
    carry its codec, not default, tagged `original_language` when given (else it
    keeps its own tag); with `subtitles=(path, language)`, that SRT or WebVTT file
    as a soft subtitle track (mov_text). MP4 has no "not default" for a track that
    is alone of its kind: the muxer marks it enabled, which readers (ffmpeg among
    them) report as default; players still show soft subtitles only when asked.

    `burn_in` draws that subtitle file into the picture with libass and the font
    the project ships. That re-encodes the video (H.264, CRF 18), so the stream
    is no longer the source's; everything else stays as above.

    `max_seconds` (the job's paid duration) bounds what is taken of `video_in`,
    its picture and original audio (copied packets: by their timestamps).
    """
    video_in, dubbed_audio = os.fspath(video_in), os.fspath(dubbed_audio)
    read = [] if max_seconds is None else ["-t", f"{max_seconds:.6f}"]
    inputs = [*read, "-i", video_in, "-i", dubbed_audio]
    maps = ["-map", "0:v:0", "-map", "1:a:0"]
    codecs = [*_DUB_AUDIO, "-metadata:s:a:0", f"language={three_letter_code(language)}", "-disposition:a:0", "default"]
    if original_audio:
        stream = default_audio_stream(video_in)
        maps += ["-map", f"0:{stream}"]
        copyable = _codec_name(video_in, stream) in _MP4_AUDIO_CODECS
        codecs += ["-c:a:1", "copy"] if copyable else ["-c:a:1", "aac", "-b:a:1", "192k"]
        codecs += ["-disposition:a:1", "0"]
        if original_language:
            codecs += ["-metadata:s:a:1", f"language={three_letter_code(original_language)}"]
    if subtitles:
        path, subtitle_language = subtitles
        inputs += ["-i", os.fspath(path)]
        maps += ["-map", "2:s:0"]
        codecs += ["-c:s", "mov_text", "-metadata:s:s:0", f"language={three_letter_code(subtitle_language)}"]
    if burn_in:
        options = {"filename": os.fspath(burn_in), "fontsdir": os.fspath(FONTS_DIR), "force_style": f"FontName={SUBTITLE_FONT}"}
        draw = "subtitles=" + ":".join(f"{key}={_filter_value(value)}" for key, value in options.items())
        picture = ["-vf", draw, *_X264]
    else:
        picture = ["-c:v", "copy"]
    with replacing(out) as temp:
        run([*inputs, *maps, *picture, *codecs, "-movflags", "+faststart", "-f", "mp4", os.fspath(temp)],
            f"muxing {dubbed_audio} with the picture of {video_in}")  # fmt: skip


def stretch_speech(wav: bytes, stretch: float, sample_rate: int, out: str | os.PathLike) -> None:
    """A mono 16-bit WAV of speech (`wav`) sped up `stretch` times without changing its pitch
    (atempo), at `sample_rate`: one dubbed segment ready for `voice_track`."""
    if not 1.0 <= stretch <= 2.0:
        raise ValueError(f"a stretch of {stretch} is outside 1.0 to 2.0")
    tempo = f"atempo={stretch:.6f}," if stretch > 1.0 else ""
    with replacing(out) as temp:
        run(["-f", "wav", "-i", "pipe:0", "-af", f"{tempo}aresample={sample_rate}", "-ac", "1", "-c:a", "pcm_s16le",
             "-map_metadata", "-1", "-f", "wav", os.fspath(temp)], "stretching speech", stdin=wav)  # fmt: skip


def trim_wav(path: str | os.PathLike, seconds: float) -> None:
    """Cut a mono 16-bit WAV to at most `seconds` (in place)."""
    with wave.open(os.fspath(path), "rb") as wav:
        rate, frames = wav.getframerate(), wav.getnframes()
        keep = min(frames, max(0, round(seconds * rate)))
        samples = np.frombuffer(wav.readframes(keep), dtype="<i2")
    if keep < frames:
        with replacing(path) as temp:
            _write_mono_pcm16(temp, rate, samples)


def wav_seconds(path: str | os.PathLike) -> float:
    with wave.open(os.fspath(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def hold_audio(
    media_in: str | os.PathLike,
    holds: Sequence[tuple[float, float]],
    out: str | os.PathLike,
    *,
    max_seconds: float | None = None,
) -> list[tuple[float, float]]:
    """The default audio stream of `media_in` with silence inserted where `extend_picture`
    holds its picture (the same holds snap to the same frames), as a WAV: the
    background of a dub whose picture is extended. Returns the holds as made.
    `max_seconds` (the job's paid duration) bounds what is taken of `media_in`."""
    media_in = os.fspath(media_in)
    fps, frames, audio = _video_layout(media_in, max_seconds)
    if audio is None:
        raise FfmpegError(f"{media_in} has no audio stream", None)
    cuts = _hold_cuts(holds, fps, frames)
    graph = _hold_graph(cuts, fps, audio, picture=False, end_frame=None if max_seconds is None else frames)
    with replacing(out) as temp:
        run([*_read(max_seconds), "-i", media_in, "-filter_complex", graph, "-map", "[a]",
             "-c:a", "pcm_s16le", "-rf64", "auto", "-f", "wav", os.fspath(temp)], f"holding the audio of {media_in}")  # fmt: skip
    return [(float(frame / fps), float(count / fps)) for frame, count in cuts]


def extend_picture(
    video_in: str | os.PathLike,
    holds: Sequence[tuple[float, float]],
    out: str | os.PathLike,
    *,
    max_seconds: float | None = None,
) -> list[tuple[float, float]]:
    """`video_in` made longer by holding its picture: for each `(at_s, extra_s)` the frame
    ending at `at_s` stays on screen `extra_s` longer, and the audio (if any) gets as
    much silence at the same point, so what follows stays in sync with itself.

    The extend_video fit policy: a dubbed line that cannot be made to fit its segment
    gets picture time instead. Positions snap to the nearest frame boundary and lengths
    to whole frames, cumulatively, so the output is longer by the sum of `extra_s`
    within half a frame. Returns the holds as made, `(at_s, extra_s)` on the source's
    timeline, for placing the dubbed speech on the new one. A hold at 0 s or at the end
    holds the first frame or the last but one (a hold needs a frame before it and
    trimming needs one after).

    This re-encodes the video (H.264, CRF 18) and the audio (AAC): a frozen frame
    cannot be made by copying packets. Mux the result with `mux_video`, which then
    copies this new stream.

    `max_seconds` (the job's paid duration) bounds what is taken of `video_in`: the
    output is that plus the holds.
    """
    video_in = os.fspath(video_in)
    fps, frames, audio = _video_layout(video_in, max_seconds)
    cuts = _hold_cuts(holds, fps, frames)
    graph = _hold_graph(cuts, fps, audio, end_frame=None if max_seconds is None else frames)
    outputs = ["-map", "[v]", *_X264] + (["-map", "[a]", "-c:a", "aac", "-b:a", "192k"] if audio else [])
    with replacing(out) as temp:
        run([*_read(max_seconds), "-i", video_in, "-filter_complex", graph, *outputs, "-movflags", "+faststart", "-f", "mp4",
             os.fspath(temp)], f"holding the picture of {video_in}")  # fmt: skip
    return [(float(frame / fps), float(count / fps)) for frame, count in cuts]


# --------------------------------------------------------------------------- helpers


def _read_mono_pcm16(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    with wave.open(os.fspath(path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, sample_rate):
            raise ValueError(
                f"{path} is {wav.getnchannels()} channel(s) of {8 * wav.getsampwidth()}-bit audio at "
                f"{wav.getframerate()} Hz; the voice track takes mono 16-bit at {sample_rate} Hz"
            )
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int32)


def _write_mono_pcm16(path: Path, sample_rate: int, samples: np.ndarray) -> None:
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def _duck_depth(voice: str | os.PathLike) -> np.ndarray:
    """How far to duck the original, 0 to 1, at _ENVELOPE_RATE over the voice track: 1 where
    the voice speaks (pauses under DUCK_HOLD_S bridged), ramping linearly to 0 over
    DUCK_RAMP_S on either side of each line.

    A stream multiplied in rather than a volume expression of t: ffmpeg's expression
    parser refuses a few hundred terms, and a feature film has a thousand lines."""
    with wave.open(os.fspath(voice), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        if wav.getsampwidth() != 2:
            raise ValueError(f"{voice} is not 16-bit PCM")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, channels)
    blocks = -(-len(samples) * _ENVELOPE_RATE // rate)
    # Block k starts at sample k * rate / 100 exactly: 22050 Hz has no whole number of samples per block.
    starts = np.arange(blocks) * rate // _ENVELOPE_RATE
    peaks = np.maximum.reduceat(np.abs(samples.astype(np.int32)).max(axis=1), starts) if blocks else np.zeros(0)
    loud = peaks > _VOICE_FLOOR * 32768

    spans: list[tuple[float, float]] = []
    for block in np.flatnonzero(loud):
        start, end = block / _ENVELOPE_RATE, (block + 1) / _ENVELOPE_RATE
        if spans and start - spans[-1][1] < DUCK_HOLD_S:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    t = np.arange(blocks + round(DUCK_RAMP_S * _ENVELOPE_RATE)) / _ENVELOPE_RATE
    depth = np.zeros(len(t))
    for span_start, span_end in spans:
        lo, hi = (max(0, int((span_start - DUCK_RAMP_S) * _ENVELOPE_RATE)), int((span_end + DUCK_RAMP_S) * _ENVELOPE_RATE) + 1)
        ramps = np.minimum(t[lo:hi] - (span_start - DUCK_RAMP_S), (span_end + DUCK_RAMP_S) - t[lo:hi]) / DUCK_RAMP_S
        depth[lo:hi] = np.maximum(depth[lo:hi], np.clip(ramps, 0, 1))
    return depth


def _mix_format() -> str:
    return f"aformat=sample_fmts=fltp:sample_rates={MIX_SAMPLE_RATE}:channel_layouts={MIX_LAYOUT}"


def _measure_loudness(inputs: list[str], graph: str, what: str, stdin: bytes | None) -> dict[str, float] | None:
    """The first pass: the mix's loudness as loudnorm's second pass takes it, or None for a silent mix.

    Measured with the ebur128 filter, which implements the same EBU R128 meter as
    loudnorm's own first pass at a seventh of its cost (loudnorm analyses at 192 kHz)."""
    stderr = run([*inputs, "-filter_complex", f"{graph},ebur128=peak=true:framelog=quiet[out]", "-map", "[out]",
                  "-f", "null", "-"], f"measuring the loudness of {what}", stdin=stdin)  # fmt: skip
    summary = re.search(
        r"Summary:.*?I:\s+(?P<i>\S+) LUFS\s+Threshold:\s+(?P<thresh>\S+) LUFS"
        r".*?LRA:\s+(?P<lra>\S+) LU.*?Peak:\s+(?P<tp>\S+) dBFS",
        stderr,
        re.DOTALL,
    )
    if not summary:
        raise FfmpegError(f"{what}: ebur128 printed no summary", stderr.encode())
    measured = {key: float(value) for key, value in summary.groupdict().items()}
    # The meter's floor: a mix that is all silence has no loudness to correct.
    return measured if measured["i"] > _SILENT_LUFS else None


def _loudnorm(target_lufs: float, measured: dict[str, float]) -> str:
    return (
        f"loudnorm=I={target_lufs}:TP={TRUE_PEAK_DBTP}:LRA={LOUDNESS_RANGE_LU}"
        f":measured_I={measured['i']}:measured_TP={measured['tp']}"
        f":measured_LRA={measured['lra']}:measured_thresh={measured['thresh']}:linear=true"
    )


def _filter_value(value: str) -> str:
    """`value` escaped for a filter option inside -vf/-filter_complex: ffmpeg unescapes
    twice, once splitting the graph, once splitting the filter's options."""
    for special in "\\':":
        value = value.replace(special, "\\" + special)
    for special in "\\'[],;":
        value = value.replace(special, "\\" + special)
    return value


def _codec_name(path: str, stream: int) -> str:
    with av.open(path, metadata_errors="ignore") as container:
        return container.streams[stream].codec_context.name


def _read(max_seconds: float | None) -> list[str]:
    """Input options that stop reading soon after `max_seconds` (to save work; the cuts are the filters')."""
    return [] if max_seconds is None else ["-t", read_seconds(max_seconds)]


def _video_layout(path: str, max_seconds: float | None = None) -> tuple[Fraction, int, tuple[int, int] | None]:
    """The first video stream's frame rate and frame count (of the first `max_seconds`, when
    given, rather than the header's), and (index, sample rate) of the default audio stream if any."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise FfmpegError(f"{path} is not readable media ({exc})", None) from None
    with container:
        if not container.streams.video:
            raise FfmpegError(f"{path} has no video stream", None)
        video = container.streams.video[0]
        fps = video.average_rate or video.guessed_rate
        assert fps is not None, f"ffmpeg knows no frame rate of {path}'s video"
        if max_seconds is not None:
            frames = round(max_seconds * fps)
        else:
            frames = video.frames or round(float(container.duration or 0) / av.time_base * fps)
        audio = None
        if container.streams.audio:
            stream = default_audio_stream(path)
            audio = (stream, cast(av.AudioStream, container.streams[stream]).rate)  # the index of an audio stream
    return fps, frames, audio


def _hold_cuts(holds: Sequence[tuple[float, float]], fps: Fraction, frames: int) -> list[tuple[int, int]]:
    """The holds as (frame boundary, frames to add there), in order, one per boundary."""
    cuts: list[tuple[int, int]] = []
    wanted = 0.0
    added = 0
    for at_s, extra_s in sorted(holds):
        if extra_s <= 0 or at_s < 0:
            raise ValueError(f"a hold needs a position of 0 s or more and a positive length, not ({at_s}, {extra_s})")
        wanted += extra_s
        count = round(wanted * fps) - added  # rounding the running total keeps the sum within half a frame
        boundary = min(max(round(at_s * fps), 1), frames - 1)
        if cuts and cuts[-1][0] == boundary:
            cuts[-1] = (boundary, cuts[-1][1] + count)
        elif count:
            cuts.append((boundary, count))
        added += count
    if not cuts:
        raise ValueError("no hold of a frame or more to insert")
    return cuts


def _hold_graph(
    cuts: Sequence[tuple[int, int]],
    fps: Fraction,
    audio: tuple[int, int] | None,
    *,
    picture: bool = True,
    end_frame: int | None = None,
) -> str:
    """A filtergraph that cuts the picture (and audio) at each boundary, pads each piece
    but the last with its held frames (and silence), and joins the pieces again.
    Without `picture`, only the audio: outputs [a]. The last piece ends at `end_frame`
    (frames and samples counted, not timestamps) when given, else at the input's end."""
    bounds: list[int | None] = [0, *(frame for frame, _ in cuts), end_frame]
    pieces = len(bounds) - 1
    graph = [f"[0:v:0]split={pieces}" + "".join(f"[v{i}]" for i in range(pieces))] if picture else []
    if audio:
        graph.append(f"[0:{audio[0]}]asplit={pieces}" + "".join(f"[a{i}]" for i in range(pieces)))
    joined = []
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        assert start is not None, "only the last bound is open"
        hold = cuts[i][1] if i < len(cuts) else 0
        if picture:
            trim = f"start_frame={start}" + ("" if end is None else f":end_frame={end}")
            pad = f",tpad=stop_mode=clone:stop={hold}" if hold else ""
            graph.append(f"[v{i}]trim={trim},setpts=PTS-STARTPTS{pad}[pv{i}]")
            joined.append(f"[pv{i}]")
        if audio:
            first, last = _samples(start, fps, audio[1]), None if end is None else _samples(end, fps, audio[1])
            trim = f"start_sample={first}" + ("" if last is None else f":end_sample={last}")
            pad = f",apad=pad_len={_samples(hold, fps, audio[1])}" if hold else ""
            graph.append(f"[a{i}]atrim={trim},asetpts=PTS-STARTPTS{pad}[pa{i}]")
            joined.append(f"[pa{i}]")
    graph.append(
        "".join(joined) + f"concat=n={pieces}:v={int(picture)}:a={int(bool(audio))}" + "[v]" * picture + "[a]" * bool(audio)
    )
    return ";".join(graph)


def _samples(frame: int, fps: Fraction, rate: int) -> int:
    return round(frame / fps * rate)
