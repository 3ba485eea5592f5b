"""Coqui TTS: an operator's model folder becomes a voice, loads once, speaks at its own rate and speed.

The model is a tiny VITS built here with random weights (character-based, no
phonemizer) and saved with Coqui's own routines, so it babbles noise: these
tests check the code path, not the voice. They need the `coqui` extra and
skip without it; the checks of a missing or unusable folder run everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from octavia.tts.v1 import tts_pb2

from octavia_runtime.config import load
from services.tts.engines import CoquiEngine, Engines, EngineUnavailable
from services.tts.voices import VOICES, VoiceSpec, coqui_voices, default_voice, find_voice, installed_voices

SAMPLE_RATE = 16000  # not the 22050 a Coqui config defaults to, so the model's own rate shows
TEXT = "ola, tudo bem com voce hoje"


def tiny_vits(folder: Path) -> Path:
    """A VITS model of about 200k random weights speaking characters, as Coqui's trainer saves one."""
    pytest.importorskip("TTS", reason="the coqui extra (coqui-tts) is not installed")
    from trainer.io import save_model
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    args = VitsArgs(
        hidden_channels=8, hidden_channels_ffn_text_encoder=16, num_heads_text_encoder=1, num_layers_text_encoder=1,
        num_layers_flow=1, num_layers_posterior_encoder=1, upsample_initial_channel_decoder=16,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]], upsample_rates_decoder=[8, 8, 4],
        upsample_kernel_sizes_decoder=[16, 16, 8], spec_segment_size=4, init_discriminator=False,
        use_sdp=False, length_scale=4.0,  # the deterministic duration predictor; see below
    )  # fmt: skip
    characters = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters", pad="_", eos="", bos="", blank=None,
        characters="abcdefghijklmnopqrstuvwxyz", punctuations=" !,.?", phonemes=None, is_unique=True, is_sorted=True,
    )  # fmt: skip
    config = VitsConfig(
        model_args=args, audio=BaseAudioConfig(sample_rate=SAMPLE_RATE, do_trim_silence=False), use_phonemes=False, characters=characters,
        text_cleaner="basic_cleaners", add_blank=False, phoneme_language="pt-br",
    )  # fmt: skip
    model = Vits(config)
    # Every character lasts exactly length_scale frames (exp(0) * 4): twice the speed halves the
    # speech, where random durations under a frame would round up to one frame at any speed.
    model.duration_predictor.proj.weight.data.zero_()
    model.duration_predictor.proj.bias.data.zero_()
    folder.mkdir(parents=True)
    config.save_json(str(folder / "config.json"))
    save_model(config, model, folder / "model.pth", current_step=0, epoch=0)
    return folder


def engines_for(models_dir: Path, coqui_model_dir: Path | str) -> Engines:
    return Engines(load({"OCTAVIA_MODELS_DIR": str(models_dir), "OCTAVIA_COQUI_MODEL_DIR": str(coqui_model_dir)}))


def shipped_voices(language: str) -> list[VoiceSpec]:
    return [voice for voice in installed_voices() if voice.speaks(language) and voice.engine != tts_pb2.ENGINE_COQUI]


@pytest.fixture(autouse=True)
def unconfigure():
    """The configured Coqui model is the process's: leave none behind for other tests."""
    yield
    CoquiEngine.configure("")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_vits(tmp_path_factory.mktemp("coqui") / "Tiny Voice")


@pytest.fixture
def engines(model_dir, tmp_path) -> Engines:
    return engines_for(tmp_path, model_dir)


def test_the_model_folder_is_a_voice_in_its_language_at_its_sample_rate(engines):
    voice = find_voice("coqui-pt-br-tiny-voice")
    assert voice is not None and voice in installed_voices()
    assert (voice.language, voice.engine, voice.display_name) == ("pt-BR", tts_pb2.ENGINE_COQUI, "Tiny Voice (Coqui, pt-BR)")
    engine = voice.engine_type
    assert engine.sample_rate == SAMPLE_RATE
    assert engine.supports_speed() and (engine.min_speed, engine.max_speed) == (0.5, 2.0)
    # The default only where no shipped engine speaks the language: Portuguese jobs keep their voice.
    assert (default_voice("pt-BR") == voice) == (not shipped_voices("pt"))
    assert not engines.by_kind[tts_pb2.ENGINE_COQUI].is_loaded()  # listing it loads nothing


