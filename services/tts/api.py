"""The TtsService servicer."""

from __future__ import annotations

from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime.errors import invalid_argument
from octavia_runtime.pagination import decode_token, encode_token, page_size
from octavia_runtime.pending import pending

from .voices import installed_voices

_SERVICE = tts_pb2.DESCRIPTOR.services_by_name["TtsService"]
_FEATURE = "speech synthesis (Kokoro, Piper, eSpeak NG, Coqui voices)"


@pending(_SERVICE, {"GetVoice": _FEATURE, "Synthesize": _FEATURE})
class TtsApi(tts_pb2_grpc.TtsServiceServicer):
    async def ListVoices(self, request, context):
        limit = page_size(request.page_size)
        offset = (decode_token(request.page_token) or {}).get("offset", 0)
        if not isinstance(offset, int) or offset < 0:
            raise invalid_argument({"page_token": "is not a token from a previous page of this list"})
        language = request.language.lower()
        voices = [
            tts_pb2.Voice(
                name=f"voices/{voice.name}",
                display_name=voice.display_name,
                language=voice.language,
                engine=voice.engine,
                sample_rate_hertz=voice.sample_rate,
                supports_speaking_rate=voice.speaking_rate,
            )
            for voice in installed_voices()
            if (not language or voice.language.lower().startswith(language))
            and request.engine in (tts_pb2.ENGINE_UNSPECIFIED, voice.engine)
        ]
        more = len(voices) > offset + limit
        return tts_pb2.ListVoicesResponse(
            voices=voices[offset : offset + limit], next_page_token=encode_token({"offset": offset + limit}) if more else ""
        )
