"""What a media file holds, read with PyAV (this platform has no ffprobe), and the rules an upload must meet.

`probe(path)` describes a file as a `MediaInfo`, or refuses it as NOT_MEDIA
when it holds no audio or video (a subtitle file is no media here).
Opening a file is not proof enough: a container's header can promise media
its body does not hold. So `probe` also decodes the first frames of the main
stream (audio, else video) and reads a packet near the end the file claims,
which catches an MP4 cut short after its index (`-movflags +faststart`)
as well as the plain truncated MP4 whose index (moov) never arrived.

`check_upload(info, max_duration_s)` applies the upload rules on top: an
accepted container, an audio stream, a duration within the limit. Silence is
still media: whether a file has speech is for the job to find out.

Both raise `MediaRejected(reason, message)`. Both block: run them in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction

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
# How far before the claimed end the tail check reads: 2 s, or a tenth of a shorter file.
_TAIL_S = 2.0
_TAIL_SHARE = 0.1


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
                raise MediaRejected("NOT_MEDIA", f"the file ({info.format_long_name or info.format_name}) holds no audio or video")
            _check_decodes(container, main)
            seconds = _duration_s(info)
            if seconds > 0:
                _check_tail(container, main, seconds)
            else:
                # No duration in the header (a browser's MediaRecorder WebM, for one):
                # the last packet tells it, and reading there proves the body whole.
                info.duration.CopyFrom(_to_duration(_scan_to_end(container, main)))
        except av.FFmpegError as exc:
            raise MediaRejected("NOT_MEDIA", f"the file's media cannot be read ({_why(exc)})") from None
    return info


def check_upload(info: media_pb2.MediaInfo, max_duration_s: int) -> None:
    """The upload rules: MediaRejected(UNSUPPORTED_FORMAT | NO_AUDIO_STREAM | NOT_MEDIA | MEDIA_TOO_LONG)."""
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
    if stream.type == "audio":
        described.sample_rate_hertz = context.sample_rate or 0
        described.channels = context.channels or 0
        described.channel_layout = context.layout.name if context.layout else ""
    elif stream.type == "video":
        described.width = context.width or 0
        described.height = context.height or 0
        described.frame_rate = float(stream.average_rate) if stream.average_rate else 0.0
        described.attached_picture = bool(stream.disposition & av.stream.Disposition.attached_pic)
    return described


def _main_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The stream the file is for: its first audio stream, else its first moving video."""
    for stream in container.streams.audio:
        return stream
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


# --------------------------------------------------------------------------- integrity


def _check_decodes(container: av.container.InputContainer, stream: av.stream.Stream) -> None:
    frames = packets = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the end-of-stream marker
            continue
        frames += len(packet.decode())
        packets += 1
        if frames >= _FRAMES_TO_DECODE or packets >= _PACKETS_TO_TRY:
            break
    if frames == 0:
        raise MediaRejected("NOT_MEDIA", f"the file's {stream.type} stream does not decode")


def _check_tail(container: av.container.InputContainer, stream: av.stream.Stream, seconds: float) -> None:
    start = stream.start_time or 0
    target = start + int((seconds - min(_TAIL_S, seconds * _TAIL_SHARE)) / stream.time_base)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.FFmpegError:
        _scan_to_end(container, stream)  # not seekable: read it all instead
        return
    for packet in container.demux(stream):
        if packet.size:
            packet.decode()
            return
    raise MediaRejected("NOT_MEDIA", "the file ends before its media does (cut short during upload?)")


def _scan_to_end(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Read every packet of `stream` from the start; returns where the last one ends, in seconds."""
    container.seek(0)
    end = None
    for packet in container.demux(stream):
        if packet.size and packet.pts is not None:
            packet_end = packet.pts + (packet.duration or 0)
            end = packet_end if end is None else max(end, packet_end)
    if end is None:
        raise MediaRejected("NOT_MEDIA", f"the file's {stream.type} stream holds no data")
    return float((end - (stream.start_time or 0)) * stream.time_base)


# --------------------------------------------------------------------------- helpers


def _duration_s(info: media_pb2.MediaInfo) -> float:
    return info.duration.ToNanoseconds() / 1e9


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