async def test_list_voices_shows_it_before_it_loads(engines):
    from services.tts.api import TtsApi

    reply = await TtsApi(engines).ListVoices(tts_pb2.ListVoicesRequest(engine=tts_pb2.ENGINE_COQUI), None)
    [voice] = reply.voices
    assert (voice.name, voice.language, voice.sample_rate_hertz) == ("voices/coqui-pt-br-tiny-voice", "pt-BR", SAMPLE_RATE)
    assert voice.supports_speaking_rate and (voice.min_speaking_rate, voice.max_speaking_rate) == (0.5, 2.0)
    assert voice.is_default == (not shipped_voices("pt")) and not voice.loaded


def test_it_speaks_float32_mono_at_the_models_rate_loading_the_model_once(engines, monkeypatch):
    loads = []
    load_model = CoquiEngine._load
    monkeypatch.setattr(CoquiEngine, "_load", lambda self: loads.append(1) or load_model(self))
    voice = find_voice("coqui-pt-br-tiny-voice")
    first, second = engines.synthesize(TEXT, voice), engines.synthesize("bom dia", voice)
    assert len(loads) == 1 and engines.for_voice(voice).is_loaded()
    for speech in (first, second):
        assert speech.sample_rate == SAMPLE_RATE
        assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1 and len(speech.samples) > 0
        assert np.all(np.abs(speech.samples) <= 1.0)
    # Without the silence Coqui pads every sentence with: the speech ends with the voice.
    assert np.any(first.samples[-256:] != 0)


def test_a_faster_speaking_rate_makes_speech_shorter(engines):
    voice = find_voice("coqui-pt-br-tiny-voice")
    normal, faster = engines.synthesize(TEXT, voice), engines.synthesize(TEXT, voice, 2.0)
    assert faster.duration_s < 0.7 * normal.duration_s, (faster.duration_s, normal.duration_s)


def test_no_folder_configured_changes_nothing(tmp_path):
    engines = engines_for(tmp_path, "")
    assert coqui_voices() == () and not CoquiEngine.installed()
    assert [voice for voice in installed_voices() if voice.engine == tts_pb2.ENGINE_COQUI] == []
    assert all(voice in VOICES for voice in installed_voices())
    assert engines.by_kind[tts_pb2.ENGINE_COQUI].failure is None


def _garbage_config(folder: Path) -> None:
    (folder / "config.json").write_text("{not json")


def _no_language(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model": "vits", "audio": {"sample_rate": 22050}}))
    (folder / "model.pth").write_bytes(b"")


def _no_checkpoint(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model": "vits", "audio": {"sample_rate": 22050}, "phoneme_language": "en"}))


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (None, "is not a folder"),
        (lambda folder: None, "has no config.json"),
        (_garbage_config, "is not a Coqui model config"),
        (_no_language, "names no language: set phoneme_language"),
        (_no_checkpoint, "has no checkpoint"),
    ],
)
def test_an_unusable_folder_is_reported_and_offers_no_voice(tmp_path, make, why):
    folder = tmp_path / "model"
    if make is not None:
        folder.mkdir()
        make(folder)
    engine = engines_for(tmp_path, folder).by_kind[tts_pb2.ENGINE_COQUI]
    assert isinstance(engine.failure, EngineUnavailable)
    assert str(folder) in str(engine.failure) and "OCTAVIA_COQUI_MODEL_DIR" in str(engine.failure)
    assert why in str(engine.failure)
    assert coqui_voices() == ()
    voice = VoiceSpec("coqui-x", "x", "en", tts_pb2.ENGINE_COQUI, "en")
    with pytest.raises(EngineUnavailable, match=why):
        engine.synthesize(TEXT, voice)


def test_a_checkpoint_that_does_not_load_is_engine_unavailable(model_dir, tmp_path):
    pytest.importorskip("TTS", reason="the coqui extra (coqui-tts) is not installed")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    (folder / "checkpoint_7.pth").write_bytes(b"not a checkpoint")
    engines = engines_for(tmp_path, folder)
    voice = find_voice("coqui-pt-br-broken")
    assert voice is not None
    with pytest.raises(EngineUnavailable, match="its model does not load"):
        engines.synthesize(TEXT, voice)
    assert engines.for_voice(voice).failure is not None  # kept: ListVoices stops offering it
