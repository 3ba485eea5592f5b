"""The transcribe stage: speech recognition of a job's 16 kHz audio into its transcript."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from octavia.jobs.v1 import jobs_pb2, stages_pb2

from octavia_runtime.blobs import RemoteBlobs
from octavia_runtime.stages import StageContext, StageOutput, Stopped, permanent

from . import engine

R = stages_pb2
# Kinds whose result is text: with no speech there is nothing to give, so the job fails
# and says why. (Dubbing kinds pass an empty transcript on: the dub is the original audio.)
_TEXT_KINDS = (jobs_pb2.JOB_KIND_TRANSCRIPTION, jobs_pb2.JOB_KIND_SUBTITLES)


class TranscribeStage:
    def __init__(self, transcriber: engine.Transcriber, blobs: RemoteBlobs):
        self.transcriber = transcriber
        self.blobs = blobs

    async def __call__(self, ctx: StageContext) -> StageOutput:
        params = ctx.task.transcribe
        with tempfile.TemporaryDirectory(prefix="octavia-transcribe-") as tmp:
            audio = await self.blobs.fetch(ctx.input(R.ARTIFACT_ROLE_ASR_AUDIO), Path(tmp) / "audio.wav")

            def progress(done_s: float, total_s: float) -> None:
                ctx.progress_from_thread(100 * done_s / total_s if total_s else 0, f"{done_s:.0f} of {total_s:.0f} s")

            try:
                transcript = await asyncio.to_thread(
                    self.transcriber.transcribe,
                    audio,
                    model=params.model,
                    language=params.language,
                    on_progress=progress,
                    should_stop=ctx.stop.is_set,
                )
            except engine.TranscriptionCancelled:
                raise Stopped() from None
            except engine.UnsupportedLanguage as exc:
                raise permanent("UNSUPPORTED_LANGUAGE", str(exc)) from None
            except (engine.UnknownModel, engine.ModelUnavailable) as exc:
                raise permanent("MODEL_UNAVAILABLE", str(exc)) from None
            except engine.AudioUnreadable as exc:
                raise permanent("MEDIA_UNREADABLE", str(exc)) from None
            if not transcript.segments and ctx.task.job_kind in _TEXT_KINDS:
                raise permanent("NO_SPEECH", "no speech was found in the audio")
            out = Path(tmp) / "transcript.pb"
            out.write_bytes(transcript.SerializeToString())
            stored = await self.blobs.store(ctx.output(R.ARTIFACT_ROLE_TRANSCRIPT), out)
        result = R.TranscribeResult(
            detected_language=transcript.language,
            language_probability=transcript.language_probability,
            segment_count=len(transcript.segments),
            model=transcript.model,
        )
        result.audio_duration.CopyFrom(transcript.duration)
        return StageOutput([stored], result)
