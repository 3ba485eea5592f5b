"""Speech synthesis: every engine really speaks, faster on request, and each language gets a sensible default voice.

The models ship in packages (nothing is downloaded); each loads once for the
module. Whisper tiny.en reads the English speech back, so "speaks" means
words a listener recognises, not merely sound.
"""

from __future__ import annotations

import io
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from octavia.tts.v1 import tts_pb2

from octavia_runtime.config import load
from services.transcribe.engine import Transcriber
from services.tts.engines import Engines, EngineUnavailable, KokoroEngine, Speech, SpeedOutOfRange, shared_engines
from services.tts.voices import VOICES, NoVoice, default_voice, find_voice, installed_voices
from tests.unit.test_transcribe_engine import word_error_rate

SENTENCE = "Please bring your notes and a cup of coffee."
ENGLISH_VOICES = ("kokoro-en-us-alpha", "piper-en-us-joe", "espeak-en-us")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    return shared_engines(load({"OCTAVIA_MODELS_DIR": str(models_dir)}))


@pytest.fixture(scope="module")
def spoken(engines):
    """The sentence said by each English voice at normal speed and 1.5 times faster, synthesized once."""
    cache: dict[tuple[str, float], Speech] = {}

    def say(voice: str, speed: float = 1.0) -> Speech:
        if (voice, speed) not in cache:
            cache[(voice, speed)] = engines.synthesize(SENTENCE, find_voice(voice), speed)
        return cache[(voice, speed)]

    return say


def rms(speech: Speech) -> float:
    return float(np.sqrt(np.mean(np.square(speech.samples))))


@pytest.mark.parametrize("voice", ENGLISH_VOICES)
def test_each_engine_speaks_a_sentence_at_its_sample_rate(spoken, voice):
    speech = spoken(voice)
    assert speech.sample_rate == find_voice(voice).engine_type.sample_rate
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    # Nine words said at a normal pace take two to four seconds.
    assert 1.5 < speech.duration_s < 5.0, speech.duration_s
    assert rms(speech) > 0.02 and np.all(np.abs(speech.samples) <= 1.0)


@pytest.mark.parametrize("voice", ENGLISH_VOICES)
def test_a_faster_speaking_rate_makes_speech_shorter(spoken, voice):
    normal, faster = spoken(voice), spoken(voice, 1.5)
    assert faster.duration_s < 0.8 * normal.duration_s
    assert rms(faster) > 0.02


@pytest.mark.parametrize("voice", ("kokoro-en-us-alpha", "piper-en-us-joe"))
def test_whisper_reads_the_neural_voices_back_word_for_word(spoken, models_dir, voice):
    transcriber = Transcriber(load({"OCTAVIA_MODELS_DIR": str(models_dir)}))
    transcript = transcriber.transcribe_clip(spoken(voice).wav(), model="tiny.en", word_timestamps=False)
    heard = " ".join(segment.text for segment in transcript.segments)
    assert word_error_rate(SENTENCE, heard) <= 0.2, heard


def test_kokoro_speaks_portuguese_and_chinese(engines):
    for voice, text in (("kokoro-pt-br-kumo", "Bom dia, o parque está fechado hoje."), ("kokoro-zh-alpha", "今天公园关门了。")):
        speech = engines.synthesize(text, find_voice(voice))
        assert speech.duration_s > 1.0 and rms(speech) > 0.02, voice


def test_every_espeak_voice_speaks(engines):
    for voice in installed_voices():
        if voice.engine == tts_pb2.ENGINE_ESPEAK:
            speech = engines.synthesize("1 2 3", voice)
            assert speech.duration_s > 0.5 and rms(speech) > 0.02, voice.name


def test_threads_synthesizing_at_once_each_get_their_own_speech(engines):
    """libespeak-ng keeps global state: without the engine's lock the threads' audio would mix."""
    voice = find_voice("espeak-en-us")
    alone = engines.synthesize(SENTENCE, voice).duration_s
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: engines.synthesize(SENTENCE, voice).duration_s, range(4)))
    # eSpeak's output varies by a few milliseconds from one call to the next.
    assert together == pytest.approx([alone] * 4, rel=0.05)


