"""The JobService servicer: validates, asks the other services what it must know, and hands over to the orchestrator."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from dataclasses import dataclass

import grpc
import structlog
from octavia.billing.v1 import billing_pb2
from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from octavia.media.v1 import media_pb2, media_pb2_grpc
from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc
from octavia.translate.v1 import translate_pb2, translate_pb2_grpc
from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.auth import current_principal, current_user_id
from octavia_runtime.errors import ApiError, invalid_argument, not_found, request_id_reused, unimplemented
from octavia_runtime.languages import primary_language
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.ratelimit import Limiter
from octavia_runtime.resources import parse_name

from . import orchestrator, pipeline
from .credits import HOLD_SECONDS, Credits
from .pipeline import TERMINAL_STATES, video_frame_rate
from .runner import Runner
from .store import JobStore
from .views import job_event, job_message, now

log = structlog.get_logger("jobs")
P = jobs_pb2
HEARTBEAT_S = 15.0
CATALOGUE_TTL_S = 30.0
DELETE_SETTLE_S = 15.0
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MAX_SPEED_FACTOR = 1.5  # DubbingOptions.max_speed_factor's allowed range is 1.0 to this
MAX_HARD_SPEED_CAP = 2.0


class Catalogue:
    """What the transcribe, translate and tts workers can do, asked over gRPC and kept briefly."""

    def __init__(self, transcribe_channel, translate_channel, tts_channel):
        self.transcribe = transcribe_pb2_grpc.TranscribeServiceStub(transcribe_channel)
        self.translate = translate_pb2_grpc.TranslateServiceStub(translate_channel)
        self.tts = tts_pb2_grpc.TtsServiceStub(tts_channel)
        self._pairs: tuple[float, set[tuple[str, str]]] | None = None
        self._models: tuple[float, dict[str, transcribe_pb2.Model], str] | None = None
        self._voices: dict[str, tuple[float, list[tts_pb2.Voice]]] = {}

    async def voices(self, language: str) -> list[tts_pb2.Voice]:
        """The voices speaking `language`, its default voice first."""
        cached = self._voices.get(language)
        if cached is None or time.monotonic() - cached[0] > CATALOGUE_TTL_S:
            reply = await self.tts.ListVoices(tts_pb2.ListVoicesRequest(language=language, page_size=1000), timeout=5)
            cached = self._voices[language] = (time.monotonic(), sorted(reply.voices, key=lambda v: not v.is_default))
        return cached[1]

    async def pairs(self) -> set[tuple[str, str]]:
        if self._pairs is None or time.monotonic() - self._pairs[0] > CATALOGUE_TTL_S:
            reply = await self.translate.ListLanguagePairs(translate_pb2.ListLanguagePairsRequest(), timeout=5)
            pairs = {(primary_language(p.source_language), primary_language(p.target_language)) for p in reply.language_pairs}
            self._pairs = (time.monotonic(), pairs)
        return self._pairs[1]

    async def models(self) -> tuple[dict[str, transcribe_pb2.Model], str]:
        if self._models is None or time.monotonic() - self._models[0] > CATALOGUE_TTL_S:
            reply = await self.transcribe.ListModels(transcribe_pb2.ListModelsRequest(), timeout=5)
            self._models = (time.monotonic(), {m.name: m for m in reply.models if m.available}, reply.default_model)
        return self._models[1], self._models[2]


@dataclass(frozen=True)
class Admission:
    """Who may create jobs, and how often."""

    limiter: Limiter  # jobs created per user
    require_verified_email: bool


class JobApi(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self, store: JobStore, runner: Runner, media_channel, catalogue: Catalogue, nc, credits: Credits, admission: Admission
    ):
        self.store = store
        self.runner = runner
        self.media = media_pb2_grpc.MediaServiceStub(media_channel)
        self.catalogue = catalogue
        self.nc = nc
        self.credits = credits
        self.admission = admission

    async def CreateJob(self, request, context):
        owner = current_user_id()
        spec = request.job
        await self._validate(spec)
        request_hash = hashlib.sha256(spec.SerializeToString(deterministic=True)).digest()
        if request.request_id:
            existing = await self.store.by_request_id(owner, request.request_id)
            if existing is not None:  # a retry: free, whatever the limits say now
                return P.CreateJobResponse(job=self._same_request(existing, request_hash))
        if self.admission.require_verified_email and not current_principal().email_verified:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "EMAIL_NOT_VERIFIED",
                "confirm your email address first: follow the link in the verification email (or ask for a new one)",
            )
        await self.admission.limiter.hit(owner)
        job_id = uuid.uuid4()
        # The input's probe, the language and voice checks and the job's reservation row (see _reserve) side by side.
        try:
            asset, _, voices, _ = await asyncio.gather(
                self._input(spec, owner),
                self._check_languages(spec),
                self._voices(spec),
                self.store.reserving(job_id),
            )
        except Exception:
            await self.store.reserved_without_job(job_id)
            raise

        job = P.Job()
        job.CopyFrom(spec)
        for output_only in ("detected_language", "progress", "stages", "artifacts", "error", "start_time", "end_time"):
            job.ClearField(output_only)
        job.name, job.owner = f"jobs/{job_id}", f"users/{owner}"
        job.display_name = spec.display_name or asset.asset.filename
        job.media_duration.CopyFrom(asset.media_info.duration)
        job.request_id = request.request_id
        job.priority = spec.priority or P.PRIORITY_DEFAULT
        job.dubbing_options.voices.update(voices)  # the job records the voice each language gets
        frame_rate = video_frame_rate(asset.media_info)
        effects = orchestrator.start(job, pipeline.plan(job.kind, list(job.target_languages)), now(), frame_rate)
        hold = await self._reserve(job_id, owner, job)
        try:
            row, created = await self.store.create(
                job_id, owner, job, request.request_id or None, request_hash, effects.publish, frame_rate, hold.name
            )
        except BaseException:
            await self._give_back(job_id)  # no job: its hold goes back now, not when the runner finds it abandoned
            raise
        if not created:  # a concurrent call with the same request_id won: this one's hold goes back
            await self._give_back(job_id)
            return P.CreateJobResponse(job=self._same_request(row, request_hash))
        await self.runner.after_commit(row, effects)
        return P.CreateJobResponse(job=job_message(row))

    async def _reserve(self, job_id: uuid.UUID, owner: str, job: jobs_pb2.Job) -> billing_pb2.Hold:
        """Hold the job's price before the job exists; a refusal leaves neither job nor hold.

        The job's reservation row, written before this, covers a crash (or a
        lost answer) between the hold and the job: the runner releases holds
        whose job never appeared.
        """
        started = time.perf_counter()
        try:
            hold = await self.credits.reserve(job_id, owner, job)
        except ApiError:  # billing refused: no hold was made
            await self.store.reserved_without_job(job_id)
            raise
        HOLD_SECONDS.observe(time.perf_counter() - started)
        job.credits_held = hold.credits
        return hold

    async def _give_back(self, job_id: uuid.UUID) -> None:
        """Release the hold of a job that was not created, and forget its reservation.

        Best effort: if billing or Postgres is away, the runner releases the
        abandoned reservation later (see _reserve)."""
        try:
            if await self.credits.release_reference(job_id):
                await self.store.reserved_without_job(job_id)
        except Exception:  # noqa: BLE001 - the original error is what the caller must hear
            log.warning("jobs.hold_release_deferred", job_id=str(job_id), exc_info=True)

    def _same_request(self, row, request_hash: bytes) -> jobs_pb2.Job:
        if row.request_hash != request_hash:
            raise request_id_reused("job", f"jobs/{row.id}")
        return job_message(row)

    async def _validate(self, job: jobs_pb2.Job) -> None:
        """What the API's declared limits cannot say (octavia_runtime/validation.py checked those)."""
        bad: dict[str, str] = {}
        if job.kind == P.JOB_KIND_UNSPECIFIED:
            bad["job.kind"] = "required"
        if not job.input_asset:
            bad["job.input_asset"] = "required: the asset to process, assets/{asset}"
        else:
            try:  # a name that cannot be an asset's is a bad field here, not media that the probe refuses
                parse_name(job.input_asset, "assets", field="job.input_asset")
            except ApiError as bad_name:
                bad.update(bad_name.fields)
        targets = list(job.target_languages)
        if job.kind == P.JOB_KIND_TRANSCRIPTION and targets:
            bad["job.target_languages"] = "must be empty for a transcription"
        if job.kind != P.JOB_KIND_TRANSCRIPTION and job.kind and not targets:
            bad["job.target_languages"] = "at least one target language is required"
        if len({primary_language(t) for t in targets}) != len(targets):
            bad["job.target_languages"] = "languages must not repeat"
        for tag in (*targets, *([job.source_language] if job.source_language else [])):
            if not _LANGUAGE.match(tag):
                bad["job.target_languages" if tag in targets else "job.source_language"] = f"{tag!r} is not a BCP-47 language tag"
        if job.source_language and primary_language(job.source_language) in {primary_language(t) for t in targets}:
            bad["job.target_languages"] = "a target language must differ from the source language"
        bad.update(_dubbing_problems(job))
        if job.subtitle_options.burn_in and job.kind != P.JOB_KIND_VIDEO_DUBBING:
            if job.kind == P.JOB_KIND_SUBTITLES:
                raise unimplemented("burning subtitles into the video of a SUBTITLES job (VIDEO_DUBBING jobs can)")
            bad["job.subtitle_options.burn_in"] = "needs a video output: VIDEO_DUBBING"
        if bad:
            raise invalid_argument(bad)

    async def _voices(self, job: jobs_pb2.Job) -> dict[str, str]:
        """The voice of each target language of a dubbing job: the one asked for, which
        must speak the language, or the language's default; a language no voice speaks
        is refused by name."""
        if job.kind not in pipeline.DUBBING_KINDS:
            return {}
        chosen = {}
        for language in job.target_languages:
            voices = await self.catalogue.voices(language)
            if not voices:
                raise invalid_argument(
                    {"job.target_languages": f"no voice speaks {language}, so it cannot be dubbed; see ListVoices"},
                    reason="UNSUPPORTED_LANGUAGE",
                )
            wanted = job.dubbing_options.voices.get(language)
            if wanted and wanted not in {voice.name for voice in voices}:
                raise invalid_argument(
                    {f"job.dubbing_options.voices[{language}]": f"{wanted} is not a voice for {language}; see ListVoices"},
                    reason="UNSUPPORTED_VOICE",
                )
            chosen[language] = wanted or voices[0].name
        return chosen

    async def _input(self, job: jobs_pb2.Job, owner: str) -> media_pb2.ProbeMediaResponse:
        """The input, probed: media of the caller's, with a picture if the job dubs a video."""
        asset = job.input_asset
        try:
            reply = await self.media.ProbeMedia(media_pb2.ProbeMediaRequest(asset=asset, owner=f"users/{owner}"), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found("asset", asset) from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise invalid_argument({"job.input_asset": exc.details() or ""}, reason="INPUT_NOT_MEDIA") from None
            raise
        if job.kind == P.JOB_KIND_VIDEO_DUBBING and not pipeline.has_picture(reply.media_info):
            raise invalid_argument(
                {"job.input_asset": f"{asset} has no video to dub; JOB_KIND_AUDIO_TRANSLATION dubs its sound"},
                reason="NO_VIDEO_STREAM",
            )
        return reply

    async def _check_languages(self, job: jobs_pb2.Job) -> None:
        models, default_model = await self.catalogue.models()
        model_name = job.transcription_options.model or default_model
        model = models.get(model_name)
        if model is None:
            raise invalid_argument(
                {"job.transcription_options.model": f"{model_name!r} is not available; available: {', '.join(sorted(models))}"},
                reason="UNSUPPORTED_MODEL",
            )
        source = primary_language(job.source_language) if job.source_language else ""
        if source and model.languages and source not in {primary_language(lang) for lang in model.languages}:
            raise invalid_argument(
                {"job.source_language": f"model {model_name} does not recognize {job.source_language}"},
                reason="UNSUPPORTED_LANGUAGE",
            )
        if not job.target_languages:
            return
        pairs = await self.catalogue.pairs()
        for target in job.target_languages:
            if source and (source, primary_language(target)) not in pairs:
                raise invalid_argument(
                    {"job.target_languages": f"no engine translates {job.source_language} to {target}"},
                    reason="UNSUPPORTED_LANGUAGE",
                )
            if not source and not any(t == primary_language(target) for _, t in pairs):
                raise invalid_argument(
                    {"job.target_languages": f"no engine translates into {target}"}, reason="UNSUPPORTED_LANGUAGE"
                )

    async def GetJob(self, request, context):
        row = await self.store.get(current_user_id(), parse_name(request.name, "jobs", field="name"))
        if row is None:  # another user's job is as absent as a job that never existed
            raise not_found("job", request.name)
        return P.GetJobResponse(job=job_message(row))

    async def ListJobs(self, request, context):
        scope = f"jobs?state={request.state}&kind={request.kind}"
        limit, after = page_size(request.page_size), keyset_after(request.page_token, scope)
        rows = await self.store.list(current_user_id(), limit + 1, state=request.state, kind=request.kind, after=after)
        page, next_token = keyset_page(rows, limit, scope)
        return P.ListJobsResponse(jobs=[job_message(row) for row in page], next_page_token=next_token)

    async def CancelJob(self, request, context):
        job_id = parse_name(request.name, "jobs", field="name")
        row = await self.store.get(current_user_id(), job_id)
        if row is None:
            raise not_found("job", request.name)
        if row.state in (P.STATE_SUCCEEDED, P.STATE_FAILED):
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED", f"{request.name} has already finished")
        done = await self.runner.change(job_id, lambda locked: orchestrator.cancel(locked.job, now()))
        return P.CancelJobResponse(job=job_message(done[0] if done else row))

    async def DeleteJob(self, request, context):
        owner = current_user_id()
        job_id = parse_name(request.name, "jobs", field="name")
        row = await self.store.get(owner, job_id)
        if row is None:
            raise not_found("job", request.name)
        if row.state not in TERMINAL_STATES:
            if not request.force:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "JOB_NOT_FINISHED",
                    f"{request.name} is still running: cancel it first, or delete with force",
                )
            await self.runner.change(job_id, lambda locked: orchestrator.cancel(locked.job, now()))
            await self._settle(job_id)
        await self.media.DeleteJobArtifacts(
            media_pb2.DeleteJobArtifactsRequest(job=f"jobs/{job_id}", owner=f"users/{owner}"), timeout=60
        )
        await self.store.delete(job_id)
        gone = P.JobEvent(job_name=f"jobs/{job_id}", type=P.JOB_EVENT_TYPE_STATE_CHANGED, final=True)
        gone.error.code, gone.error.message = grpc.StatusCode.NOT_FOUND.value[0], f"jobs/{job_id} was deleted"
        gone.event_time.GetCurrentTime()
        await self.runner.announce(gone)
        return P.DeleteJobResponse()

    async def _settle(self, job_id) -> None:
        """Give running stages a moment to stop (they write nothing after they notice the flag)."""
        deadline = time.monotonic() + DELETE_SETTLE_S
        while time.monotonic() < deadline:
            row = await self.store.get(None, job_id)
            if row is None or row.state in TERMINAL_STATES:
                return
            await asyncio.sleep(0.2)

    async def WatchJob(self, request, context):
        owner = current_user_id()
        job_id = parse_name(request.name, "jobs", field="name")
        events: asyncio.Queue[bytes] = asyncio.Queue()

        async def deliver(msg) -> None:
            events.put_nowait(msg.data)

        # Subscribe before reading the snapshot, so nothing between the two is missed.
        subscription = await self.nc.subscribe(bus.job_event_subject(str(job_id)), cb=deliver)
        try:
            row = await self.store.get(owner, job_id)
            if row is None:
                raise not_found("job", request.name)
            snapshot = job_event(row, P.JOB_EVENT_TYPE_SNAPSHOT)
            yield P.WatchJobResponse(event=snapshot)
            if snapshot.final:
                return
            sequence = row.event_seq
            while True:
                try:
                    data = await asyncio.wait_for(events.get(), HEARTBEAT_S)
                except TimeoutError:
                    beat = P.JobEvent(job_name=request.name, type=P.JOB_EVENT_TYPE_HEARTBEAT, sequence=sequence)
                    beat.event_time.GetCurrentTime()
                    yield P.WatchJobResponse(event=beat)
                    continue
                event = P.JobEvent.FromString(data)
                if event.sequence and event.sequence <= sequence:
                    continue  # older than what this watcher has seen
                sequence = event.sequence or sequence
                yield P.WatchJobResponse(event=event)
                if event.final:
                    return
        finally:
            await subscription.unsubscribe()


