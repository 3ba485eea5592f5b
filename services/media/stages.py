"""The media service's pipeline stages: probe, extract_audio and render_subtitles.

Media owns blob storage, so its stages read and write it directly; CPU work
(ffmpeg, PyAV, line breaking) runs in threads so health checks and the
worker's heartbeats keep answering.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from uuid import UUID

from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime.stages import Handler, StageContext, StageOutput, duration, permanent

from . import ffmpeg, subtitles
from .probe import MediaRejected, probe
from .storage import BlobNotFound, BlobStore
from .store import AssetRow, MediaStore

R = stages_pb2
P = jobs_pb2


class MediaStages:
    def __init__(self, storage: BlobStore, store: MediaStore):
        self.storage = storage
        self.store = store

    def handlers(self) -> dict[int, Handler]:
        return {
            P.STAGE_PROBE: self.probe,
            P.STAGE_EXTRACT_AUDIO: self.extract_audio,
            P.STAGE_RENDER_SUBTITLES: self.render_subtitles,
        }

    async def _source(self, ctx: StageContext) -> AssetRow:
        """The job's input asset; the job fails if the user deleted it."""
        asset = ctx.input(R.ARTIFACT_ROLE_SOURCE_MEDIA).asset
        row = await self.store.get(ctx.task.owner.removeprefix("users/"), UUID(asset.removeprefix("assets/")))
        if row is None or await self.storage.size(row.storage_key) is None:
            raise permanent("INPUT_DELETED", f"the input {asset} was deleted")
        return row

    async def probe(self, ctx: StageContext) -> StageOutput:
        """The input as probed at upload (it was decoded then); checked again against what the job needs."""
        row = await self._source(ctx)
        info = media_pb2.MediaInfo.FromString(row.media_info) if row.media_info else None
        if info is None:
            async with self.storage.local_copy(row.storage_key) as path:
                try:
                    info = await asyncio.to_thread(probe, path)
                except MediaRejected as exc:
                    raise permanent(exc.reason, exc.message) from None
        if ctx.task.probe.require_video and not any(
            s.type == media_pb2.STREAM_TYPE_VIDEO and not s.attached_picture for s in info.streams
        ):
            raise permanent("NO_VIDEO_STREAM", "the input has no video stream")
        return StageOutput([], R.ProbeResult(media_info=info))

    async def extract_audio(self, ctx: StageContext) -> StageOutput:
        key = (await self._source(ctx)).storage_key
        rate = ctx.task.extract_audio.asr_sample_rate_hertz or 16000
        target = ctx.output(R.ARTIFACT_ROLE_ASR_AUDIO)
        with tempfile.TemporaryDirectory(prefix="octavia-extract-") as tmp:
            out = Path(tmp) / "asr.wav"
            async with self.storage.local_copy(key) as source:
                try:
                    await asyncio.to_thread(ffmpeg.extract_audio, source, out, rate)
                except ffmpeg.FfmpegError as exc:
                    raise permanent("MEDIA_UNREADABLE", f"the audio could not be decoded: {exc}") from None
            stored = _stored(target, await self.storage.put_file(target.key, out, target.content_type))
        # 16-bit mono PCM: the length follows from the size (44-byte RIFF header).
        stored.duration.CopyFrom(duration(max(0, stored.size_bytes - 44) / (2 * rate)))
        return StageOutput([stored])

    async def render_subtitles(self, ctx: StageContext) -> StageOutput:
        source = next(ref for ref in ctx.task.inputs if ref.role in (R.ARTIFACT_ROLE_TRANSCRIPT, R.ARTIFACT_ROLE_TRANSLATION))
        params = ctx.task.render_subtitles
        with tempfile.TemporaryDirectory(prefix="octavia-subtitles-") as tmp:
            folder = Path(tmp)
            try:
                await self.storage.get_file(source.key, folder / "transcript.pb")
            except BlobNotFound:
                raise permanent("INPUT_MISSING", f"{source.key} is missing") from None
            transcript = transcribe_pb2.Transcript.FromString((folder / "transcript.pb").read_bytes())
            rendered = await asyncio.to_thread(
                subtitles.build_cues, transcript, frame_rate=params.frame_rate or 25.0, language=ctx.task.language or None
            )
            texts = {
                R.ARTIFACT_ROLE_SUBTITLES_SRT: lambda: subtitles.to_srt(rendered.cues),
                R.ARTIFACT_ROLE_SUBTITLES_VTT: lambda: subtitles.to_vtt(rendered.cues),
                R.ARTIFACT_ROLE_TRANSCRIPT_JSON: lambda: subtitles.transcript_json(transcript),
            }
            outputs = []
            for ref in ctx.task.outputs:
                path = folder / Path(ref.key).name
                path.write_text(texts[ref.role](), encoding="utf-8")
                outputs.append(_stored(ref, await self.storage.put_file(ref.key, path, ref.content_type)))
        return StageOutput(
            outputs,
            R.RenderSubtitlesResult(cue_count=len(rendered.cues), reading_speed_warnings=rendered.reading_speed_warnings),
        )


def _stored(ref: stages_pb2.ArtifactRef, size: int) -> stages_pb2.ArtifactRef:
    stored = stages_pb2.ArtifactRef()
    stored.CopyFrom(ref)
    stored.size_bytes = size
    return stored