def test_a_speaking_rate_outside_the_engines_range_is_refused(engines):
    with pytest.raises(SpeedOutOfRange, match="0.5 to 2"):
        engines.synthesize(SENTENCE, find_voice("piper-en-us-joe"), 3.0)


def test_models_load_once_per_process_and_kokoro_is_joined_under_the_models_folder(engines, spoken, models_dir):
    spoken("kokoro-en-us-alpha")
    kokoro = engines.for_voice(find_voice("kokoro-en-us-alpha"))
    model = kokoro._model
    engines.synthesize("Again.", find_voice("kokoro-en-us-alpha"))
    assert kokoro.is_loaded() and kokoro._model is model
    assert shared_engines(load({"OCTAVIA_MODELS_DIR": str(models_dir)})) is engines
    assert (models_dir / "kokoro" / "kokoro-v1.0.int8.onnx").stat().st_size > 90_000_000


def test_a_worker_may_keep_each_synthesis_to_one_thread(models_dir):
    engines = Engines(load({"OCTAVIA_MODELS_DIR": str(models_dir), "OCTAVIA_TTS_THREADS": "1"}))
    voice = find_voice("kokoro-pt-br-alpha")
    assert engines.synthesize("Olá.", voice).duration_s > 0.2
    options = engines.for_voice(voice)._model.sess.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_a_model_that_does_not_load_is_reported_once_and_not_retried(tmp_path, monkeypatch):
    engines = Engines(load({"OCTAVIA_MODELS_DIR": str(tmp_path)}))
    attempts = []

    def broken(self):
        attempts.append(1)
        raise OSError("model.onnx: no such file")

    monkeypatch.setattr(KokoroEngine, "_load", broken)
    voice = find_voice("kokoro-en-us-alpha")
    for _ in range(2):
        with pytest.raises(EngineUnavailable, match="kokoro.*model.onnx: no such file"):
            engines.synthesize(SENTENCE, voice)
    assert len(attempts) == 1 and engines.for_voice(voice).failure is not None


def test_speech_is_written_as_16_bit_mono_wav():
    speech = Speech(np.array([0.0, 0.5, -1.0, 2.0], dtype=np.float32), 24000)
    with wave.open(io.BytesIO(speech.wav())) as file:
        assert (file.getnchannels(), file.getsampwidth(), file.getframerate(), file.getnframes()) == (1, 2, 24000, 4)
        assert np.frombuffer(file.readframes(4), "<i2").tolist() == [0, 16383, -32767, 32767]


def test_the_default_voice_is_kokoro_where_it_speaks_the_language_else_espeak():
    """Kokoro's speakers are listed female first: the default is the first of the catalogue."""
    assert default_voice("en").name == "kokoro-en-us-alpha"
    assert default_voice("pt").name == default_voice("pt-BR").name == "kokoro-pt-br-alpha"
    assert default_voice("pt-PT").name == "kokoro-pt-br-alpha"  # natural beats the right region
    assert default_voice("en-GB").name == "kokoro-en-us-alpha"
    assert default_voice("de").name == "espeak-de"
    assert default_voice("zh").name == "kokoro-zh-alpha"


def test_without_kokoro_english_defaults_to_piper(monkeypatch):
    monkeypatch.setattr(KokoroEngine, "installed", classmethod(lambda cls: False))
    assert default_voice("en-US").name == "piper-en-us-joe"
    assert find_voice("kokoro-en-us-alpha") is None


def test_a_language_without_a_voice_is_named_in_the_error():
    with pytest.raises(NoVoice, match="'tlh'"):
        default_voice("tlh")


def test_voice_names_are_unique_and_tags_match_their_region():
    assert len({voice.name for voice in VOICES}) == len(VOICES)
    voice = find_voice("espeak-pt-pt")
    assert voice.speaks("pt") and voice.speaks("pt-PT") and not voice.speaks("pt-BR")
