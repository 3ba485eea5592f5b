"""The dub's stage work without the mesh: what the tts stage writes per segment
(eSpeak NG, the fast voice), and what mix_dub and mux_dub make of it (real
ffmpeg on a few seconds of media made here).

The tts stage reads and writes its blobs through `RemoteBlobs` in the mesh; here
an in-memory stand-in with the same two methods takes its place (the
integration tests run the real path).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from google.protobuf import duration_pb2
from octavia.jobs.v1 import jobs_pb2 as P
from octavia.jobs.v1 import stages_pb2 as R
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime import fit
from octavia_runtime.config import load
from octavia_runtime.stages import StageContext
from services.media import dubbing, mixing
from services.media.ffmpeg import run
from services.tts.engines import Engines
from services.tts.stages import TtsStage
from services.tts.voices import find_voice

RATE = 22050


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(round(seconds * 1e6))
    return d


def translation(*segments: tuple[float, float, str], duration: float) -> transcribe_pb2.Transcript:
    transcript = transcribe_pb2.Transcript(language="pt", duration=_duration(duration))
    for i, (start, end, text) in enumerate(segments):
        transcript.segments.add(
            index=i, start_offset=_duration(start), end_offset=_duration(end), text=text, source_text=f"en {i}"
        )
    return transcript


class MemoryBlobs:
    """RemoteBlobs' two methods over a dict."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs
        self.fetched: list[str] = []

    async def fetch(self, ref, path: Path) -> Path:
        self.fetched.append(ref.key)
        path.write_bytes(self.blobs[ref.key])
        return path

    async def store(self, ref, path: Path):
        self.blobs[ref.key] = path.read_bytes()
        stored = R.ArtifactRef()
        stored.CopyFrom(ref)
        stored.size_bytes = len(self.blobs[ref.key])
        return stored


def tts_task(index: int, cap: float = 1.3) -> R.StageTask:
    task = R.StageTask(task_id=f"j/tts/pt/{index}/1", job="jobs/j", stage=P.STAGE_TTS, language="pt", segment_index=index)
    task.inputs.add(role=R.ARTIFACT_ROLE_TRANSLATION, key="jobs/j/translate/pt/translation.pb")
    task.outputs.add(role=R.ARTIFACT_ROLE_SPEECH_SEGMENT, key=f"jobs/j/tts/pt/speech_segment.{index:05d}.pb", segment_index=index)
    task.tts.voice, task.tts.language, task.tts.max_speaking_rate = "voices/espeak-pt-br", "pt", cap
    return task


async def speak(stage: TtsStage, blobs: MemoryBlobs, index: int) -> tuple[R.SynthesizedSpeech, R.TtsResult]:
    async def progress(percent: int, message: str) -> None:
        pass

    output = await stage(StageContext(tts_task(index), "tts.octavia", progress))
    return R.SynthesizedSpeech.FromString(blobs.blobs[output.outputs[0].key]), output.result


@pytest.fixture(scope="module")
def engines() -> Engines:
    return Engines(load({}))


