"""The translate stage: a job's transcript into one target language, segment timing kept."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from octavia.jobs.v1 import stages_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime.blobs import RemoteBlobs
from octavia_runtime.stages import StageContext, StageOutput, Stopped, permanent

from . import engines

R = stages_pb2


class TranslateStage:
    def __init__(self, translators: engines.Translators, blobs: RemoteBlobs):
        self.translators = translators
        self.blobs = blobs

    async def __call__(self, ctx: StageContext) -> StageOutput:
        params = ctx.task.translate
        with tempfile.TemporaryDirectory(prefix="octavia-translate-") as tmp:
            source = await self.blobs.fetch(ctx.input(R.ARTIFACT_ROLE_TRANSCRIPT), Path(tmp) / "transcript.pb")
            transcript = transcribe_pb2.Transcript.FromString(source.read_bytes())
            total = len(transcript.segments)

            def progress(done: int, _total: int = total) -> None:
                ctx.progress_from_thread(100 * done / _total if _total else 0, f"{done} of {_total} segments")

            try:
                translated = await asyncio.to_thread(
                    self.translators.translate_transcript,
                    transcript,
                    params.target_language,
                    engine_name=params.engine,
                    on_progress=progress,
                    should_stop=ctx.stop.is_set,
                )
            except engines.TranslationCancelled:
                raise Stopped() from None
            except engines.UnsupportedPair as exc:
                raise permanent("UNSUPPORTED_LANGUAGE", str(exc)) from None
            out = Path(tmp) / "translation.pb"
            out.write_bytes(translated.SerializeToString())
            stored = await self.blobs.store(ctx.output(R.ARTIFACT_ROLE_TRANSLATION), out)
        return StageOutput(
            [stored],
            R.TranslateResult(
                segment_count=len(translated.segments),
                characters=sum(len(s.source_text) for s in translated.segments),
                engine=translated.translation_engine,
            ),
        )
