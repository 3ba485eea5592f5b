"""Jobs end to end, as a user sees them through Envoy: upload, job, live progress, subtitles, and what goes wrong."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import jiwer
import pytest

from scripts import sample_media
from scripts import stack as local_stack

from .conftest import PASSWORD, new_email
from .jobs_flow import create_job, download, upload, uploaded_asset, wait_for, watch

pytestmark = pytest.mark.integration

VALIDATOR = Path(__file__).resolve().parent.parent / "subtitle_validators" / "validate.js"
TERMINAL = {"STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED"}


def rest_user(rest: httpx.Client) -> dict:
    email = new_email()
    assert rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 200
    tokens = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["tokens"]
    return {"authorization": f"Bearer {tokens['accessToken']}"}


@pytest.fixture
def user(rest) -> dict:
    return rest_user(rest)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    video = sample_media.sample_video(folder / "talk.mp4")
    long = sample_media.long_speech(folder / "long.wav", 45)
    return {
        "video": video,
        "long": long,
        "silent": sample_media.silent_audio(folder / "silence.wav", 4),
        "text": sample_media.not_media(folder / "notes.mp4"),
        "truncated": sample_media.truncated(video, folder / "broken.mp4"),
    }


def subtitles_job(asset: str, targets=("pt",), **extra) -> dict:
    job = {
        "kind": "JOB_KIND_SUBTITLES",
        "inputAsset": asset,
        "sourceLanguage": "en",
        "targetLanguages": list(targets),
        "transcriptionOptions": {"model": "tiny.en"},
    }
    job.update(extra)
    return job


def assert_valid_subtitles(path: Path) -> None:
    if not shutil.which("node") or not (VALIDATOR.parent / "node_modules").exists():
        pytest.skip("the strict subtitle validators need node and `make setup` (npm)")
    result = subprocess.run(["node", str(VALIDATOR), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def cue_lines(text: str) -> list[str]:
    """The caption lines of an SRT or VTT file (no numbers, timings or header)."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or "-->" in line or line.strip().isdigit() or line.startswith("WEBVTT"):
            continue
        lines.append(line)
    return lines


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def test_a_video_becomes_english_and_portuguese_subtitles_with_live_progress(rest, user, media, tmp_path):
    asset = uploaded_asset(rest, user, media["video"])
    created = create_job(rest, user, subtitles_job(asset))
    assert created.status_code == 200, created.text
    job = created.json()["job"]
    assert job["state"] == "STATE_QUEUED"

    events = watch(str(rest.base_url), user, job["name"])
    assert events[0]["type"] == "JOB_EVENT_TYPE_SNAPSHOT"
    final = events[-1]
    assert final["final"] and final["state"] == "STATE_SUCCEEDED", final
    percents = [int(e["progress"]["percent"]) for e in events if e.get("progress")]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(e["type"] == "JOB_EVENT_TYPE_PROGRESS" for e in events)

    job = final["job"]
    assert job["detectedLanguage"] == "en"
    assert all(stage["state"] == "STAGE_STATE_SUCCEEDED" for stage in job["stages"])
    files = {a["filename"]: a for a in job["artifacts"]}
    assert set(files) == {f"talk.{lang}.{ext}" for lang in ("en", "pt") for ext in ("srt", "vtt", "json")}

    for name, artifact in files.items():
        response = download(rest, user, artifact["asset"])
        assert response.status_code == 200
        assert f'filename="{name}"' in response.headers["content-disposition"]
        (tmp_path / name).write_bytes(response.content)
        if name.endswith((".srt", ".vtt")):
            assert_valid_subtitles(tmp_path / name)
            lines = cue_lines(response.text)
            assert lines and all(len(line) <= 42 for line in lines)

    transcript = httpx.Response(200, content=(tmp_path / "talk.en.json").read_bytes()).json()
    spoken = " ".join(segment["text"] for segment in transcript["segments"])
    error = jiwer.wer(words(sample_media.DEMO_TEXT), words(spoken))
    assert error <= 0.15, f"word error rate {error:.3f}: {spoken}"
    assert all(word["probability"] > 0 for segment in transcript["segments"] for word in segment["words"])
    portuguese = " ".join(cue_lines((tmp_path / "talk.pt.srt").read_text()))
    assert words(portuguese) != words(spoken) and len(portuguese) > 0.5 * len(spoken)


def test_a_repeated_request_id_returns_the_same_job_and_a_different_body_is_refused(rest, user, media):
    asset = uploaded_asset(rest, user, media["video"])
    request_id = uuid.uuid4().hex
    transcription = {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "transcriptionOptions": {"model": "tiny.en"}}
    first = create_job(rest, user, transcription, request_id)
    again = create_job(rest, user, transcription, request_id)
    assert first.status_code == again.status_code == 200
    assert first.json()["job"]["name"] == again.json()["job"]["name"]
    different = create_job(rest, user, {**transcription, "displayName": "another"}, request_id)
    assert different.status_code == 409, different.text
    assert different.json()["details"][0]["reason"] == "REQUEST_ID_REUSED"
    job = watch(str(rest.base_url), user, first.json()["job"]["name"])[-1]
    assert job["state"] == "STATE_SUCCEEDED"
    assert {a["filename"] for a in job["job"]["artifacts"]} == {"talk.en.srt", "talk.en.vtt", "talk.en.json"}


