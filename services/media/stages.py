"""The media service's pipeline stages: probe, extract_audio, render_subtitles, and the
dub's mix, encode and mux (the work itself is in dubbing.py).

Media owns blob storage, so its stages read and write it directly; CPU work
(ffmpeg, PyAV, line breaking) runs in threads so health checks and the
worker's heartbeats keep answering.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from uuid import UUID

import structlog
from google.protobuf import json_format
from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime.stages import Handler, StageContext, StageError, StageOutput, duration, permanent

from . import dubbing, ffmpeg, mixing, subtitles
from .probe import MediaRejected, probe
from .storage import BlobNotFound, BlobStore
from .store import AssetRow, MediaStore

log = structlog.get_logger("media")
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
            P.STAGE_MIX: self.mix,
            P.STAGE_ENCODE: self.encode,
            P.STAGE_MUX: self.mux,
        }

    async def _source(self, ctx: StageContext) -> AssetRow:
        """The job's input asset; the job fails if the user deleted it."""
        asset = ctx.input(R.ARTIFACT_ROLE_SOURCE_MEDIA).asset
        row = await self.store.get(ctx.task.owner.removeprefix("users/"), UUID(asset.removeprefix("assets/")))
        if row is None or await self.storage.size(row.storage_key) is None:
            raise permanent("INPUT_DELETED", f"the input {asset} was deleted")
        return row

    async def _media_info(self, row: AssetRow) -> media_pb2.MediaInfo:
        """What the input holds, as probed at upload (it was decoded then), else probed now."""
        if row.media_info:
            return media_pb2.MediaInfo.FromString(row.media_info)
        async with self.storage.local_copy(row.storage_key) as path:
            try:
                return await asyncio.to_thread(probe, path)
            except MediaRejected as exc:
                raise permanent(exc.reason, exc.message) from None

    async def _paid_seconds(self, ctx: StageContext, row: AssetRow) -> float | None:
        """How much of the input the job paid for: the task says (the job's media duration);
        a task from before it did falls back on the input's probe."""
        paid = ctx.task.media_duration if ctx.task.HasField("media_duration") else (await self._media_info(row)).duration
        seconds = paid.ToNanoseconds() / 1e9
        return seconds if seconds > 0 else None

    async def probe(self, ctx: StageContext) -> StageOutput:
        """The input's media info, checked again against what the job needs."""
        info = await self._media_info(await self._source(ctx))
        if ctx.task.probe.require_video and not any(
            s.type == media_pb2.STREAM_TYPE_VIDEO and not s.attached_picture for s in info.streams
        ):
            raise permanent("NO_VIDEO_STREAM", "the input has no video stream")
        return StageOutput([], R.ProbeResult(media_info=info))

    async def extract_audio(self, ctx: StageContext) -> StageOutput:
        """The speech track, no longer than the job paid for (whatever the file holds past that)."""
        row = await self._source(ctx)
        paid = await self._paid_seconds(ctx, row)
        rate = ctx.task.extract_audio.asr_sample_rate_hertz or 16000
        target = ctx.output(R.ARTIFACT_ROLE_ASR_AUDIO)
        with tempfile.TemporaryDirectory(prefix="octavia-extract-") as tmp:
            out = Path(tmp) / "asr.wav"
            async with self.storage.local_copy(row.storage_key) as source:
                try:
                    await asyncio.to_thread(ffmpeg.extract_audio, source, out, rate, max_seconds=paid)
                except ffmpeg.FfmpegError as exc:
                    raise _unreadable("the audio could not be decoded", exc) from None
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

    async def _read(self, ref: stages_pb2.ArtifactRef, path: Path) -> Path:
        try:
            await self.storage.get_file(ref.key, path)
        except BlobNotFound:
            raise permanent("INPUT_MISSING", f"{ref.key} is missing") from None
        return path

    async def _translation(self, ctx: StageContext, folder: Path) -> transcribe_pb2.Transcript:
        path = await self._read(ctx.input(R.ARTIFACT_ROLE_TRANSLATION), folder / "translation.pb")
        return transcribe_pb2.Transcript.FromString(path.read_bytes())

    async def _put(self, ref: stages_pb2.ArtifactRef, path: Path) -> stages_pb2.ArtifactRef:
        return _stored(ref, await self.storage.put_file(ref.key, path, ref.content_type))

    async def mix(self, ctx: StageContext) -> StageOutput:
        """Fit the language's speech into the original timing and mix it over the original audio."""
        row = await self._source(ctx)
        settings = dubbing.DubSettings.of(ctx.task, await self._paid_seconds(ctx, row) or 0.0)
        refs = sorted((r for r in ctx.task.inputs if r.role == R.ARTIFACT_ROLE_SPEECH_SEGMENT), key=lambda r: r.segment_index)
        with tempfile.TemporaryDirectory(prefix="octavia-mix-") as tmp:
            folder = Path(tmp)
            translation = await self._translation(ctx, folder)
            if len(refs) != len(translation.segments):
                raise permanent("BAD_TASK", f"{len(refs)} speech segments for {len(translation.segments)} translated ones")
            speeches = []
            for ref in refs:
                path = await self._read(ref, folder / "speech.pb")
                speeches.append(stages_pb2.SynthesizedSpeech.FromString(path.read_bytes()))
                await ctx.progress(40 * len(speeches) / len(refs), f"{len(speeches)} of {len(refs)} segments read")
            async with self.storage.local_copy(row.storage_key) as source:
                try:
                    report, mixed = await asyncio.to_thread(dubbing.mix_dub, source, translation, speeches, folder, settings)
                except ffmpeg.FfmpegError as exc:
                    raise _unreadable("the dub could not be mixed", exc) from None
                except ValueError as exc:  # the fit or the voice track refused the timing: retrying cannot help
                    raise permanent("BAD_TIMING", f"the dub could not be fitted: {exc}") from None
            report_path = folder / "sync.json"
            report_path.write_text(json_format.MessageToJson(report, indent=2, ensure_ascii=False), encoding="utf-8")
            mixed_ref = await self._put(ctx.output(R.ARTIFACT_ROLE_MIXED_AUDIO), mixed)
            mixed_ref.duration.CopyFrom(duration(mixing.wav_seconds(mixed)))
            report_ref = await self._put(ctx.output(R.ARTIFACT_ROLE_SYNC_REPORT), report_path)
        result = R.MixResult(
            output_duration=mixed_ref.duration,
            overflowing_segments=report.overflowing_segments,
            total_overflow=report.total_overflow,
            max_applied_speed_factor=report.max_applied_speed_factor,
            no_speech=bool(report.note),
        )
        return StageOutput([mixed_ref, report_ref], result)

    async def encode(self, ctx: StageContext) -> StageOutput:
        """The mixed dub as the audio file the user downloads (m4a or mp3)."""
        target = ctx.output(R.ARTIFACT_ROLE_ENCODED_AUDIO)
        audio_format = "mp3" if ctx.task.encode.audio_format == P.AUDIO_FORMAT_MP3 else "m4a"
        with tempfile.TemporaryDirectory(prefix="octavia-encode-") as tmp:
            mixed = await self._read(ctx.input(R.ARTIFACT_ROLE_MIXED_AUDIO), Path(tmp) / "mixed.wav")
            out = Path(tmp) / f"dub.{audio_format}"
            await asyncio.to_thread(mixing.encode_audio, mixed, out, audio_format, language=ctx.task.language)
            return StageOutput([await self._put(target, out)])

    async def mux(self, ctx: StageContext) -> StageOutput:
        """The dubbed video: the picture copied (held where the report says), the dub as its sound."""
        row = await self._source(ctx)
        params = ctx.task.mux
        settings = dubbing.MuxSettings(
            ctx.task.language,
            params.source_language,
            params.keep_original_audio,
            params.soft_subtitles,
            params.burn_in,
            params.frame_rate or 25.0,
            await self._paid_seconds(ctx, row),
        )
        with tempfile.TemporaryDirectory(prefix="octavia-mux-") as tmp:
            folder = Path(tmp)
            mixed = await self._read(ctx.input(R.ARTIFACT_ROLE_MIXED_AUDIO), folder / "mixed.wav")
            report_path = await self._read(ctx.input(R.ARTIFACT_ROLE_SYNC_REPORT), folder / "sync.json")
            report = json_format.Parse(report_path.read_text(encoding="utf-8"), jobs_pb2.SyncReport())
            translation = await self._translation(ctx, folder)
            out = folder / "dub.mp4"
            async with self.storage.local_copy(row.storage_key) as source:
                try:
                    await asyncio.to_thread(dubbing.mux_dub, source, mixed, report, translation, out, settings)
                except ffmpeg.FfmpegError as exc:
                    raise _unreadable("the dubbed video could not be made", exc) from None
            return StageOutput([await self._put(ctx.output(R.ARTIFACT_ROLE_VIDEO), out)])


def _unreadable(what: str, exc: ffmpeg.FfmpegError) -> StageError:
    """The job's error: what failed and ffmpeg's reason, without this machine's paths (the log has it all)."""
    log.warning("media.ffmpeg_failed", what=what, error=str(exc))
    return permanent("MEDIA_UNREADABLE", f"{what} ({exc.reason})")


def _stored(ref: stages_pb2.ArtifactRef, size: int) -> stages_pb2.ArtifactRef:
    stored = stages_pb2.ArtifactRef()
    stored.CopyFrom(ref)
    stored.size_bytes = size
    return stored
