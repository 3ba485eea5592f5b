"""The dub sounds and plays as promised: speech lands on its sample, the original
ducks under it, the loudness meets EBU R128, and the MP4 keeps the source's
picture bit for bit beside the dubbed, original and subtitle tracks.

Real ffmpeg on media of a few seconds, made here or by scripts/sample_media.
"""

from __future__ import annotations

import hashlib
import re
import wave

import av
import numpy as np
import pytest

from octavia_runtime.languages import three_letter_code
from scripts.sample_media import sample_video
from services.media.ffmpeg import run
from services.media.mixing import (
    MIX_SAMPLE_RATE,
    VoiceSegment,
    encode_audio,
    extend_picture,
    mix,
    mux_video,
    voice_track,
)

VOICE_RATE = 22050  # Piper's; no whole number of samples per 10 ms
ORIGINAL_RATE = 44100
BACKGROUND_HZ = 220
VOICE_HZ = 1000
SUBTITLES = "1\n00:00:00,200 --> 00:00:02,000\nO rio corre para o oceano.\n"


def _write_wav(path, rate, samples, channels=1):
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def _read_wav(path) -> tuple[int, np.ndarray]:
    """Rate and samples (frames x channels) as floats in [-1, 1]."""
    with wave.open(str(path), "rb") as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, wav.getnchannels())
        return wav.getframerate(), data.astype(np.float64) / 32768


def _tone(hz, seconds, rate, amplitude):
    t = np.arange(round(seconds * rate)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _amplitude(samples, rate, hz, start_s, end_s):
    """The amplitude of the `hz` sine in the first channel between the two times."""
    window = samples[round(start_s * rate) : round(end_s * rate), 0]
    spectrum = np.abs(np.fft.rfft(window)) * 2 / len(window)
    return spectrum[round(hz * len(window) / rate)]


def _integrated_loudness(path) -> float:
    summary = run(["-i", str(path), "-af", "ebur128", "-f", "null", "-"], "measuring loudness").rsplit("Summary:", 1)[1]
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))