def test_an_unsupported_language_pair_is_refused_at_creation_naming_it(rest, user, media):
    asset = uploaded_asset(rest, user, media["video"])
    refused = create_job(rest, user, subtitles_job(asset, targets=("tlh",)))
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["details"][0]["reason"] == "UNSUPPORTED_LANGUAGE"
    assert "en to tlh" in body["message"]
    assert rest.get("/v1/jobs", headers=user).json()["jobs"] == []


def test_bad_requests_are_clear_errors(rest, user, media):
    asset = uploaded_asset(rest, user, media["video"])
    cases = [
        ({"kind": "JOB_KIND_SUBTITLES", "inputAsset": asset}, "job.target_languages"),
        ({"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "targetLanguages": ["pt"]}, "job.target_languages"),
        ({"inputAsset": asset}, "job.kind"),
        (subtitles_job(asset, targets=("pt", "pt")), "job.target_languages"),
        (subtitles_job(asset, targets=("en",)), "job.target_languages"),
        ({**subtitles_job(asset), "transcriptionOptions": {"model": "huge"}}, "job.transcription_options.model"),
    ]
    for job, field in cases:
        response = create_job(rest, user, job)
        assert response.status_code == 400, (job, response.text)
        violations = [v["field"] for d in response.json()["details"] for v in d.get("fieldViolations", [])]
        assert field in violations, (job, response.text)
    assert rest.get("/v1/jobs?pageSize=-1", headers=user).status_code == 400
    assert rest.get("/v1/jobs", headers=user).json()["jobs"] == []


def test_another_users_job_and_asset_are_not_found(rest, user, media):
    asset = uploaded_asset(rest, user, media["video"])
    job = create_job(rest, user, subtitles_job(asset)).json()["job"]
    stranger = rest_user(rest)
    for call in (
        lambda: rest.get(f"/v1/{job['name']}", headers=stranger),
        lambda: rest.post(f"/v1/{job['name']}:cancel", headers=stranger, json={}),
        lambda: rest.delete(f"/v1/{job['name']}", headers=stranger),
        lambda: rest.get(f"/v1/{job['name']}:watch", headers=stranger),
    ):
        assert call().status_code == 404
    # Nor can they start a job on someone else's upload.
    assert create_job(rest, stranger, subtitles_job(asset)).status_code == 404
    watch(str(rest.base_url), user, job["name"])


def test_jobs_are_listed_newest_first_filtered_and_paged(rest, user, media):
    asset = uploaded_asset(rest, user, media["video"])
    names = []
    for _ in range(3):
        transcription = {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "transcriptionOptions": {"model": "tiny.en"}}
        names.append(create_job(rest, user, transcription).json()["job"]["name"])
    names.append(create_job(rest, user, subtitles_job(asset)).json()["job"]["name"])
    for name in names:
        watch(str(rest.base_url), user, name)
    page = rest.get("/v1/jobs?pageSize=2", headers=user).json()
    rest_page = rest.get(f"/v1/jobs?pageSize=2&pageToken={page['nextPageToken']}", headers=user).json()
    assert [j["name"] for j in page["jobs"] + rest_page["jobs"]] == names[::-1]
    assert rest_page["nextPageToken"] == ""
    subtitles = rest.get("/v1/jobs?kind=JOB_KIND_SUBTITLES", headers=user).json()["jobs"]
    assert [j["name"] for j in subtitles] == [names[3]]
    done = rest.get("/v1/jobs?state=STATE_SUCCEEDED", headers=user).json()["jobs"]
    assert len(done) == 4
    assert rest.get("/v1/jobs?state=STATE_RUNNING", headers=user).json()["jobs"] == []


def test_a_silent_file_fails_with_a_clear_reason_and_leaves_nothing(rest, user, media):
    asset = uploaded_asset(rest, user, media["silent"])
    job = create_job(rest, user, subtitles_job(asset)).json()["job"]
    final = watch(str(rest.base_url), user, job["name"])[-1]
    assert final["state"] == "STATE_FAILED"
    assert final["error"]["details"][0]["reason"] == "NO_SPEECH"
    assert "no speech" in final["error"]["message"]
    assert final["job"]["artifacts"] == []
    artifacts = rest.get(f"/v1/assets?job={job['name']}", headers=user).json()["assets"]
    assert artifacts == []


@pytest.mark.parametrize("sample", ["text", "truncated"])
def test_a_file_that_is_not_media_is_refused_at_upload_and_no_job_can_use_it(rest, user, media, sample):
    done = upload(rest, user, media[sample], "video/mp4")
    response = done["response"]
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["reason"] == "NOT_MEDIA"
    upload_ = rest.get(f"/v1/{done['upload']['name']}", headers=user).json()["upload"]
    assert upload_["state"] == "UPLOAD_STATE_FAILED"
    assert rest.get("/v1/assets", headers=user).json()["assets"] == []


def test_cancel_stops_a_running_job_and_delete_removes_it_with_its_files(rest, user, media):
    asset = uploaded_asset(rest, user, media["long"])
    job = create_job(rest, user, {**subtitles_job(asset), "transcriptionOptions": {"model": "base"}}).json()["job"]
    wait_for(
        rest,
        user,
        job["name"],
        lambda j: any(s["stage"] == "STAGE_TRANSCRIBE" and s["state"] == "STAGE_STATE_RUNNING" for s in j["stages"]),
    )
    cancelled = rest.post(f"/v1/{job['name']}:cancel", headers=user, json={})
    assert cancelled.status_code == 200
    assert cancelled.json()["job"]["state"] in ("STATE_CANCELLING", "STATE_CANCELLED")
    t0 = time.monotonic()
    final = watch(str(rest.base_url), user, job["name"], timeout=60)[-1]
    assert final["state"] == "STATE_CANCELLED"
    assert time.monotonic() - t0 < 20, "the running stage should stop at its next chunk"
    again = rest.post(f"/v1/{job['name']}:cancel", headers=user, json={})
    assert again.json()["job"]["state"] == "STATE_CANCELLED"

    assert rest.delete(f"/v1/{job['name']}", headers=user).status_code == 200
    assert rest.get(f"/v1/{job['name']}", headers=user).status_code == 404
    assert rest.get(f"/v1/assets?job={job['name']}", headers=user).json()["assets"] == []


def test_deleting_a_finished_job_removes_its_artifacts_and_downloads(rest, user, media, stack):
    asset = uploaded_asset(rest, user, media["video"])
    transcription = {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "transcriptionOptions": {"model": "tiny.en"}}
    job = create_job(rest, user, transcription).json()["job"]
    final = watch(str(rest.base_url), user, job["name"])[-1]
    artifact = final["job"]["artifacts"][0]["asset"]
    url = rest.post(f"/v1/{artifact}:createDownloadUrl", headers=user, json={}).json()["url"]
    assert httpx.get(url).status_code == 200
    assert rest.delete(f"/v1/{job['name']}", headers=user).status_code == 200
    assert rest.get(f"/v1/{artifact}", headers=user).status_code == 404
    assert httpx.get(url).status_code == 404
    job_id = job["name"].removeprefix("jobs/")
    if stack.storage == "local":
        assert not (stack.storage_dir / "jobs" / job_id).exists()
    # The input is the user's and stays.
    assert rest.get(f"/v1/{asset}", headers=user).status_code == 200


def test_an_unfinished_job_is_deleted_only_with_force(rest, user, media):
    asset = uploaded_asset(rest, user, media["long"])
    job = create_job(rest, user, {**subtitles_job(asset), "transcriptionOptions": {"model": "base"}}).json()["job"]
    refused = rest.delete(f"/v1/{job['name']}", headers=user)
    assert refused.status_code == 400 and refused.json()["details"][0]["reason"] == "JOB_NOT_FINISHED"
    assert rest.delete(f"/v1/{job['name']}?force=true", headers=user).status_code == 200
    assert rest.get(f"/v1/{job['name']}", headers=user).status_code == 404


def test_a_transcribe_worker_killed_mid_job_is_replaced_and_the_job_completes_once(rest, user, media, stack):
    asset = uploaded_asset(rest, user, media["long"])
    job = create_job(rest, user, {**subtitles_job(asset), "transcriptionOptions": {"model": "base"}}).json()["job"]
    wait_for(
        rest,
        user,
        job["name"],
        lambda j: any(s["stage"] == "STAGE_TRANSCRIBE" and s["state"] == "STAGE_STATE_RUNNING" for s in j["stages"]),
    )
    local_stack.crash("transcribe", stack)
    local_stack.up(stack)  # starts what is not running: a new transcribe worker

    final = watch(str(rest.base_url), user, job["name"], timeout=300)[-1]
    assert final["state"] == "STATE_SUCCEEDED", final
    transcribe = next(s for s in final["job"]["stages"] if s["stage"] == "STAGE_TRANSCRIBE")
    assert transcribe["attempt"] == 1  # JetStream redelivered the same task; no new attempt was needed
    files = [a["filename"] for a in final["job"]["artifacts"]]
    assert sorted(files) == sorted(set(files)), "every artifact is registered once"
    assets = rest.get(f"/v1/assets?job={job['name']}", headers=user).json()["assets"]
    assert len(assets) == len(files) == 6
