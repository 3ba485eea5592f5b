"""A stage result the jobs service cannot use fails the job at once, saying why, and holds nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from octavia.jobs.v1 import jobs_pb2, stages_pb2

from octavia_runtime import bus
from services.media.ffmpeg import ffmpeg_exe

from .jobs_flow import create_job, uploaded_asset, wait_for

pytestmark = pytest.mark.integration
FINAL = ("STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED")


def unusable_probe_result(job_id: str) -> stages_pb2.StageEvent:
    """A probe 'success' whose output names a blob outside the job: media refuses to register it."""
    event = stages_pb2.StageEvent(
        task_id=f"{job_id}/probe/_/_/1", job=f"jobs/{job_id}", stage=jobs_pb2.STAGE_PROBE, attempt=1,
        outcome=stages_pb2.STAGE_OUTCOME_SUCCEEDED,
    )  # fmt: skip
    event.outputs.add(
        role=stages_pb2.ARTIFACT_ROLE_SUBTITLES_SRT, key="jobs/not-this-job/x.srt", content_type="application/x-subrip"
    )
    return event


async def test_a_result_that_cannot_be_used_fails_the_job_at_once_and_releases_its_credits(stack, rest, signed_in, tmp_path):
    audio = tmp_path / "tone.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=3", str(audio)], check=True)
    asset = uploaded_asset(rest, signed_in.headers, Path(audio))
    nc = await bus.connect(stack.nats_url, "test-job-events")
    js = nc.jetstream()
    try:
        # The forged result must reach the orchestrator before the real probe's (a few tens of
        # milliseconds later); should the real one win, the job simply runs, and we try again.
        for _ in range(3):
            created = create_job(rest, signed_in.headers, {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset})
            assert created.status_code == 200, created.text
            name = created.json()["job"]["name"]
            await js.publish(
                bus.event_subject(name.removeprefix("jobs/")),
                unusable_probe_result(name.removeprefix("jobs/")).SerializeToString(),
            )
            started = time.monotonic()
            job = wait_for(rest, signed_in.headers, name, lambda j: j["state"] in FINAL, timeout=60)
            if job["state"] == "STATE_FAILED":
                break
    finally:
        await nc.close()
    assert job["state"] == "STATE_FAILED", job
    assert time.monotonic() - started < 20  # at once, not after every retry or the stage's time limit
    reasons = [d["reason"] for d in job["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons == ["RESULT_REJECTED"]
    assert "could not be used" in job["error"]["message"] and "INVALID_ARGUMENT" in job["error"]["message"]
    assert job["creditsHeld"] == "0" and job["creditsCharged"] == "0"
