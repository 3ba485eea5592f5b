"""The stage graph of each job kind, and the tasks it sends to workers.

Pure: no I/O. A job's stages are planned once from its kind and target
languages; `Job.stages[i]` is the status of node `i` of that plan, so a node
is identified by its index and, on the wire, by its task id
`<job id>/<stage>/<language or "_">/<segment or "_">/<attempt>`.

The tts node of a language fans out: one task per segment of its translation
(the count comes with the translate stage's result), all with the node's
attempt; the node succeeds when every segment has.

Every output key is chosen here, deterministically, so a redelivered task
writes the same blobs again (stages.proto describes the layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from google.protobuf import duration_pb2
from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2

from octavia_runtime import fit
from octavia_runtime.stages import stage_name

P = jobs_pb2
R = stages_pb2

TERMINAL_STATES = (P.STATE_SUCCEEDED, P.STATE_FAILED, P.STATE_CANCELLED)
DEFAULT_TIME_LIMIT_S = 30 * 60
SOURCE = ""  # the `language` of nodes working on the source language

# Share of the overall progress bar each stage takes (per language where it fans out).
_WEIGHTS = {
    P.STAGE_PROBE: 1,
    P.STAGE_EXTRACT_AUDIO: 4,
    P.STAGE_TRANSCRIBE: 60,
    P.STAGE_TRANSLATE: 10,
    P.STAGE_RENDER_SUBTITLES: 2,
    P.STAGE_TTS: 40,
    P.STAGE_MIX: 6,
    P.STAGE_ENCODE: 2,
    P.STAGE_MUX: 4,
}
DUBBING_KINDS = (P.JOB_KIND_AUDIO_TRANSLATION, P.JOB_KIND_VIDEO_DUBBING)
FAN_OUT_STAGES = (P.STAGE_TTS,)
# Speed caps of the timing fit (DubbingOptions: 0 means these).
DEFAULT_MAX_SPEED_FACTOR = fit.FitLimits.max_factor
DEFAULT_HARD_SPEED_CAP = fit.FitLimits.hard_cap


@dataclass(frozen=True)
class Node:
    stage: jobs_pb2.Stage
    language: str  # a target language, or SOURCE
    after: tuple[int, ...]  # nodes that must succeed first

    @property
    def weight(self) -> int:
        return _WEIGHTS.get(self.stage, 5)

    @property
    def fans_out(self) -> bool:
        """One task per segment rather than one per node."""
        return self.stage in FAN_OUT_STAGES


def plan(kind: jobs_pb2.JobKind, targets: list[str]) -> list[Node]:
    """The nodes of a job, in pipeline order."""
    nodes = [
        Node(P.STAGE_PROBE, SOURCE, ()),
        Node(P.STAGE_EXTRACT_AUDIO, SOURCE, (0,)),
        Node(P.STAGE_TRANSCRIBE, SOURCE, (1,)),
        Node(P.STAGE_RENDER_SUBTITLES, SOURCE, (2,)),
    ]
    for language in targets:
        translate = len(nodes)
        nodes.append(Node(P.STAGE_TRANSLATE, language, (2,)))
        nodes.append(Node(P.STAGE_RENDER_SUBTITLES, language, (translate,)))
        if kind in DUBBING_KINDS:
            tts = len(nodes)
            nodes.append(Node(P.STAGE_TTS, language, (translate,)))
            nodes.append(Node(P.STAGE_MIX, language, (tts,)))
            nodes.append(Node(P.STAGE_ENCODE, language, (tts + 1,)))
            if kind == P.JOB_KIND_VIDEO_DUBBING:
                nodes.append(Node(P.STAGE_MUX, language, (tts + 1,)))
    return nodes


def node_index(nodes: list[Node], stage: int, language_token: str) -> int | None:
    """The node a task id's stage and language token (`_` for the source) name."""
    language = SOURCE if language_token == "_" else language_token
    for index, node in enumerate(nodes):
        if node.stage == stage and node.language == language:
            return index
    return None


def task_id(job_id: str, node: Node, attempt: int, segment: int | None = None) -> str:
    return f"{job_id}/{stage_name(node.stage)}/{node.language or '_'}/{'_' if segment is None else segment}/{attempt}"


