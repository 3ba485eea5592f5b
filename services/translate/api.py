"""The TranslateService servicer: validates, runs the engines in a thread, maps their errors."""

from __future__ import annotations

import asyncio
import threading

import grpc
from octavia.translate.v1 import translate_pb2, translate_pb2_grpc

from octavia_runtime.errors import ApiError, invalid_argument

from .engines import (
    ENGINE_NAMES,
    EngineFailure,
    Pair,
    TranslationCancelled,
    Translators,
    UnsupportedPair,
    primary_language,
)

# The limits of the API, as the proto comments state them.
MAX_TEXTS = 128
MAX_TEXT_CHARS = 20_000
MAX_TRANSCRIPT_CHARS = 200_000


class TranslateApi(translate_pb2_grpc.TranslateServiceServicer):
    def __init__(self, translators: Translators):
        self.translators = translators

    async def ListLanguagePairs(self, request, context):
        source = primary_language(request.source_language)
        target = primary_language(request.target_language)
        # Listing asks Apertium for its modes the first time: a subprocess, kept off the loop.
        pairs = await asyncio.to_thread(self.translators.pairs)
        return translate_pb2.ListLanguagePairsResponse(
            language_pairs=[
                self._pair_message(pair) for pair in pairs if source in ("", pair.source) and target in ("", pair.target)
            ]
        )

    async def TranslateText(self, request, context):
        bad = _languages(request.source_language, request.target_language)
        if not request.texts:
            bad["texts"] = "required: at least one text"
        if bad:
            raise invalid_argument(bad)
        chars = sum(len(text) for text in request.texts)
        if len(request.texts) > MAX_TEXTS or chars > MAX_TEXT_CHARS:
            raise invalid_argument(
                {
                    "texts": f"{len(request.texts)} texts of {chars} characters; at most {MAX_TEXTS} texts and {MAX_TEXT_CHARS} characters"
                },
                reason="REQUEST_TOO_LARGE",
            )
        engine, pair = await self._engine(request.source_language, request.target_language, request.engine)
        try:
            translations = await asyncio.to_thread(
                engine.translate_batch, list(request.texts), request.source_language, request.target_language
            )
        except EngineFailure as exc:
            raise _failed(exc) from exc
        return translate_pb2.TranslateTextResponse(translations=translations, language_pair=self._pair_message(pair))

    async def TranslateTranscript(self, request, context):
        transcript = request.transcript
        bad = {}
        if not request.HasField("transcript"):
            bad["transcript"] = "required: the transcript to translate"
        elif not transcript.language.strip():
            bad["transcript.language"] = "required: the language of the transcript, as a BCP-47 tag"
        if not request.target_language.strip():
            bad["target_language"] = "required: a BCP-47 tag such as pt or pt-BR"
        if bad:
            raise invalid_argument(bad)
        chars = sum(len(segment.text) for segment in transcript.segments)
        if chars > MAX_TRANSCRIPT_CHARS:
            raise invalid_argument(
                {"transcript.segments": f"{chars} characters of text; at most {MAX_TRANSCRIPT_CHARS}"}, reason="REQUEST_TOO_LARGE"
            )
        engine, pair = await self._engine(transcript.language, request.target_language, request.engine)
        stop = threading.Event()  # set when the call ends, the client gone included: the thread stops between batches
        try:
            translated = await asyncio.to_thread(
                self.translators.translate_transcript,
                transcript,
                request.target_language,
                engine_name=engine.name,
                should_stop=stop.is_set,
            )
        except EngineFailure as exc:
            raise _failed(exc) from exc
        except TranslationCancelled as exc:
            raise ApiError(grpc.StatusCode.CANCELLED, "CANCELLED", str(exc)) from exc
        finally:
            stop.set()
        return translate_pb2.TranslateTranscriptResponse(transcript=translated, language_pair=self._pair_message(pair))

    async def _engine(self, source: str, target: str, kind: int):
        if kind and kind not in ENGINE_NAMES:
            raise invalid_argument({"engine": f"unknown engine {kind}"})
        try:
            engine = await asyncio.to_thread(self.translators.engine_for, source, target, ENGINE_NAMES.get(kind, ""))
        except UnsupportedPair as exc:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNSUPPORTED_LANGUAGE_PAIR",
                str(exc),
                fields={"target_language": str(exc)},
                metadata={"source_language": exc.source, "target_language": exc.target}
                | ({"engine": exc.engine_name} if exc.engine_name else {}),
            ) from exc
        return engine, engine.pair(source, target)

    def _pair_message(self, pair: Pair) -> translate_pb2.LanguagePair:
        return translate_pb2.LanguagePair(
            source_language=pair.source,
            target_language=pair.target,
            engine=pair.engine,
            engine_name=pair.engine_name,
            quality_note=pair.quality_note,
            loaded=self.translators.is_loaded(pair),
        )


def _languages(source: str, target: str) -> dict[str, str]:
    bad = {}
    if not source.strip():
        bad["source_language"] = "required: a BCP-47 tag such as en"
    if not target.strip():
        bad["target_language"] = "required: a BCP-47 tag such as pt or pt-BR"
    return bad


def _failed(exc: EngineFailure) -> ApiError:
    return ApiError(grpc.StatusCode.INTERNAL, "TRANSLATION_FAILED", str(exc))
