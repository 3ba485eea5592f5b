"""The TranscribeService servicer."""

from __future__ import annotations

from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc

from octavia_runtime.pending import pending

from .models import MODELS, available

_SERVICE = transcribe_pb2.DESCRIPTOR.services_by_name["TranscribeService"]


@pending(_SERVICE, {"TranscribeClip": "speech recognition with faster-whisper"})
class TranscribeApi(transcribe_pb2_grpc.TranscribeServiceServicer):
    async def ListModels(self, request, context):
        return transcribe_pb2.ListModelsResponse(
            models=[
                transcribe_pb2.Model(
                    name=spec.name,
                    languages=spec.languages,
                    multilingual=not spec.languages,
                    available=available(spec),
                    loaded=False,
                    is_default=spec.default,
                )
                for spec in MODELS
            ],
            default_model=next(spec.name for spec in MODELS if spec.default),
        )
