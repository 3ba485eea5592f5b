"""What a media file holds, read with PyAV (this platform has no ffprobe), and the rules an upload must meet.

`probe(path)` describes a file as a `MediaInfo`, or refuses it as NOT_MEDIA
when it holds no audio or video (a subtitle file is no media here).
Opening a file is not proof enough: a container's header can promise media
its body does not hold, or hold more than it says. So `probe` decodes the
first frames of the main stream (audio, else video) and then demuxes, without
decoding, every packet to the end: the duration it reports, the one jobs are
priced and uploads limited by, is the timeline of the audio and moving-video
packets (earliest start to latest end), not the header's. A header
is only taken where it agrees with the packets to within a codec's delay and
padding, which it knows and packet timestamps do not. A file whose packets end
well before its header says was cut short (an MP4 with its index at the
front, `-movflags +faststart`, that did not arrive whole) and is refused; the
plain truncated MP4 whose index (moov) never arrived does not even open.
Demuxing reads the whole file but decodes nothing: under a second for an
hour of AAC or MP3, a third of one for ten minutes of 30 fps video with sound.

`check_upload(info, max_duration_s)` applies the upload rules on top: an
accepted container, an audio stream, a duration within the limit. Silence is
still media: whether a file has speech is for the job to find out.

Both raise `MediaRejected(reason, message)`. Both block: run them in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
from google.protobuf.duration_pb2 import Duration
from octavia.media.v1 import media_pb2

# The containers an upload may use, keyed by the ffmpeg demuxer that reads them (a demuxer
# reads several related containers: mov,mp4,... reads MP4, M4A and QuickTime alike).
ACCEPTED_FORMATS: Mapping[str, tuple[str, ...]] = {
    "mp3": ("mp3",),
    "wav": ("wav",),
    "aac": ("aac",),
    "flac": ("flac",),
    "ogg": ("ogg", "opus"),
    "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "m4a", "mov"),
    "matroska,webm": ("mkv", "webm"),
}
ACCEPTED_CONTAINERS: tuple[str, ...] = tuple(name for names in ACCEPTED_FORMATS.values() for name in names)

_STREAM_TYPES = {
    "audio": media_pb2.STREAM_TYPE_AUDIO,
    "video": media_pb2.STREAM_TYPE_VIDEO,
    "subtitle": media_pb2.STREAM_TYPE_SUBTITLE,
}
# Enough decoded frames to show the codec really decodes this stream (video may need
# a few packets before its first frame comes out).
_FRAMES_TO_DECODE = 3
_PACKETS_TO_TRY = 64
# Packets ending this much before the header's duration mean the file was cut short:
# 2 s, or a tenth of a shorter file.
_TAIL_S = 2.0
_TAIL_SHARE = 0.1
# A header's duration within this of the packets' is the more exact of the two (it
# accounts for encoder delay and padding, an MP3's ~50 ms, that packet timestamps
# include); further off, the packets are the truth. A header can gain a liar no more.
_HEADER_SLACK_S = 0.25
# The largest picture accepted: 8K. A dub re-encodes the picture when it holds it or burns in
# subtitles, and no H.264 level encodes more (8192x8192 fails in libx264).
MAX_PICTURE_SIDE = 8192
MAX_PICTURE_PIXELS = 8192 * 4320


class MediaRejected(Exception):
    """A file that cannot be used: `reason` is the ErrorInfo reason (NOT_MEDIA, NO_AUDIO_STREAM, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def probe(path: str | os.PathLike) -> media_pb2.MediaInfo:
    """Describe the media file at `path`; MediaRejected(NOT_MEDIA) if it is not decodable media."""
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise MediaRejected("NOT_MEDIA", f"the file is not audio or video ({_why(exc)})") from None
    with container:
        try:
            info = _describe(container)
            main = _main_stream(container)
            if main is None:  # subtitles, a lone cover picture, data
                raise MediaRejected(
                    "NOT_MEDIA", f"the file ({info.format_long_name or info.format_name}) holds no audio or video"
                )
            _settle_durations(info, _measure(container, main))
        except av.FFmpegError as exc:
            raise MediaRejected("NOT_MEDIA", f"the file's media cannot be read ({_why(exc)})") from None
    return info


def check_upload(info: media_pb2.MediaInfo, max_duration_s: int) -> None:
    """The upload rules: MediaRejected(UNSUPPORTED_FORMAT | NO_AUDIO_STREAM | NOT_MEDIA | MEDIA_TOO_LONG | VIDEO_TOO_LARGE)."""
    if info.format_name not in ACCEPTED_FORMATS:
        raise MediaRejected(
            "UNSUPPORTED_FORMAT",
            f"{info.format_long_name or info.format_name} files are not accepted; use one of {', '.join(ACCEPTED_CONTAINERS)}",
        )
    if not any(stream.type == media_pb2.STREAM_TYPE_AUDIO for stream in info.streams):
        raise MediaRejected("NO_AUDIO_STREAM", "the file has no audio stream")
    seconds = _duration_s(info)
    if seconds <= 0:
        raise MediaRejected("NOT_MEDIA", "the file's media lasts no time")
    if seconds > max_duration_s:
        raise MediaRejected(
            "MEDIA_TOO_LONG", f"the media lasts {_clock(seconds)}, more than the limit of {_clock(max_duration_s)}"
        )
    for stream in info.streams:
        if stream.type == media_pb2.STREAM_TYPE_VIDEO and not stream.attached_picture:
            if max(stream.width, stream.height) > MAX_PICTURE_SIDE or stream.width * stream.height > MAX_PICTURE_PIXELS:
                raise MediaRejected(
                    "VIDEO_TOO_LARGE",
                    f"the picture is {stream.width}x{stream.height}; at most 8K ({MAX_PICTURE_SIDE} pixels a side, "
                    f"{MAX_PICTURE_PIXELS:,} in all) can be dubbed or subtitled",
                )


# --------------------------------------------------------------------------- description


def _describe(container: av.container.InputContainer) -> media_pb2.MediaInfo:
    info = media_pb2.MediaInfo(
        format_name=container.format.name,
        format_long_name=container.format.long_name or "",
        bit_rate=container.bit_rate or 0,
    )
    longest = 0.0
    for stream in container.streams:
        described = _describe_stream(stream)
        info.streams.append(described)
        longest = max(longest, described.duration.ToNanoseconds() / 1e9)
    if not longest and container.duration:
        longest = container.duration / av.time_base
    if longest > 0:
        info.duration.CopyFrom(_to_duration(longest))
    return info


def _describe_stream(stream: av.stream.Stream) -> media_pb2.MediaStream:
    context = stream.codec_context
    described = media_pb2.MediaStream(
        index=stream.index,
        type=_STREAM_TYPES.get(stream.type, media_pb2.STREAM_TYPE_DATA),
        # The codec's own name (mp3), not the decoder's (mp3float).
        codec=context.codec.canonical_name if context is not None and context.codec is not None else "",
        bit_rate=(context.bit_rate or 0) if context is not None else 0,
    )
    language = stream.metadata.get("language", "")
    if language and language != "und":
        described.language = language
    if stream.duration and stream.time_base:
        described.duration.CopyFrom(_to_duration(float(stream.duration * stream.time_base)))
    # An audio (video) stream's codec context is an AudioCodecContext (VideoCodecContext).
    if stream.type == "audio":
        audio = cast(av.AudioCodecContext, context)
        described.sample_rate_hertz = audio.sample_rate or 0
        described.channels = audio.channels or 0
        described.channel_layout = audio.layout.name if audio.layout else ""
    elif stream.type == "video":
        video = cast(av.VideoCodecContext, context)
        described.width = video.width or 0
        described.height = video.height or 0
        described.frame_rate = float(stream.average_rate) if stream.average_rate else 0.0
        described.attached_picture = bool(stream.disposition & av.stream.Disposition.attached_pic)
    return described


def _main_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The stream the file is for: its first audio stream, else its first moving video."""
    for stream in container.streams.audio:
        return stream
    for video in container.streams.video:
        if not _is_picture(video):
            return video
    return None


def _is_picture(stream: av.stream.Stream) -> bool:
    """A still picture (cover art) rather than moving video: it has no timeline to measure."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


# --------------------------------------------------------------------------- integrity


@dataclass
class _Span:
    """Where one stream's packets lie on its timeline, in its time base."""

    stream: av.stream.Stream
    first: int | None = None
    end: int | None = None
    # A chained Ogg's next link starts its clock again from 0: what the links before it
    # lasted is added, so the timeline goes on (and a file of 60 one-second links lasts 60 s).
    offset: int = 0
    last: int | None = None
    last_end: int = 0

    def add(self, packet: av.packet.Packet) -> None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.is_discard:  # no time, or not presented (an MP4's AAC priming)
            return
        packet_end = ts + (packet.duration or 0)
        if self.stream.type == "audio":  # audio never reorders: a step back is a new clock
            if self.last is not None and ts < self.last:
                self.offset += self.last_end - ts
            self.last, self.last_end = ts, packet_end
        ts, packet_end = ts + self.offset, packet_end + self.offset
        self.first = ts if self.first is None else min(self.first, ts)
        self.end = packet_end if self.end is None else max(self.end, packet_end)

    def seconds(self) -> tuple[float, float] | None:
        """(start, end) in seconds; the start is ffmpeg's (after a codec's delay) when it is later."""
        if self.first is None or self.end is None:
            return None
        first = max(self.first, self.stream.start_time) if self.stream.start_time is not None else self.first
        base = self.stream.time_base or Fraction(1, av.time_base)
        return float(first * base), float(self.end * base)


def _measure(container: av.container.InputContainer, main: av.stream.Stream) -> dict[int, tuple[float, float]]:
    """Demux every stream from the start to the end, decoding only the main stream's first
    frames (proof that its codec really decodes it); returns the (start, end) in seconds of
    each stream that has timed packets, by index."""
    spans = {stream.index: _Span(stream) for stream in container.streams}
    frames = tried = 0
    for packet in container.demux():
        if packet.size == 0:  # the end-of-stream marker
            continue
        if tried < _PACKETS_TO_TRY and frames < _FRAMES_TO_DECODE and packet.stream_index == main.index:
            frames += len(packet.decode())
            tried += 1
            if tried == _PACKETS_TO_TRY and not frames:
                break
        spans[packet.stream_index].add(packet)
    if frames == 0:
        raise MediaRejected("NOT_MEDIA", f"the file's {main.type} stream does not decode")
    measured = {index: seconds for index, span in spans.items() if (seconds := span.seconds()) is not None}
    if main.index not in measured:
        raise MediaRejected("NOT_MEDIA", f"the file's {main.type} stream holds no data")
    return measured


def _settle_durations(info: media_pb2.MediaInfo, measured: Mapping[int, tuple[float, float]]) -> None:
    """Replace the header's durations (the file's and its audio and video streams') by what
    the packets say, refusing a file whose packets end well before its header.

    The media lasts from the earliest start of its audio and moving video to their latest
    end; subtitles and data count only towards what the header promised (a subtitle track
    may run past the sound, and a header's duration covers it)."""
    claimed = _duration_s(info)
    whole = _length(measured.values())
    if claimed > 0 and whole < claimed - min(_TAIL_S, claimed * _TAIL_SHARE):
        raise MediaRejected(
            "NOT_MEDIA",
            f"the file's media ends after {whole:.1f} s, before the {claimed:.1f} s its header promises (cut short during upload?)",
        )
    timed = [s for s in info.streams if s.index in measured and _is_timed(s)]
    claimed_timed = max((_duration_s(s) for s in timed), default=0.0) or claimed
    info.duration.CopyFrom(_to_duration(_settled(claimed_timed, _length(measured[s.index] for s in timed))))
    for stream in timed:
        first, end = measured[stream.index]
        stream.duration.CopyFrom(_to_duration(_settled(_duration_s(stream), end - first)))


def _is_timed(stream: media_pb2.MediaStream) -> bool:
    return stream.type == media_pb2.STREAM_TYPE_AUDIO or (
        stream.type == media_pb2.STREAM_TYPE_VIDEO and not stream.attached_picture
    )


def _length(spans: Iterable[tuple[float, float]]) -> float:
    spans = list(spans)
    return max(end for _, end in spans) - min(first for first, _ in spans)


def _settled(claimed: float, measured: float) -> float:
    return claimed if abs(claimed - measured) <= _HEADER_SLACK_S else measured


# --------------------------------------------------------------------------- helpers


def _duration_s(described: media_pb2.MediaInfo | media_pb2.MediaStream) -> float:
    return described.duration.ToNanoseconds() / 1e9


def _to_duration(seconds: float | Fraction) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(float(seconds) * 1e9))
    return duration


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _why(exc: av.FFmpegError) -> str:
    # PyAV's message names the file path; the reason is what a client can use.
    return getattr(exc, "strerror", None) or type(exc).__name__