def _dubbing_problems(job: jobs_pb2.Job) -> dict[str, str]:
    """What is wrong with a job's dubbing options, by field."""
    options, bad = job.dubbing_options, {}
    if job.kind not in pipeline.DUBBING_KINDS:
        if job.HasField("dubbing_options"):
            bad["job.dubbing_options"] = "only AUDIO_TRANSLATION and VIDEO_DUBBING jobs are dubbed"
        return bad
    if any(language not in job.target_languages for language in options.voices):
        bad["job.dubbing_options.voices"] = "keys must be target languages of the job"
    if any(not voice.startswith("voices/") for voice in options.voices.values()):
        bad["job.dubbing_options.voices"] = "values must be voice names, voices/{voice} (see ListVoices)"
    cap = options.max_speed_factor
    if cap and not 1.0 <= cap <= MAX_SPEED_FACTOR:
        bad["job.dubbing_options.max_speed_factor"] = (
            f"0 (the default, {pipeline.DEFAULT_MAX_SPEED_FACTOR}) or 1.0 to {MAX_SPEED_FACTOR}"
        )
    hard = options.hard_speed_cap
    if hard and not max(1.0, cap or pipeline.DEFAULT_MAX_SPEED_FACTOR) <= hard <= MAX_HARD_SPEED_CAP:
        bad["job.dubbing_options.hard_speed_cap"] = (
            f"0 (the default, {pipeline.DEFAULT_HARD_SPEED_CAP}) or max_speed_factor to {MAX_HARD_SPEED_CAP}"
        )
    if job.kind == P.JOB_KIND_AUDIO_TRANSLATION:
        if options.fit_policy == P.FIT_POLICY_EXTEND_VIDEO:
            bad["job.dubbing_options.fit_policy"] = "FIT_POLICY_EXTEND_VIDEO needs a video output: VIDEO_DUBBING"
        for flag in ("keep_original_audio", "soft_subtitles"):
            if getattr(options, flag):
                bad[f"job.dubbing_options.{flag}"] = "applies to VIDEO_DUBBING only"
    return bad