def parse_task_id(value: str) -> tuple[str, str, str, int] | None:
    """(job id, stage name, language token, attempt) of a task id."""
    parts = value.split("/")
    if len(parts) != 5 or not parts[4].isdigit():
        return None
    return parts[0], parts[1], parts[2], int(parts[4])


def key(job_id: str, stage: int, language: str, role: str, ext: str) -> str:
    return f"jobs/{job_id}/{stage_name(stage)}/{language or '_'}/{role}.{ext}"


def _ref(role: stages_pb2.ArtifactRole, key_: str, content_type: str, language: str = "") -> stages_pb2.ArtifactRef:
    return R.ArtifactRef(role=role, key=key_, content_type=content_type, language=language)


def _transcript(job_id: str) -> stages_pb2.ArtifactRef:
    return _ref(R.ARTIFACT_ROLE_TRANSCRIPT, key(job_id, P.STAGE_TRANSCRIBE, SOURCE, "transcript", "pb"), "application/x-protobuf")


def _translation(job_id: str, language: str) -> stages_pb2.ArtifactRef:
    return _ref(
        R.ARTIFACT_ROLE_TRANSLATION,
        key(job_id, P.STAGE_TRANSLATE, language, "translation", "pb"),
        "application/x-protobuf",
        language,
    )


_SUBTITLE_OUTPUTS = {
    P.SUBTITLE_FORMAT_SRT: (R.ARTIFACT_ROLE_SUBTITLES_SRT, "subtitles", "srt", "application/x-subrip"),
    P.SUBTITLE_FORMAT_VTT: (R.ARTIFACT_ROLE_SUBTITLES_VTT, "subtitles", "vtt", "text/vtt"),
}
TRANSCRIPT_JSON = (R.ARTIFACT_ROLE_TRANSCRIPT_JSON, "transcript", "json", "application/json")
_AUDIO_OUTPUTS = {  # DubbingOptions.audio_format: extension, MIME type
    P.AUDIO_FORMAT_UNSPECIFIED: ("m4a", "audio/mp4"),
    P.AUDIO_FORMAT_M4A: ("m4a", "audio/mp4"),
    P.AUDIO_FORMAT_MP3: ("mp3", "audio/mpeg"),
}

# What each user-facing output role becomes in Job.artifacts.
ARTIFACT_KINDS = {
    R.ARTIFACT_ROLE_SUBTITLES_SRT: P.ARTIFACT_KIND_SUBTITLES_SRT,
    R.ARTIFACT_ROLE_SUBTITLES_VTT: P.ARTIFACT_KIND_SUBTITLES_VTT,
    R.ARTIFACT_ROLE_TRANSCRIPT_JSON: P.ARTIFACT_KIND_TRANSCRIPT_JSON,
    R.ARTIFACT_ROLE_SYNC_REPORT: P.ARTIFACT_KIND_SYNC_REPORT,
    R.ARTIFACT_ROLE_ENCODED_AUDIO: P.ARTIFACT_KIND_DUBBED_AUDIO,
    R.ARTIFACT_ROLE_VIDEO: P.ARTIFACT_KIND_DUBBED_VIDEO,
}


def subtitle_formats(job: jobs_pb2.Job) -> list[jobs_pb2.SubtitleFormat]:
    return list(dict.fromkeys(job.subtitle_options.formats)) or [P.SUBTITLE_FORMAT_SRT, P.SUBTITLE_FORMAT_VTT]


def time_limit(job: jobs_pb2.Job) -> float:
    seconds = job.stage_time_limit.ToTimedelta().total_seconds()
    return seconds if seconds > 0 else DEFAULT_TIME_LIMIT_S


def speed_caps(job: jobs_pb2.Job) -> tuple[float, float]:
    """The job's (max_speed_factor, hard_speed_cap), defaults filled in."""
    options = job.dubbing_options
    cap = options.max_speed_factor or DEFAULT_MAX_SPEED_FACTOR
    return cap, max(cap, options.hard_speed_cap or DEFAULT_HARD_SPEED_CAP)


