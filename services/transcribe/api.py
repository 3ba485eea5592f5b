"""The TranscribeService servicer: validates, runs the engine in a thread, maps its errors."""

from __future__ import annotations

import asyncio
import threading

import grpc
from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc

from octavia_runtime.errors import ApiError, invalid_argument, unimplemented

from .engine import (
    AudioTooLong,
    AudioUnreadable,
    ModelUnavailable,
    Transcriber,
    TranscriptionCancelled,
    UnknownModel,
    UnsupportedLanguage,
)

# The limits of TranscribeClip, as its proto comment states them.
MAX_CLIP_SECONDS = 60.0
MAX_CLIP_BYTES = 10 * 1024 * 1024


class TranscribeApi(transcribe_pb2_grpc.TranscribeServiceServicer):
    def __init__(self, transcriber: Transcriber):
        self.transcriber = transcriber

    async def ListModels(self, request, context):
        return transcribe_pb2.ListModelsResponse(
            models=self.transcriber.models(),
            default_model=self.transcriber.default_model,
            device=self.transcriber.device,
            compute_type=self.transcriber.compute_type,
        )

    async def TranscribeClip(self, request, context):
        source = request.WhichOneof("audio_source")
        if source == "asset":
            raise unimplemented("TranscribeClip of an asset (send the audio inline in audio_content)")
        if not request.audio_content:
            raise invalid_argument({"audio_content": "required: the clip's audio, in any format ffmpeg decodes"})
        if len(request.audio_content) > MAX_CLIP_BYTES:
            raise invalid_argument(
                {"audio_content": f"{len(request.audio_content)} bytes; a clip sent inline may hold at most {MAX_CLIP_BYTES}"},
                reason="CLIP_TOO_LARGE",
            )
        # Set when the call ends for any reason (the client gone included), so the worker
        # thread stops at the next segment instead of finishing work nobody will read.
        stop = threading.Event()
        try:
            transcript = await asyncio.to_thread(
                self.transcriber.transcribe_clip,
                request.audio_content,
                model=request.model,
                language=request.language,
                word_timestamps=request.word_timestamps,
                max_duration_s=MAX_CLIP_SECONDS,
                should_stop=stop.is_set,
            )
        except UnknownModel as exc:
            raise invalid_argument({"model": str(exc)}, reason="UNSUPPORTED_MODEL") from exc
        except UnsupportedLanguage as exc:
            raise invalid_argument({"language": str(exc)}, reason="UNSUPPORTED_LANGUAGE") from exc
        except AudioUnreadable as exc:
            raise invalid_argument({"audio_content": str(exc)}, reason="NOT_MEDIA") from exc
        except AudioTooLong as exc:
            raise invalid_argument({"audio_content": str(exc)}, reason="CLIP_TOO_LONG") from exc
        except ModelUnavailable as exc:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNAVAILABLE", str(exc), metadata={"model": exc.model}
            ) from exc
        except TranscriptionCancelled as exc:
            raise ApiError(grpc.StatusCode.CANCELLED, "CANCELLED", str(exc)) from exc
        finally:
            stop.set()
        return transcribe_pb2.TranscribeClipResponse(transcript=transcript)
