"""A file whose header under-reports its length is priced and limited by what it holds,
as a browser meets it: upload through the presigned URL, CompleteUpload, a job's price.

The lying files come from tests/integration/media_fixtures.py (make_lying_samples):
REAL_SECONDS of sound whose header says CLAIMED_SECONDS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .jobs_flow import create_job
from .media_fixtures import (
    CLAIMED_SECONDS,
    REAL_SECONDS,
    Uploads,
    blob_files,
    claim_matroska_duration,
    with_a_gap,
)
from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration


@pytest.fixture
def uploads(rest, signed_in) -> Uploads:
    return Uploads(rest, signed_in.headers)


def seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("lying.mkv", "video/x-matroska"), ("lying_video.mp4", "video/mp4"), ("chained.opus", "audio/ogg")],
)
def test_an_asset_lasts_what_its_file_holds_not_what_its_header_claims(uploads, lying_samples, name, content_type):
    upload = uploads.sent(lying_samples / name, content_type)
    completed = uploads.complete(upload["name"])
    assert completed.status_code == 200, completed.text
    info = completed.json()["asset"]["mediaInfo"]
    assert seconds(info["duration"]) == pytest.approx(REAL_SECONDS, abs=0.5)
    assert all(seconds(s["duration"]) == pytest.approx(REAL_SECONDS, abs=0.5) for s in info["streams"])


def test_a_job_on_a_lying_file_holds_the_price_of_its_real_length(rest, signed_in, uploads, lying_samples):
    asset = uploads.complete(uploads.sent(lying_samples / "lying.mkv", "video/x-matroska")["name"]).json()["asset"]
    job = {"kind": "JOB_KIND_SUBTITLES", "inputAsset": asset["name"], "sourceLanguage": "en", "targetLanguages": ["pt"],
           "transcriptionOptions": {"model": "tiny.en"}}  # fmt: skip
    created = create_job(rest, signed_in.headers, job)
    assert created.status_code == 200, created.text
    name = created.json()["job"]["name"]
    try:
        assert seconds(created.json()["job"]["mediaDuration"]) == pytest.approx(REAL_SECONDS, abs=0.5)

        def price(duration: str) -> int:
            usage = {"kind": "JOB_KIND_SUBTITLES", "duration": duration, "targetLanguageCount": 1}
            quote = rest.post("/v1/quotes:compute", headers=signed_in.headers, json={"usage": usage})
            assert quote.status_code == 200, quote.text
            return int(quote.json()["quote"]["credits"])

        held = int(created.json()["job"]["creditsHeld"])
        assert held == price(f"{REAL_SECONDS}s") > price(f"{CLAIMED_SECONDS}s")
    finally:
        rest.post(f"/v1/{name}:cancel", headers=signed_in.headers, json={})


def test_a_file_longer_than_the_limit_is_refused_though_its_header_says_a_second(stack, uploads, lying_samples, tmp_path):
    """The timeline runs past the limit (sound, a long silence, sound again); the header says 1 s."""
    long = with_a_gap(lying_samples / "link.opus", tmp_path / "long.mkv", stack.max_media_duration_s)
    lying = Path(tmp_path / "lying_long.mkv")
    lying.write_bytes(claim_matroska_duration(long.read_bytes(), CLAIMED_SECONDS))
    upload = uploads.sent(lying, "video/x-matroska")
    refused = uploads.complete(upload["name"])
    assert refused.status_code == 400 and reason_of(refused.json()) == "MEDIA_TOO_LONG", refused.text
    assert uploads.get(upload["name"]).json()["upload"]["state"] == "UPLOAD_STATE_FAILED"
    assert blob_files(stack.storage_dir, upload["name"]) == []
