"""The voices this service knows, which of them this worker can speak with, and the default per language."""

from __future__ import annotations

import re
from dataclasses import dataclass

from octavia.tts.v1 import tts_pb2

from octavia_runtime.languages import primary_language

from .engines import ENGINE_TYPES, CoquiEngine, Engine

_ENGINE_TYPES: dict[int, type[Engine]] = {engine.kind: engine for engine in ENGINE_TYPES}
# The default voice of a language is the first installed one in this order: natural before robotic,
# an operator's Coqui model last (see default_voice).
_PREFERENCE = (tts_pb2.ENGINE_KOKORO, tts_pb2.ENGINE_PIPER, tts_pb2.ENGINE_ESPEAK, tts_pb2.ENGINE_COQUI)


class NoVoice(LookupError):
    """No installed voice speaks the language (a permanent error: a job to it cannot be dubbed)."""

    def __init__(self, language: str):
        super().__init__(f"no voice on this worker speaks the language {language!r}")
        self.language = language


@dataclass(frozen=True)
class VoiceSpec:
    """One voice: `speaker` and `code` are what its engine needs (a Kokoro speaker, an eSpeak language)."""

    name: str
    display_name: str
    language: str  # BCP-47
    engine: tts_pb2.Engine
    code: str
    speaker: str = ""
    gender: tts_pb2.VoiceGender = tts_pb2.VOICE_GENDER_UNSPECIFIED
    quality_note: str = ""

    @property
    def engine_type(self) -> type[Engine]:
        return _ENGINE_TYPES[self.engine]

    def speaks(self, language: str) -> bool:
        """Whether it speaks `language`: a tag without region matches every region, one with a region only itself."""
        wanted = language.strip().replace("_", "-").lower()
        return self.language.lower() == wanted if "-" in wanted else primary_language(self.language) == wanted


_KOKORO_LANGUAGES = (  # BCP-47 tag, eSpeak code kokoro-onnx phonemizes with
    ("en-US", "en-us"),
    ("es", "es"),
    ("pt-BR", "pt-br"),
    ("fr", "fr-fr"),
    ("it", "it"),
    ("hi", "hi"),
    ("ja", "ja"),
    ("zh", "cmn"),
)
_KOKORO_SPEAKERS = (  # suffix, Kokoro speaker, display name, gender
    ("alpha", "jf_alpha", "Alpha", tts_pb2.VOICE_GENDER_FEMALE),
    ("kumo", "jm_kumo", "Kumo", tts_pb2.VOICE_GENDER_MALE),
)
_ESPEAK_LANGUAGES = (  # BCP-47 tag, eSpeak voice
    ("ar", "ar"), ("ca", "ca"), ("cs", "cs"), ("da", "da"), ("de", "de"), ("el", "el"), ("en-GB", "en"),
    ("en-US", "en-us"), ("es", "es"), ("fi", "fi"), ("fr", "fr"), ("hi", "hi"), ("hu", "hu"), ("id", "id"),
    ("it", "it"), ("ja", "ja"), ("ko", "ko"), ("nb", "nb"), ("nl", "nl"), ("pl", "pl"), ("pt-BR", "pt-br"),
    ("pt-PT", "pt"), ("ro", "ro"), ("ru", "ru"), ("sv", "sv"), ("tr", "tr"), ("uk", "uk"), ("vi", "vi"),
    ("zh", "cmn"),
)  # fmt: skip

VOICES: tuple[VoiceSpec, ...] = (
    *(
        VoiceSpec(
            f"kokoro-{tag.lower()}-{suffix}",
            f"{display} (Kokoro, {tag})",
            tag,
            tts_pb2.ENGINE_KOKORO,
            code,
            speaker,
            gender,
            "natural; a Japanese accent outside Japanese" if tag != "ja" else "natural",
        )
        for tag, code in _KOKORO_LANGUAGES
        for suffix, speaker, display, gender in _KOKORO_SPEAKERS
    ),
    VoiceSpec(
        "piper-en-us-joe",
        "Joe (Piper, US English)",
        "en-US",
        tts_pb2.ENGINE_PIPER,
        "en-us",
        gender=tts_pb2.VOICE_GENDER_MALE,
        quality_note="natural, clear; fast",
    ),
    *(
        VoiceSpec(
            f"espeak-{tag.lower()}", f"eSpeak NG ({tag})", tag, tts_pb2.ENGINE_ESPEAK, code, quality_note="robotic, intelligible"
        )
        for tag, code in _ESPEAK_LANGUAGES
    ),
)
_BY_NAME = {voice.name: voice for voice in VOICES}


def coqui_voices() -> tuple[VoiceSpec, ...]:
    """The voice of the Coqui model folder this worker's configuration names, if any (see coqui.py).

    Named `coqui-<language>-<folder name>`, its language the one the model's config.json gives.
    """
    model = CoquiEngine.configured
    if model is None:
        return ()
    name = re.sub(r"[^a-z0-9-]+", "-", f"coqui-{model.language}-{model.folder.name}".lower()).strip("-")
    display = f"{model.folder.name} (Coqui, {model.language})"
    return (
        VoiceSpec(name, display, model.language, tts_pb2.ENGINE_COQUI, model.language, quality_note="the operator's own model"),
    )


def installed_voices() -> list[VoiceSpec]:
    """The voices whose engine's packages are installed on this worker, in catalogue order."""
    return [voice for voice in (*VOICES, *coqui_voices()) if voice.engine_type.installed()]


def find_voice(name: str) -> VoiceSpec | None:
    """The installed voice called `name` (without the `voices/` prefix), if there is one."""
    voice = _BY_NAME.get(name) or next((voice for voice in coqui_voices() if voice.name == name), None)
    return voice if voice is not None and voice.engine_type.installed() else None


def default_voice(language: str) -> VoiceSpec:
    """The voice a job uses for `language` when it names none; NoVoice when none speaks it.

    Kokoro where it speaks the language, else Piper (English), else eSpeak NG:
    a natural voice of another region (Brazilian Portuguese for pt-PT) is
    easier to listen to than a robotic one of the right region. Among one
    engine's voices, one of the region asked for comes first. An operator's
    Coqui model is the default only for a language no shipped engine speaks,
    else jobs name it: its quality is unknown here (it may be one being tried
    out), and configuring it must not change how every job in a language the
    worker already speaks sounds; where it is the only voice, it is the one.
    """
    primary = primary_language(language)
    candidates = [voice for voice in installed_voices() if voice.speaks(primary) and voice.engine in _PREFERENCE]
    if not primary or not candidates:
        raise NoVoice(language)
    return min(candidates, key=lambda voice: (_PREFERENCE.index(voice.engine), not voice.speaks(language)))
