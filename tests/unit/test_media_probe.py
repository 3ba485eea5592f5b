"""Probing real files made with ffmpeg, the upload rules, and audio extraction."""

from __future__ import annotations

import pytest
from octavia.media.v1 import media_pb2

from services.media import ffmpeg
from services.media.probe import ACCEPTED_CONTAINERS, ACCEPTED_FORMATS, MediaRejected, check_upload, probe
from tests.integration.media_fixtures import SAMPLE_SECONDS

FOUR_HOURS_S = 4 * 3600


def seconds(duration) -> float:
    return duration.ToNanoseconds() / 1e9


def audio_streams(info: media_pb2.MediaInfo) -> list[media_pb2.MediaStream]:
    return [s for s in info.streams if s.type == media_pb2.STREAM_TYPE_AUDIO]


@pytest.mark.parametrize("container", ACCEPTED_CONTAINERS)
def test_a_tone_in_every_accepted_container_is_an_acceptable_upload(media_samples, container):
    info = probe(media_samples / f"tone.{container}")
    assert info.format_name in ACCEPTED_FORMATS
    assert container in ACCEPTED_FORMATS[info.format_name]
    assert seconds(info.duration) == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    (audio,) = audio_streams(info)
    assert audio.codec and audio.sample_rate_hertz in (44100, 48000) and audio.channels == 1
    check_upload(info, FOUR_HOURS_S)


def test_a_video_with_sound_describes_both_streams(media_samples):
    info = probe(media_samples / "video.mp4")
    assert info.format_long_name == "QuickTime / MOV"
    assert info.bit_rate > 0
    video, audio = info.streams
    assert (video.index, video.type, video.codec) == (0, media_pb2.STREAM_TYPE_VIDEO, "h264")
    assert (video.width, video.height, video.frame_rate, video.attached_picture) == (160, 120, 25.0, False)
    assert (audio.index, audio.type, audio.codec) == (1, media_pb2.STREAM_TYPE_AUDIO, "aac")
    assert (audio.sample_rate_hertz, audio.channels, audio.channel_layout) == (44100, 1, "mono")
    assert seconds(audio.duration) == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    check_upload(info, FOUR_HOURS_S)


def test_a_video_without_sound_is_media_but_not_an_upload(media_samples):
    info = probe(media_samples / "video_no_audio.mp4")
    assert [s.type for s in info.streams] == [media_pb2.STREAM_TYPE_VIDEO]
    with pytest.raises(MediaRejected) as refused:
        check_upload(info, FOUR_HOURS_S)
    assert refused.value.reason == "NO_AUDIO_STREAM"


def test_silence_is_still_media(media_samples):
    info = probe(media_samples / "silence.wav")
    check_upload(info, FOUR_HOURS_S)
    assert audio_streams(info)[0].sample_rate_hertz == 16000


def test_a_text_file_named_mp4_is_not_media(media_samples):
    with pytest.raises(MediaRejected) as refused:
        probe(media_samples / "text.mp4")
    assert refused.value.reason == "NOT_MEDIA"


@pytest.mark.parametrize("name", ["truncated_video.mp4", "truncated_video_faststart.mp4"])
def test_a_truncated_mp4_is_not_media(media_samples, name):
    """Cut at 30%: without its index (moov) at the end, or with the index but not the media it points to."""
    with pytest.raises(MediaRejected) as refused:
        probe(media_samples / name)
    assert refused.value.reason == "NOT_MEDIA"


def test_a_recording_without_a_duration_in_its_header_gets_one_by_reading_it(media_samples):
    info = probe(media_samples / "recorded.webm")
    assert seconds(info.duration) == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    check_upload(info, FOUR_HOURS_S)


def test_a_container_outside_the_accepted_list_is_refused(media_samples):
    info = probe(media_samples / "video.avi")
    with pytest.raises(MediaRejected) as refused:
        check_upload(info, FOUR_HOURS_S)
    assert refused.value.reason == "UNSUPPORTED_FORMAT"
    assert "mp3" in refused.value.message


def test_media_longer_than_the_limit_is_refused(media_samples):
    info = probe(media_samples / "tone.mp3")
    check_upload(info, SAMPLE_SECONDS + 1)
    with pytest.raises(MediaRejected) as refused:
        check_upload(info, SAMPLE_SECONDS - 1)
    assert refused.value.reason == "MEDIA_TOO_LONG"
    assert "0:00:01" in refused.value.message


def test_extract_audio_gives_16_khz_mono_pcm_wav(media_samples, tmp_path):
    out = tmp_path / "asr.wav"
    ffmpeg.extract_audio(media_samples / "video.mp4", out)
    info = probe(out)
    (audio,) = info.streams
    assert (info.format_name, audio.codec, audio.sample_rate_hertz, audio.channels) == ("wav", "pcm_s16le", 16000, 1)
    assert seconds(info.duration) == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    assert [p.name for p in tmp_path.iterdir()] == ["asr.wav"]  # no temporary file left


def test_extract_original_audio_keeps_rate_and_channels(media_samples, tmp_path):
    out = tmp_path / "original.wav"
    ffmpeg.extract_original_audio(media_samples / "stereo48k.m4a", out)
    (audio,) = probe(out).streams
    assert (audio.codec, audio.sample_rate_hertz, audio.channels) == ("pcm_s16le", 48000, 2)


def test_extracting_from_a_file_without_sound_fails_clearly(media_samples, tmp_path):
    with pytest.raises(ffmpeg.FfmpegError, match="no audio stream"):
        ffmpeg.extract_audio(media_samples / "video_no_audio.mp4", tmp_path / "out.wav")
    with pytest.raises(ffmpeg.FfmpegError, match="not readable media"):
        ffmpeg.extract_audio(media_samples / "text.mp4", tmp_path / "out.wav")
    assert list(tmp_path.iterdir()) == []


def test_an_ffmpeg_failure_carries_the_end_of_its_stderr(media_samples, tmp_path):
    with pytest.raises(ffmpeg.FfmpegError) as failed:
        ffmpeg.extract_audio(media_samples / "tone.wav", tmp_path / "no-such-folder" / "out.wav")
    assert failed.value.stderr_tail
    assert "ffmpeg said" in str(failed.value)
    assert not (tmp_path / "no-such-folder").exists()


def test_a_subtitle_file_is_not_media(tmp_path):
    srt = tmp_path / "talk.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,500 --> 00:00:02,000\nWorld\n")
    with pytest.raises(MediaRejected) as refused:
        probe(srt)
    assert refused.value.reason == "NOT_MEDIA" and "no audio or video" in refused.value.message


@pytest.mark.parametrize(
    ("width", "height", "ok"), [(7680, 4320, True), (4320, 7680, True), (8192, 8192, False), (16384, 64, False)]
)
def test_a_picture_larger_than_8k_is_refused_at_upload(width, height, ok):
    info = media_pb2.MediaInfo(format_name="matroska,webm")
    info.duration.seconds = 10
    info.streams.add(type=media_pb2.STREAM_TYPE_AUDIO)
    info.streams.add(type=media_pb2.STREAM_TYPE_VIDEO, width=width, height=height)
    info.streams.add(type=media_pb2.STREAM_TYPE_VIDEO, width=10_000, height=10_000, attached_picture=True)  # cover art
    if ok:
        check_upload(info, FOUR_HOURS_S)
    else:
        with pytest.raises(MediaRejected) as refused:
            check_upload(info, FOUR_HOURS_S)
        assert refused.value.reason == "VIDEO_TOO_LARGE"