def _video_packets_digest(path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                digest.update(bytes(packet))
    return digest.hexdigest()


def _duration(path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration) / av.time_base


@pytest.fixture
def original(tmp_path):
    """Four seconds of a steady stereo hum, the 'original soundtrack'."""
    hum = _tone(BACKGROUND_HZ, 4.0, ORIGINAL_RATE, 0.3)
    return _write_wav(tmp_path / "original.wav", ORIGINAL_RATE, np.repeat(hum, 2), channels=2)


@pytest.fixture
def voice(tmp_path):
    """A voice track as long as the original with one 'line', a tone, from 1.5 s to 2.5 s."""
    line = _write_wav(tmp_path / "line.wav", VOICE_RATE, _tone(VOICE_HZ, 1.0, VOICE_RATE, 0.5))
    track = tmp_path / "voice.wav"
    voice_track([VoiceSegment(1.5, line)], VOICE_RATE, 4.0, track)
    return track


@pytest.fixture(scope="module")
def source_video(tmp_path_factory):
    return sample_video(tmp_path_factory.mktemp("video") / "source.mp4", "The river flows into the ocean.")


# --------------------------------------------------------------------------- voice track


def test_each_line_starts_on_the_exact_sample_of_its_start_time(tmp_path):
    click = np.zeros(100, dtype=np.int16)
    click[0] = 20000
    line = _write_wav(tmp_path / "click.wav", 22050, click)
    starts = [0.5, 1.23456, 2.0001]

    voice_track([VoiceSegment(s, line) for s in starts], 22050, 3.0, tmp_path / "track.wav")

    rate, samples = _read_wav(tmp_path / "track.wav")
    assert rate == 22050 and len(samples) == round(3.0 * 22050)
    assert np.flatnonzero(samples[:, 0]).tolist() == [round(s * 22050) for s in starts]


def test_a_line_is_never_cut_short_or_resampled_silently(tmp_path):
    line = _write_wav(tmp_path / "line.wav", 22050, np.ones(22050, dtype=np.int16))
    with pytest.raises(ValueError, match="outside the track"):
        voice_track([VoiceSegment(2.5, line)], 22050, 3.0, tmp_path / "track.wav")
    with pytest.raises(ValueError, match="mono 16-bit at 24000 Hz"):
        voice_track([VoiceSegment(0.0, line)], 24000, 3.0, tmp_path / "track.wav")
    assert not (tmp_path / "track.wav").exists()


# --------------------------------------------------------------------------- mix


def test_the_original_is_ducked_while_the_new_voice_speaks(tmp_path, original, voice):
    mix(original, voice, tmp_path / "mix.wav", background_level=0.2, target_lufs=None)

    rate, samples = _read_wav(tmp_path / "mix.wav")
    assert rate == MIX_SAMPLE_RATE and samples.shape[1] == 2
    assert abs(len(samples) / rate - 4.0) < 0.01
    alone = _amplitude(samples, rate, BACKGROUND_HZ, 0.5, 1.0)
    under_voice = _amplitude(samples, rate, BACKGROUND_HZ, 1.75, 2.25)
    after = _amplitude(samples, rate, BACKGROUND_HZ, 3.0, 3.5)
    assert under_voice / alone == pytest.approx(0.2, abs=0.02)
    assert after == pytest.approx(alone, rel=0.02)
    assert _amplitude(samples, rate, VOICE_HZ, 1.75, 2.25) > 5 * under_voice


def test_the_duck_stays_on_time_in_a_long_programme(tmp_path):
    hum = _tone(BACKGROUND_HZ, 62.0, ORIGINAL_RATE, 0.3)
    original = _write_wav(tmp_path / "original.wav", ORIGINAL_RATE, hum)
    line = _write_wav(tmp_path / "line.wav", VOICE_RATE, _tone(VOICE_HZ, 1.0, VOICE_RATE, 0.5))
    voice_track([VoiceSegment(60.0, line)], VOICE_RATE, 62.0, tmp_path / "voice.wav")

    mix(original, tmp_path / "voice.wav", tmp_path / "mix.wav", background_level=0.2, target_lufs=None)

    rate, samples = _read_wav(tmp_path / "mix.wav")
    alone = _amplitude(samples, rate, BACKGROUND_HZ, 30.0, 30.5)
    just_before = _amplitude(samples, rate, BACKGROUND_HZ, 59.35, 59.85)
    under_voice = _amplitude(samples, rate, BACKGROUND_HZ, 60.0, 60.5)
    assert just_before == pytest.approx(alone, rel=0.02)
    assert under_voice / alone == pytest.approx(0.2, abs=0.02)


def test_level_zero_replaces_the_original_entirely(tmp_path, original, voice):
    mix(original, voice, tmp_path / "mix.wav", background_level=0, target_lufs=None)

    rate, samples = _read_wav(tmp_path / "mix.wav")
    assert abs(len(samples) / rate - 4.0) < 0.01
    assert _amplitude(samples, rate, BACKGROUND_HZ, 0.5, 1.0) < 1e-3
    assert _amplitude(samples, rate, VOICE_HZ, 1.75, 2.25) > 0.1


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_the_mix_lands_on_the_loudness_target(tmp_path, original, voice, target):
    mix(original, voice, tmp_path / "mix.wav", target_lufs=target)

    assert _integrated_loudness(tmp_path / "mix.wav") == pytest.approx(target, abs=1.5)


def test_a_mix_of_silence_stays_silent(tmp_path):
    silence = _write_wav(tmp_path / "silence.wav", ORIGINAL_RATE, np.zeros(2 * ORIGINAL_RATE, dtype=np.int16))
    voice_track([], VOICE_RATE, 2.0, tmp_path / "voice.wav")

    mix(silence, tmp_path / "voice.wav", tmp_path / "mix.wav")

    rate, samples = _read_wav(tmp_path / "mix.wav")
    assert abs(len(samples) / rate - 2.0) < 0.01 and not samples.any()


@pytest.mark.parametrize(("fmt", "codec"), [("m4a", "aac"), ("mp3", "mp3")])
def test_the_mix_encodes_to_a_file_that_decodes(tmp_path, original, voice, fmt, codec):
    mix(original, voice, tmp_path / "mix.wav")

    encode_audio(tmp_path / "mix.wav", tmp_path / f"dub.{fmt}", fmt, language="pt-BR")

    with av.open(str(tmp_path / f"dub.{fmt}")) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.codec.canonical_name == codec
        assert {**container.metadata, **stream.metadata}.get("language") == "por"
        decoded = sum(frame.samples for frame in container.decode(stream)) / stream.rate
    assert decoded == pytest.approx(4.0, abs=0.1)


def test_languages_are_tagged_with_the_codes_mp4_stores():
    assert [three_letter_code(c) for c in ("pt", "pt-BR", "es", "zh-Hans", "ast", "xx")] == [
        "por",
        "por",
        "spa",
        "zho",
        "ast",
        "und",
    ]


# --------------------------------------------------------------------------- video


def test_the_dubbed_video_keeps_the_picture_and_carries_every_track(tmp_path, source_video):
    duration = _duration(source_video)
    line = _write_wav(tmp_path / "line.wav", VOICE_RATE, _tone(VOICE_HZ, 1.0, VOICE_RATE, 0.5))
    voice_track([VoiceSegment(0.3, line)], VOICE_RATE, duration, tmp_path / "voice.wav")
    mix(source_video, tmp_path / "voice.wav", tmp_path / "mix.wav")
    (tmp_path / "pt.srt").write_text(SUBTITLES)

    mux_video(source_video, tmp_path / "mix.wav", tmp_path / "dub.mp4", language="pt", original_audio=True,
              original_language="en", subtitles=(tmp_path / "pt.srt", "pt"))  # fmt: skip

    assert _video_packets_digest(tmp_path / "dub.mp4") == _video_packets_digest(source_video)
    assert _duration(tmp_path / "dub.mp4") == pytest.approx(duration, abs=0.05)
    with av.open(str(tmp_path / "dub.mp4")) as container:
        streams = [(s.type, s.metadata.get("language"), bool(s.disposition & av.stream.Disposition.default))
                   for s in container.streams]  # fmt: skip
    assert streams == [("video", "und", True), ("audio", "por", True), ("audio", "eng", False), ("subtitle", "por", True)]


def test_subtitles_burned_in_are_drawn_with_the_shipped_font(tmp_path, source_video):
    (tmp_path / "pt.srt").write_text(SUBTITLES)

    mux_video(source_video, source_video, tmp_path / "burned.mp4", language="pt", burn_in=tmp_path / "pt.srt")

    source, burned = _frame_at(source_video, 1.0), _frame_at(tmp_path / "burned.mp4", 1.0)
    height = source.shape[0]
    bottom = np.abs(source[-height // 4 :] - burned[-height // 4 :]).mean()
    top = np.abs(source[: height // 2] - burned[: height // 2]).mean()
    assert bottom > 4 * top and bottom > 3, "the subtitle's text is not on the picture"
    assert _duration(tmp_path / "burned.mp4") == pytest.approx(_duration(source_video), abs=0.05)


def test_holding_the_picture_lengthens_it_by_the_requested_time(tmp_path, source_video):
    made = extend_picture(source_video, [(1.21, 0.32), (0.48, 0.4)], tmp_path / "longer.mp4")

    assert [value for hold in made for value in hold] == pytest.approx([0.48, 0.4, 1.2, 0.32])
    before, after = _frames(source_video), _frames(tmp_path / "longer.mp4")
    assert len(after) == len(before) + round(0.72 * 25)
    held = after[11 : 11 + 11]  # frame 11, the one ending at 0.48 s, shown 1 + 10 frames
    assert all(np.abs(frame - before[11]).mean() < 1.0 for frame in held)
    assert np.abs(after[22] - before[12]).mean() < 1.0, "the picture goes on where it stopped"
    with av.open(str(tmp_path / "longer.mp4")) as container:
        audio = container.streams.audio[0]
        audio_s = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    with av.open(str(source_video)) as container:
        audio = container.streams.audio[0]
        source_audio_s = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    assert audio_s == pytest.approx(source_audio_s + 0.72, abs=0.05)


def test_a_silent_picture_is_held_too_and_holds_at_one_place_add_up(tmp_path):
    video = tmp_path / "silent.mp4"
    run(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-t", "1", "-c:v", "libx264", "-f", "mp4", str(video)], "test")

    made = extend_picture(video, [(0.4, 0.2), (0.41, 0.2)], tmp_path / "longer.mp4")

    assert [value for hold in made for value in hold] == pytest.approx([0.4, 0.4])
    assert len(_frames(tmp_path / "longer.mp4")) == 25 + 10
    with av.open(str(tmp_path / "longer.mp4")) as container:
        assert not container.streams.audio


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray").astype(np.float64) for frame in container.decode(video=0)]


def _frame_at(path, seconds) -> np.ndarray:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time >= seconds:
                return frame.to_ndarray(format="gray").astype(np.float64)
    raise AssertionError(f"{path} ends before {seconds} s")
