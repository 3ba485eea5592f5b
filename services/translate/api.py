"""The TranslateService servicer."""

from __future__ import annotations

from octavia.translate.v1 import translate_pb2, translate_pb2_grpc

from octavia_runtime.pending import pending

from .engines import available_pairs

_SERVICE = translate_pb2.DESCRIPTOR.services_by_name["TranslateService"]
_FEATURE = "machine translation (Bergamot, Apertium, Marian engines)"


@pending(_SERVICE, {"TranslateText": _FEATURE, "TranslateTranscript": _FEATURE})
class TranslateApi(translate_pb2_grpc.TranslateServiceServicer):
    async def ListLanguagePairs(self, request, context):
        pairs = [
            translate_pb2.LanguagePair(
                source_language=pair.source,
                target_language=pair.target,
                engine=pair.engine,
                engine_name=pair.engine_name,
                quality_note=pair.quality_note,
            )
            for pair in available_pairs()
            if request.source_language in ("", pair.source) and request.target_language in ("", pair.target)
        ]
        return translate_pb2.ListLanguagePairsResponse(language_pairs=pairs)
