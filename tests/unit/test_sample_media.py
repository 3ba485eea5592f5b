"""The sample media the tests, benchmarks and demo use are what they claim to be."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from scripts.sample_media import (
    DEMO_SENTENCES,
    DEMO_TEXT,
    VIDEO_TAIL_S,
    long_speech,
    not_media,
    sample_audio,
    sample_video,
    silent_audio,
    speech_wav,
    truncated,
    wav_duration,
)


def _streams(path):
    with av.open(str(path)) as container:
        duration = float(container.duration) / av.time_base
        return duration, {s.type: s.codec_context.name for s in container.streams}


def _samples(path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768


def test_the_demo_script_is_plain_spoken_words():
    assert DEMO_TEXT == " ".join(DEMO_SENTENCES)
    assert not any(ch.isdigit() for ch in DEMO_TEXT), "numerals make a transcript differ from the script"


def test_the_sample_video_is_h264_and_aac_as_long_as_the_speech(tmp_path):
    video = sample_video(tmp_path / "sample.mp4")
    speech = wav_duration(speech_wav(DEMO_SENTENCES, tmp_path / "speech.wav"))

    duration, codecs = _streams(video)
    assert codecs == {"video": "h264", "audio": "aac"}
    assert 20 <= speech <= 32, "the demo speaks for 20 to 30 seconds"
    assert duration == pytest.approx(speech + VIDEO_TAIL_S, abs=0.15)
    with av.open(str(video)) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(duration, abs=0.15)


def test_the_speech_is_loud_with_a_pause_between_sentences(tmp_path):
    rate, samples = _samples(speech_wav(DEMO_SENTENCES, tmp_path / "speech.wav", sentence_pause_s=0.4))

    assert np.sqrt(np.mean(samples**2)) > 0.05, "speech, not silence"
    # Silent stretches of 0.35 s or more, in 50 ms windows: one between each two sentences.
    window = rate // 20
    quiet = np.abs(samples[: len(samples) // window * window]).reshape(-1, window).max(axis=1) < 0.01
    runs, run = 0, 0
    for q in quiet:
        run = run + 1 if q else 0
        runs += run == 7
    assert runs >= len(DEMO_SENTENCES) - 1


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "mp3float"), ("m4a", "aac"), ("wav", "pcm_s16le")])
def test_sample_audio_in_each_format(tmp_path, fmt, codec):
    duration, codecs = _streams(sample_audio(tmp_path / f"speech.{fmt}", DEMO_SENTENCES[:2], fmt))
    assert codecs == {"audio": codec}
    assert 3 < duration < 12


def test_long_speech_lasts_exactly_as_asked(tmp_path):
    path = long_speech(tmp_path / "long.wav", 40)
    assert wav_duration(path) == pytest.approx(40, abs=0.01)
    rate, samples = _samples(path)
    assert np.abs(samples[-rate // 10 :]).max() < 0.01, "it ends on silence, not half a word"
    assert np.sqrt(np.mean(samples**2)) > 0.05


def test_silent_audio_is_silent(tmp_path):
    path = silent_audio(tmp_path / "silence.wav", 2.5)
    rate, samples = _samples(path)
    assert len(samples) / rate == pytest.approx(2.5, abs=0.01)
    assert not samples.any()


def test_a_text_file_named_mp4_does_not_decode(tmp_path):
    path = not_media(tmp_path / "clip.mp4")
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path))


def test_a_truncated_video_does_not_open(tmp_path):
    whole = sample_video(tmp_path / "whole.mp4")
    cut = truncated(whole, tmp_path / "cut.mp4", fraction=0.3)
    assert cut.stat().st_size == int(whole.stat().st_size * 0.3)
    with pytest.raises(av.error.FFmpegError):
        av.open(str(cut))