def build_task(
    job: jobs_pb2.Job, nodes: list[Node], index: int, attempt: int, frame_rate: float = 0.0, segment: int | None = None
) -> stages_pb2.StageTask:
    """The StageTask of node `index` of `job`, attempt `attempt` (frame_rate: the probed video's, if any).

    `segment`: for a node that fans out, the segment this task is for.
    """
    job_id = job.name.removeprefix("jobs/")
    node = nodes[index]
    source = job.detected_language or job.source_language
    task = R.StageTask(
        task_id=task_id(job_id, node, attempt, segment),
        segment_index=segment,
        job=job.name,
        owner=job.owner,
        job_kind=job.kind,
        stage=node.stage,
        attempt=attempt,
        language=node.language or (source if node.stage == P.STAGE_RENDER_SUBTITLES else ""),
        priority=job.priority or P.PRIORITY_DEFAULT,
        request_id=job.request_id,
    )
    task.time_limit.CopyFrom(duration_pb2.Duration(seconds=int(time_limit(job))))
    task.create_time.GetCurrentTime()
    if job.HasField("media_duration"):  # what the job is priced by: stages make no more of the input than that
        task.media_duration.CopyFrom(job.media_duration)
    source_media = R.ArtifactRef(role=R.ARTIFACT_ROLE_SOURCE_MEDIA, asset=job.input_asset)
    stage = node.stage
    dubbing = job.dubbing_options
    if stage == P.STAGE_PROBE:
        task.inputs.append(source_media)
        task.probe.require_video = job.kind == P.JOB_KIND_VIDEO_DUBBING
    elif stage == P.STAGE_EXTRACT_AUDIO:
        task.inputs.append(source_media)
        task.outputs.append(_ref(R.ARTIFACT_ROLE_ASR_AUDIO, key(job_id, stage, SOURCE, "asr_audio", "wav"), "audio/wav"))
        task.extract_audio.asr_sample_rate_hertz = 16000
    elif stage == P.STAGE_TRANSCRIBE:
        task.inputs.append(
            _ref(R.ARTIFACT_ROLE_ASR_AUDIO, key(job_id, P.STAGE_EXTRACT_AUDIO, SOURCE, "asr_audio", "wav"), "audio/wav")
        )
        task.outputs.append(_transcript(job_id))
        task.transcribe.model = job.transcription_options.model
        task.transcribe.language = job.source_language
        task.transcribe.word_timestamps = True
        task.transcribe.vad_filter = True
    elif stage == P.STAGE_TRANSLATE:
        task.inputs.append(_transcript(job_id))
        task.outputs.append(_translation(job_id, node.language))
        task.translate.source_language = source
        task.translate.target_language = node.language
    elif stage == P.STAGE_RENDER_SUBTITLES:
        task.inputs.append(_translation(job_id, node.language) if node.language else _transcript(job_id))
        formats = subtitle_formats(job)
        for fmt in formats:
            role, name, ext, content_type = _SUBTITLE_OUTPUTS[fmt]
            task.outputs.append(_ref(role, key(job_id, stage, node.language, name, ext), content_type, task.language))
        role, name, ext, content_type = TRANSCRIPT_JSON
        task.outputs.append(_ref(role, key(job_id, stage, node.language, name, ext), content_type, task.language))
        task.render_subtitles.formats.extend(formats)
        task.render_subtitles.transcript_json = True
        task.render_subtitles.frame_rate = frame_rate or 25.0
    elif stage == P.STAGE_TTS:
        if segment is None:
            raise ValueError("a tts task is for one segment")
        task.inputs.append(_translation(job_id, node.language))
        task.outputs.append(_speech(job_id, node.language, segment))
        task.tts.voice = dubbing.voices[node.language]
        task.tts.language = node.language
        task.tts.max_speaking_rate = speed_caps(job)[0]
    elif stage == P.STAGE_MIX:
        count = job.stages[_node_of(nodes, P.STAGE_TTS, node.language)].total_segments
        task.inputs.append(source_media)
        task.inputs.append(_translation(job_id, node.language))
        task.inputs.extend(_speech(job_id, node.language, i) for i in range(count))
        task.outputs.append(_mixed(job_id, node.language))
        task.outputs.append(_sync_report(job_id, node.language))
        task.mix.fit_policy = dubbing.fit_policy or P.FIT_POLICY_KEEP_TIMING
        task.mix.max_speed_factor, task.mix.hard_speed_cap = speed_caps(job)
        task.mix.ducking_level = dubbing.ducking_level or P.DUCKING_LEVEL_MEDIUM
        task.mix.segment_count = count
    elif stage == P.STAGE_ENCODE:
        ext, content_type = _AUDIO_OUTPUTS[dubbing.audio_format]
        task.inputs.append(_mixed(job_id, node.language))
        task.outputs.append(
            _ref(R.ARTIFACT_ROLE_ENCODED_AUDIO, key(job_id, stage, node.language, "dub", ext), content_type, node.language)
        )
        task.encode.audio_format = dubbing.audio_format or P.AUDIO_FORMAT_M4A
    elif stage == P.STAGE_MUX:
        task.inputs.extend([source_media, _mixed(job_id, node.language), _sync_report(job_id, node.language)])
        task.inputs.append(_translation(job_id, node.language))
        task.outputs.append(
            _ref(R.ARTIFACT_ROLE_VIDEO, key(job_id, stage, node.language, "dub", "mp4"), "video/mp4", node.language)
        )
        task.mux.fit_policy = dubbing.fit_policy or P.FIT_POLICY_KEEP_TIMING
        task.mux.keep_original_audio = dubbing.keep_original_audio
        task.mux.soft_subtitles = dubbing.soft_subtitles
        task.mux.burn_in = job.subtitle_options.burn_in
        task.mux.source_language = source
        task.mux.frame_rate = frame_rate or 25.0
    else:
        raise ValueError(f"no task for stage {stage}")
    return task


