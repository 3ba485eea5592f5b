"""Who may create jobs and how often, on a jobs replica configured to require a verified
email and to allow 3 jobs a minute per user (the stack's own jobs service keeps the defaults).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from octavia_runtime.errors import error_info
from scripts import sample_media

from .jobs_flow import uploaded_asset
from .mailbox import verification_token, wait_for_message
from .replicas import replica
from .test_auth_verification import sign_up_and_log_in

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_jobs(stack, tmp_path_factory) -> Iterator[jobs_pb2_grpc.JobServiceStub]:
    """A second jobs replica, beside the stack's, with its own admission settings."""
    settings = {"OCTAVIA_REQUIRE_VERIFIED_EMAIL": "true", "OCTAVIA_RATE_LIMITS": "create_job_user=3/60"}
    with replica(stack, "jobs", tmp_path_factory.mktemp("strict-jobs"), **settings) as jobs:
        yield jobs_pb2_grpc.JobServiceStub(jobs.channel)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return sample_media.sample_video(tmp_path_factory.mktemp("admission") / "talk.mp4")


def transcription(asset: str) -> jobs_pb2.CreateJobRequest:
    job = jobs_pb2.Job(
        kind=jobs_pb2.JOB_KIND_TRANSCRIPTION,
        input_asset=asset,
        priority=jobs_pb2.PRIORITY_LOW,
        transcription_options=jobs_pb2.TranscriptionOptions(model="tiny.en"),
    )
    return jobs_pb2.CreateJobRequest(job=job)


def refusal(call) -> tuple[grpc.StatusCode, str, grpc.RpcError]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), error_info(caught.value).reason, caught.value


def test_an_unverified_user_may_create_jobs_once_they_confirm_their_email(stack, rest, strict_jobs, clip):
    email, headers, token = sign_up_and_log_in(rest)
    metadata = (("authorization", f"Bearer {token}"),)
    asset = uploaded_asset(rest, headers, clip)

    code, reason, error = refusal(lambda: strict_jobs.CreateJob(transcription(asset), metadata=metadata))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_NOT_VERIFIED")
    assert "verification email" in error.details()
    assert rest.get("/v1/jobs", headers=headers).json().get("jobs", []) == [], "a refused job leaves nothing"
    assert rest.get("/v1/balance", headers=headers).json()["balance"].get("heldCredits", "0") == "0"

    token_in_email = verification_token(wait_for_message(stack, email))
    assert rest.post("/v1/auth/verify-email", json={"token": token_in_email}).status_code == 200
    created = strict_jobs.CreateJob(transcription(asset), metadata=metadata).job
    assert created.state == jobs_pb2.STATE_QUEUED and created.credits_held > 0


def test_job_creation_is_limited_per_user_with_a_retry_hint(stack, rest, strict_jobs, clip):
    email, headers, token = sign_up_and_log_in(rest)
    metadata = (("authorization", f"Bearer {token}"),)
    assert (
        rest.post("/v1/auth/verify-email", json={"token": verification_token(wait_for_message(stack, email))}).status_code == 200
    )
    asset = uploaded_asset(rest, headers, clip)

    for _ in range(3):
        strict_jobs.CreateJob(transcription(asset), metadata=metadata)
    code, reason, error = refusal(lambda: strict_jobs.CreateJob(transcription(asset), metadata=metadata))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    retry_after = dict(error.trailing_metadata())["retry-after"]
    assert 1 <= int(retry_after) <= 20, "one job every 20 s: the next is allowed within 20 s"

    # Another user has a limit of their own.
    other_email, other_headers, other_token = sign_up_and_log_in(rest)
    rest.post("/v1/auth/verify-email", json={"token": verification_token(wait_for_message(stack, other_email))})
    other_asset = uploaded_asset(rest, other_headers, clip)
    assert strict_jobs.CreateJob(transcription(other_asset), metadata=(("authorization", f"Bearer {other_token}"),)).job.name
