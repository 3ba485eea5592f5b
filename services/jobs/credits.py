"""A job's credits, through the billing service: reserve before it runs, settle when it ends.

- CreateJob reserves the job's price as a hold with reference `jobs/{id}`
  before the job exists; billing refuses what the balance does not cover.
- When the job ends, the orchestrator owes a settlement (orchestrator.settle),
  written in the transaction that ends it; the runner delivers it here:
  capture for a success, release otherwise. Billing makes both idempotent and
  refuses a capture after a release (and the reverse), so a settlement
  delivered twice, or late, never charges twice.
"""

from __future__ import annotations

from uuid import UUID

import grpc
import structlog
from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc
from octavia.jobs.v1 import jobs_pb2
from prometheus_client import Histogram

from octavia_runtime.errors import ApiError, error_info

from .orchestrator import Settlement

log = structlog.get_logger("credits")

HOLD_SECONDS = Histogram(
    "octavia_jobs_credit_hold_seconds",
    "Time CreateJob waits for billing to hold a job's credits (ReserveCredits; the reservation row is written beside the probe)",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1),
)

_KIND_LABELS = {
    jobs_pb2.JOB_KIND_TRANSCRIPTION: "Transcription",
    jobs_pb2.JOB_KIND_SUBTITLES: "Subtitles",
    jobs_pb2.JOB_KIND_AUDIO_TRANSLATION: "Audio translation",
    jobs_pb2.JOB_KIND_VIDEO_DUBBING: "Video dubbing",
}
# Billing answered, and the settlement can never apply: the hold went the other way already.
_SETTLED_OTHERWISE = ("HOLD_RELEASED", "HOLD_CAPTURED")


def usage(job: jobs_pb2.Job) -> billing_pb2.Usage:
    return billing_pb2.Usage(
        kind=job.kind,
        duration=duration_pb2.Duration(seconds=job.media_duration.seconds, nanos=job.media_duration.nanos),
        target_language_count=len(job.target_languages),
    )


def description(job: jobs_pb2.Job) -> str:
    """The line on the user's statement, e.g. "Subtitles, 3 min 5 s, 2 languages: pt, es"."""
    seconds = round(job.media_duration.ToTimedelta().total_seconds())
    length = f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
    text = f"{_KIND_LABELS.get(job.kind, 'Job')}, {length}"
    if job.target_languages:
        count = len(job.target_languages)
        text += f", {count} language{'s' if count > 1 else ''}: {', '.join(job.target_languages)}"
    return text


class Credits:
    def __init__(self, billing_channel: grpc.aio.Channel):
        self.billing = billing_pb2_grpc.BillingServiceStub(billing_channel)

    async def reserve(self, job_id: UUID, owner: str, job: jobs_pb2.Job) -> billing_pb2.Hold:
        """Hold the job's price; not enough credits is FAILED_PRECONDITION INSUFFICIENT_CREDITS, as billing says."""
        request = billing_pb2.ReserveCreditsRequest(
            user=f"users/{owner}", reference=f"jobs/{job_id}", usage=usage(job), description=description(job)
        )
        try:
            reply = await self.billing.ReserveCredits(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None:
                raise ApiError(exc.code(), info.reason, exc.details() or "", metadata=dict(info.metadata)) from None
            raise
        return reply.hold

    async def release_reference(self, job_id: UUID) -> bool:
        """Release whatever hold `jobs/{job_id}` has (its job was never created); True when none is left held."""
        try:
            reply = await self.billing.GetHold(billing_pb2.GetHoldRequest(reference=f"jobs/{job_id}"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return True
            log.warning("credits.hold_unknown", job_id=str(job_id), code=exc.code().name, error=exc.details())
            return False
        return await self.deliver(Settlement(job_id, reply.hold.name, capture=False))

    async def deliver(self, settlement: Settlement) -> bool:
        """Capture or release a hold; True once billing has it settled (either way), False to try again later."""
        try:
            if settlement.capture:
                await self.billing.CaptureHold(billing_pb2.CaptureHoldRequest(name=settlement.hold), timeout=10)
            else:
                await self.billing.ReleaseHold(billing_pb2.ReleaseHoldRequest(name=settlement.hold), timeout=10)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if exc.code() == grpc.StatusCode.NOT_FOUND or (info is not None and info.reason in _SETTLED_OTHERWISE):
                # Nothing to retry: the hold went the other way already, or never existed. Worth a look.
                reason = info.reason if info else exc.code().name
                log.error("credits.settled_otherwise", job_id=str(settlement.job_id), hold=settlement.hold, reason=reason)
                return True
            log.warning("credits.settle_failed", job_id=str(settlement.job_id), code=exc.code().name, error=exc.details())
            return False
        return True
