"""The TtsService servicer: validates, runs the engine in a thread, maps its errors."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import duration_pb2
from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime.errors import ApiError, invalid_argument, not_found
from octavia_runtime.pagination import decode_token, encode_token, page_size
from octavia_runtime.validation import max_length

from .engines import Engines, EngineUnavailable, SpeedOutOfRange
from .voices import VoiceSpec, default_voice, find_voice, installed_voices

# The limit of Synthesize, as its proto comment states it: previews, not whole scripts.
MAX_TEXT_CHARS = max_length(tts_pb2.SynthesizeRequest, "text")
_PREFIX = "voices/"


class TtsApi(tts_pb2_grpc.TtsServiceServicer):
    def __init__(self, engines: Engines):
        self.engines = engines

    async def ListVoices(self, request, context):
        limit = page_size(request.page_size)
        scope = f"voices?language={request.language}&engine={request.engine}"
        offset = (decode_token(request.page_token, scope) or {}).get("offset", 0)
        voices = sorted(
            (
                self._voice(voice)
                for voice in installed_voices()
                if self.engines.for_voice(voice).failure is None
                and (not request.language or voice.speaks(request.language))
                and request.engine in (tts_pb2.ENGINE_UNSPECIFIED, voice.engine)
            ),
            key=lambda voice: (voice.language, not voice.is_default, voice.name),
        )
        more = len(voices) > offset + limit
        return tts_pb2.ListVoicesResponse(
            voices=voices[offset : offset + limit],
            next_page_token=encode_token({"offset": offset + limit}, scope) if more else "",
        )

    async def GetVoice(self, request, context):
        return tts_pb2.GetVoiceResponse(voice=self._voice(_voice_named(request.name, "name")))

    async def Synthesize(self, request, context):
        voice = _voice_named(request.voice, "voice")
        text = request.text.strip()
        if not text:  # (a longer text than the API allows never gets here)
            raise invalid_argument({"text": f"required: 1 to {MAX_TEXT_CHARS} characters to speak"})
        speed = request.speaking_rate or 1.0
        try:
            speech = await asyncio.to_thread(self.engines.synthesize, text, voice, speed)
        except SpeedOutOfRange as exc:
            raise invalid_argument({"speaking_rate": str(exc)}) from exc
        except EngineUnavailable as exc:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, "VOICE_UNAVAILABLE", str(exc), metadata={"voice": _PREFIX + voice.name}
            ) from exc
        duration = duration_pb2.Duration()
        duration.FromMilliseconds(round(speech.duration_s * 1000))
        return tts_pb2.SynthesizeResponse(
            audio_content=speech.wav(),
            content_type="audio/wav",
            sample_rate_hertz=speech.sample_rate,
            duration=duration,
            speaking_rate=speed,
        )

    def _voice(self, voice: VoiceSpec) -> tts_pb2.Voice:
        engine = voice.engine_type
        return tts_pb2.Voice(
            name=_PREFIX + voice.name,
            display_name=voice.display_name,
            language=voice.language,
            engine=voice.engine,
            sample_rate_hertz=engine.sample_rate,
            gender=voice.gender,
            supports_speaking_rate=engine.supports_speed(),
            min_speaking_rate=engine.min_speed,
            max_speaking_rate=engine.max_speed,
            is_default=default_voice(voice.language) == voice,
            loaded=self.engines.for_voice(voice).is_loaded(),
            quality_note=voice.quality_note,
        )


def _voice_named(name: str, field: str) -> VoiceSpec:
    """The installed voice a `voices/{voice}` resource name names; INVALID_ARGUMENT or NOT_FOUND otherwise."""
    if not name.startswith(_PREFIX) or len(name) == len(_PREFIX):
        raise invalid_argument({field: "required: a voice's resource name, voices/{voice} (see ListVoices)"})
    voice = find_voice(name.removeprefix(_PREFIX))
    if voice is None:
        raise not_found("voice", name)
    return voice