async def test_the_tts_stage_speaks_one_segment_faster_only_when_it_must(engines):
    text = "Durante centenas de anos, os marinheiros partiram daqui para explorar o mundo inteiro."
    spoken = translation((0.0, 1.0, "Olá."), (4.0, 5.0, text), (6.5, 8.0, "   "), duration=9.0)
    blobs = MemoryBlobs({"jobs/j/translate/pt/translation.pb": spoken.SerializeToString()})
    stage = TtsStage(engines, blobs)

    relaxed, result = await speak(stage, blobs, 0)  # "Olá." has 4 s until the next segment
    assert relaxed.speaking_rate == 1.0 and result.fits
    assert relaxed.text == "Olá." and relaxed.voice == "voices/espeak-pt-br" and relaxed.segment_index == 0
    with wave.open(io.BytesIO(relaxed.wav)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (1, relaxed.sample_rate_hertz)
        assert wav.getnframes() / wav.getframerate() == pytest.approx(relaxed.duration.ToTimedelta().total_seconds(), abs=1e-3)

    hurried, result = await speak(stage, blobs, 1)  # a long sentence with 2.5 s to fill
    assert 1.0 < hurried.speaking_rate <= 1.3
    assert not result.fits  # the mix stage stretches the rest
    silent, _ = await speak(stage, blobs, 2)  # an empty translation says nothing
    assert silent.wav == b"" and silent.duration.ToTimedelta().total_seconds() == 0
    assert blobs.fetched == ["jobs/j/translate/pt/translation.pb"]  # read once for every segment


async def test_once_it_knows_the_voices_pace_the_tts_stage_speaks_a_tight_segment_once(engines, monkeypatch):
    line = "Os marinheiros partiram daqui para explorar o mundo."
    spoken = translation(*((2.5 * i, 2.5 * i + 2.0, line) for i in range(4)), duration=10.0)
    blobs = MemoryBlobs({"jobs/j/translate/pt/translation.pb": spoken.SerializeToString()})
    stage = TtsStage(engines, blobs)
    espeak = engines.for_voice(find_voice("espeak-pt-br"))
    calls: list[float] = []
    synthesize = espeak.synthesize

    def counted(text, voice, speed=1.0):
        calls.append(speed)
        return synthesize(text, voice, speed)

    monkeypatch.setattr(espeak, "synthesize", counted)
    normal = synthesize(line, find_voice("espeak-pt-br")).duration_s
    assert normal > 2.5 * 1.06  # too long for its 2.5 s slot at the normal rate: it must be sped up

    first, _ = await speak(stage, blobs, 0)
    assert calls == [1.0, first.speaking_rate]  # no pace known yet: spoken, then spoken faster
    calls.clear()
    for index in (1, 2, 3):
        later, _ = await speak(stage, blobs, index)
        assert later.speaking_rate > 1.0
    assert len(calls) == 3  # each spoken once, at a rate chosen beforehand


async def test_the_tts_stage_refuses_a_segment_the_translation_does_not_have(engines):
    blobs = MemoryBlobs({"jobs/j/translate/pt/translation.pb": translation((0, 1, "Olá."), duration=2).SerializeToString()})
    with pytest.raises(Exception, match="segment 3 is not in the translation"):
        await speak(TtsStage(engines, blobs), blobs, 3)


# --- mix_dub and mux_dub ----------------------------------------------------------------


def _tone_wav(seconds: float, hz: float = 800, rate: int = RATE) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    samples = np.round(0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def speech(index: int, seconds: float, rate: float = 1.0) -> R.SynthesizedSpeech:
    wav = _tone_wav(seconds) if seconds else b""
    return R.SynthesizedSpeech(
        segment_index=index, wav=wav, sample_rate_hertz=RATE, duration=_duration(seconds), speaking_rate=rate
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """6 s of testsrc picture over a quiet 220 Hz tone."""
    path = tmp_path_factory.mktemp("dub") / "source.mp4"
    run(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=6", "-f", "lavfi", "-i", "sine=frequency=220:duration=6",
         "-af", "volume=0.1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], "test source")  # fmt: skip
    return path


def settings(policy=P.FIT_POLICY_KEEP_TIMING, background=0.0, cap=1.3) -> dubbing.DubSettings:
    return dubbing.DubSettings("jobs/j", "pt", 6.0, policy, fit.FitLimits(cap, max(cap, 1.5)), background)


def _onsets(path: Path, threshold: float = 0.05) -> list[float]:
    """Where loud audio starts after at least 0.2 s of quiet (10 ms windows)."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, wav.getnchannels())[:, 0] / 32768
    window = rate // 100
    loud = [np.abs(samples[i : i + window]).max() > threshold for i in range(0, len(samples) - window, window)]
    return [i / 100 for i, on in enumerate(loud) if on and not any(loud[max(0, i - 20) : i])]


def _loud(path: Path, start: float, end: float, threshold: float = 0.05) -> bool:
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        wav.setpos(round(start * rate))
        samples = np.frombuffer(wav.readframes(round((end - start) * rate)), dtype="<i2") / 32768
    return bool(np.abs(samples).max() > threshold)


def test_a_dub_places_each_segment_at_its_start_and_skips_empty_translations(source, tmp_path):
    spoken = translation((0.5, 1.5, "Um."), (2.0, 3.0, ""), (3.5, 4.5, "Três."), duration=6.0)
    report, mixed = dubbing.mix_dub(source, spoken, [speech(0, 0.8), speech(1, 0), speech(2, 1.2)], tmp_path, settings())
    assert [s.skipped for s in report.segments] == [False, True, False]
    assert [s.source_text for s in report.segments] == ["en 0", "en 1", "en 2"]
    assert mixing.wav_seconds(mixed) == pytest.approx(6.0, abs=0.03)
    # Replaced background: the mix is the voice alone, each line on its start.
    assert _onsets(mixed) == pytest.approx([0.5, 3.5], abs=0.011)


def test_speech_too_long_for_its_slot_is_stretched_within_the_cap(source, tmp_path):
    spoken = translation((1.0, 2.0, "Um."), (3.0, 4.0, "Dois."), duration=6.0)
    report, mixed = dubbing.mix_dub(source, spoken, [speech(0, 2.4), speech(1, 0.5)], tmp_path, settings())
    first = report.segments[0]
    assert first.speed_factor == pytest.approx(1.2, abs=1e-6) and first.stretch == pytest.approx(1.2, abs=1e-6)
    assert first.dubbed_end_offset.ToTimedelta().total_seconds() == pytest.approx(3.0, abs=1e-6)
    # The stretched line fills 1.0 to 3.0 s, the next one 3.0 to 3.5 s: one onset, then quiet.
    assert _onsets(mixed) == pytest.approx([1.0], abs=0.011)
    assert _loud(mixed, 2.9, 3.0) and _loud(mixed, 3.0, 3.1) and _loud(mixed, 3.4, 3.48)
    assert not _loud(mixed, 3.52, 6.0)


def test_extend_video_holds_the_picture_and_the_background_under_the_overflow(source, tmp_path):
    spoken = translation((1.0, 2.0, "Um."), (3.0, 4.0, "Dois."), duration=6.0)
    report, mixed = dubbing.mix_dub(
        source, spoken, [speech(0, 3.0), speech(1, 0.5)], tmp_path, settings(P.FIT_POLICY_EXTEND_VIDEO, background=0.25, cap=1.0)
    )
    assert dubbing.holds_of(report) == [(3.0, pytest.approx(1.0, abs=1e-6))]
    assert report.segments[1].dubbed_start_offset.ToTimedelta().total_seconds() == pytest.approx(4.0, abs=1e-6)
    assert mixing.wav_seconds(mixed) == pytest.approx(7.0, abs=0.05)

    out = tmp_path / "dub.mp4"
    dubbing.mux_dub(source, mixed, report, spoken, out, dubbing.MuxSettings("pt", "en", True, True, False, 25.0))
    with av.open(str(out)) as container:
        assert float(container.duration / av.time_base) == pytest.approx(7.0, abs=0.06)
        assert [s.type for s in container.streams] == ["video", "audio", "audio", "subtitle"]


def test_a_dub_keeps_the_picture_bit_for_bit_unless_subtitles_are_burned_in(source, tmp_path):
    spoken = translation((1.0, 2.0, "Um."), duration=6.0)
    report, mixed = dubbing.mix_dub(source, spoken, [speech(0, 0.8)], tmp_path, settings(background=0.25))
    plain, burned = tmp_path / "plain.mp4", tmp_path / "burned.mp4"
    dubbing.mux_dub(source, mixed, report, spoken, plain, dubbing.MuxSettings("pt", "en", False, False, False, 25.0))
    dubbing.mux_dub(source, mixed, report, spoken, burned, dubbing.MuxSettings("pt", "en", False, False, True, 25.0))

    def video_packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(packet) for packet in container.demux(video=0) if packet.size]

    assert video_packets(plain) == video_packets(source)
    assert video_packets(burned) != video_packets(source)
    with av.open(str(burned)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]  # burned in, no subtitle track


def test_subtitles_of_a_dub_follow_the_dubbed_speech():
    spoken = translation((1.0, 2.0, "Um."), (2.5, 3.0, ""), (3.0, 4.0, "Dois."), duration=6.0)
    report = fit.fit([fit.Segment(1.0, 2.0, 2.6), fit.Segment(2.5, 3.0, 0.0), fit.Segment(3.0, 4.0, 0.5)], 6.0).to_message()
    timed = dubbing.dubbed_timing(spoken, report)
    assert [s.text for s in timed.segments] == ["Um.", "Dois."]
    starts = [s.start_offset.ToTimedelta().total_seconds() for s in timed.segments]
    assert starts == [1.0, pytest.approx(report.segments[2].dubbed_start_offset.ToTimedelta().total_seconds())]