def _speech(job_id: str, language: str, segment: int) -> stages_pb2.ArtifactRef:
    """One segment's SynthesizedSpeech, `jobs/<job>/tts/pt/speech_segment.00042.pb`."""
    ref = _ref(
        R.ARTIFACT_ROLE_SPEECH_SEGMENT,
        key(job_id, P.STAGE_TTS, language, f"speech_segment.{segment:05d}", "pb"),
        "application/x-protobuf",
        language,
    )
    ref.segment_index = segment
    return ref


def _mixed(job_id: str, language: str) -> stages_pb2.ArtifactRef:
    return _ref(R.ARTIFACT_ROLE_MIXED_AUDIO, key(job_id, P.STAGE_MIX, language, "mixed_audio", "wav"), "audio/wav", language)


def _sync_report(job_id: str, language: str) -> stages_pb2.ArtifactRef:
    return _ref(R.ARTIFACT_ROLE_SYNC_REPORT, key(job_id, P.STAGE_MIX, language, "sync", "json"), "application/json", language)


def _node_of(nodes: list[Node], stage: int, language: str) -> int:
    index = node_index(nodes, stage, language or "_")
    if index is None:
        raise ValueError(f"the plan has no {stage_name(stage)} node for {language!r}")
    return index


def artifact_filename(job: jobs_pb2.Job, ref: stages_pb2.ArtifactRef) -> str:
    """`talk.pt.srt` for a Portuguese SRT of a job on `talk.mp4` (`talk.pt.mp4` for its dub)."""
    stem = PurePosixPath(job.display_name or "octavia").stem or "octavia"
    ext = ref.key.rsplit(".", 1)[-1]
    if ref.role == R.ARTIFACT_ROLE_SYNC_REPORT:
        ext = f"sync.{ext}"  # beside the transcript's talk.pt.json
    language = f".{ref.language}" if ref.language else ""
    return f"{stem}{language}.{ext}"


def has_picture(info: media_pb2.MediaInfo) -> bool:
    """Whether the input has a moving picture (cover art does not count)."""
    return any(s.type == media_pb2.STREAM_TYPE_VIDEO and not s.attached_picture for s in info.streams)


def video_frame_rate(info: media_pb2.MediaInfo) -> float:
    """The frame rate of the input's moving picture (cover art does not count); 0 without one."""
    for stream in info.streams:
        if stream.type == media_pb2.STREAM_TYPE_VIDEO and not stream.attached_picture and stream.frame_rate > 0:
            return stream.frame_rate
    return 0.0
