"""Uploads, assets and downloads, as a browser does them: REST through Envoy, bytes to signed URLs.

After each refusal, nothing is left behind: no asset, no file in blob storage.
Blob storage is the stack's local backend (config.storage_dir).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import asyncpg
import httpx
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from services.media import signing
from services.media.server import SWEEP_GRACE, sweep_uploads_once
from services.media.storage import LocalBlobStore
from services.media.store import MediaStore

from .conftest import PASSWORD, SignedIn, new_email
from .media_fixtures import Uploads, blob_files, move_upload_expiry_to_the_past
from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration


@pytest.fixture
def uploads(rest, signed_in) -> Uploads:
    return Uploads(rest, signed_in.headers)


def new_user(edge_channel) -> SignedIn:
    """Another user, signed up and logged in."""
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    email = new_email()
    auth.SignUp(auth_pb2.SignUpRequest(email=email, password=PASSWORD))
    reply = auth.LogIn(auth_pb2.LogInRequest(email=email, password=PASSWORD))
    return SignedIn(email, reply.user.name, reply.tokens.access_token, reply.tokens.refresh_token)


def field_violations(body: dict) -> dict[str, str]:
    return {v["field"]: v["description"] for d in body.get("details", []) for v in d.get("fieldViolations", [])}


def assets_of(rest: httpx.Client, headers: dict) -> list[dict]:
    reply = rest.get("/v1/assets", headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()["assets"]


# ---------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize(
    ("sample", "content_type"), [("video.mp4", "video/mp4"), ("tone.mp3", "audio/mpeg"), ("tone.webm", "audio/webm")]
)
def test_a_user_uploads_a_file_gets_its_asset_and_downloads_the_same_bytes(
    stack, rest, signed_in, uploads, media_samples, sample, content_type
):
    path = media_samples / sample
    filename = f"Mi vídeo {sample}"
    upload = uploads.started(path, content_type, filename)
    assert upload["state"] == "UPLOAD_STATE_PENDING" and upload["owner"] == signed_in.user
    assert upload["filename"] == filename and upload["sizeBytes"] == str(path.stat().st_size)
    assert upload["uploadUrl"].startswith(f"{stack.public_url}/blobs/")
    assert upload["uploadHeaders"] == {"Content-Type": content_type}

    put = uploads.put(upload, path.read_bytes())
    assert put.status_code == 200, put.text
    assert uploads.get(upload["name"]).json()["upload"]["state"] == "UPLOAD_STATE_PENDING"

    completed = uploads.complete(upload["name"])
    assert completed.status_code == 200, completed.text
    asset = completed.json()["asset"]
    assert asset["kind"] == "ASSET_KIND_UPLOAD" and asset["owner"] == signed_in.user
    assert (asset["filename"], asset["contentType"], asset["sizeBytes"]) == (filename, content_type, str(path.stat().st_size))
    info = asset["mediaInfo"]
    assert info["duration"] in ("2s", "2.000s") or float(info["duration"].rstrip("s")) == pytest.approx(2, abs=0.1)
    assert any(s["type"] == "STREAM_TYPE_AUDIO" for s in info["streams"])

    again = uploads.get(upload["name"]).json()["upload"]
    assert again["state"] == "UPLOAD_STATE_COMPLETED" and again["asset"] == asset["name"] and again["uploadUrl"] == ""
    assert uploads.complete(upload["name"]).json()["asset"] == asset  # completing again: the same asset
    assert rest.get(f"/v1/{asset['name']}", headers=signed_in.headers).json()["asset"] == asset
    assert [a["name"] for a in assets_of(rest, signed_in.headers)] == [asset["name"]]

    download = rest.post(f"/v1/{asset['name']}:createDownloadUrl", json={}, headers=signed_in.headers)
    assert download.status_code == 200, download.text
    url = download.json()["url"]
    assert url.startswith(f"{stack.public_url}/blobs/")
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == path.read_bytes()
    assert got.headers["content-type"] == content_type
    assert got.headers["content-disposition"].startswith(f'attachment; filename="Mi v_deo {sample}"')
    ranged = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and ranged.content == path.read_bytes()[:100]


def test_a_download_url_can_be_inline_and_short_lived_but_not_negative_or_over_a_day(rest, signed_in, uploads, media_samples):
    asset = uploads.complete(uploads.sent(media_samples / "tone.m4a", "audio/mp4")["name"]).json()["asset"]
    path = f"/v1/{asset['name']}:createDownloadUrl"
    reply = rest.post(path, json={"ttl": "30s", "inlineDisposition": True}, headers=signed_in.headers)
    assert reply.status_code == 200
    expires = reply.json()["expireTime"]
    assert httpx.get(reply.json()["url"]).headers["content-disposition"].startswith("inline;")
    default = rest.post(path, json={}, headers=signed_in.headers).json()["expireTime"]
    assert expires < default  # 30 s before the default 15 minutes
    for ttl in ("-1s", "86401s"):
        refused = rest.post(path, json={"ttl": ttl}, headers=signed_in.headers)
        assert refused.status_code == 400 and "ttl" in field_violations(refused.json()), ttl


def test_deleting_an_asset_deletes_its_file(stack, rest, signed_in, uploads, media_samples):
    asset = uploads.complete(uploads.sent(media_samples / "tone.mp3", "audio/mpeg")["name"]).json()["asset"]
    assert blob_files(stack.storage_dir, asset["name"])
    url = rest.post(f"/v1/{asset['name']}:createDownloadUrl", json={}, headers=signed_in.headers).json()["url"]
    assert rest.delete(f"/v1/{asset['name']}", headers=signed_in.headers).status_code == 200
    assert rest.get(f"/v1/{asset['name']}", headers=signed_in.headers).status_code == 404
    assert blob_files(stack.storage_dir, asset["name"]) == []
    assert httpx.get(url).status_code == 404
    assert rest.delete(f"/v1/{asset['name']}", headers=signed_in.headers).status_code == 404


def test_a_repeated_request_id_returns_the_first_upload_and_a_different_file_with_it_is_refused(uploads, media_samples):
    request_id = str(uuid.uuid4())
    first = uploads.create("a.mp3", "audio/mpeg", 1000, request_id).json()["upload"]
    assert uploads.create("a.mp3", "audio/mpeg", 1000, request_id).json()["upload"]["name"] == first["name"]
    conflict = uploads.create("b.mp3", "audio/mpeg", 1000, request_id)
    assert conflict.status_code == 409 and reason_of(conflict.json()) == "REQUEST_ID_REUSED"


def test_an_upload_expires_and_a_repeat_of_its_request_gets_a_fresh_url(stack, uploads, media_samples):
    path = media_samples / "tone.mp3"
    request_id = str(uuid.uuid4())
    upload = uploads.create(path.name, "audio/mpeg", path.stat().st_size, request_id).json()["upload"]
    assert uploads.put(upload, path.read_bytes()).status_code == 200
    move_upload_expiry_to_the_past(stack.database_url, upload["name"])

    expired = uploads.get(upload["name"]).json()["upload"]
    assert expired["state"] == "UPLOAD_STATE_EXPIRED" and expired["uploadUrl"] == ""
    assert blob_files(stack.storage_dir, upload["name"]) == []  # what arrived is deleted
    refused = uploads.complete(upload["name"])
    assert refused.status_code == 400 and reason_of(refused.json()) == "UPLOAD_EXPIRED"

    renewed = uploads.create(path.name, "audio/mpeg", path.stat().st_size, request_id).json()["upload"]
    assert renewed["name"] == upload["name"] and renewed["state"] == "UPLOAD_STATE_PENDING"
    assert renewed["expireTime"] > upload["expireTime"]
    assert uploads.put(renewed, path.read_bytes()).status_code == 200
    assert uploads.complete(upload["name"]).status_code == 200


# ---------------------------------------------------------------------------- refused before anything is stored


def test_a_declared_size_over_the_limit_is_refused(stack, uploads):
    reply = uploads.create("big.mp4", "video/mp4", stack.max_upload_bytes + 1)
    assert reply.status_code == 400 and reason_of(reply.json()) == "UPLOAD_TOO_LARGE"
    assert "size_bytes" in field_violations(reply.json())


@pytest.mark.parametrize(
    ("filename", "content_type", "size", "reason", "field"),
    [
        ("notes.txt", "text/plain", 10, "UNSUPPORTED_CONTENT_TYPE", "content_type"),
        ("../../etc/passwd", "audio/mpeg", 10, "INVALID_ARGUMENT", "filename"),
        ("x" * 256 + ".mp3", "audio/mpeg", 10, "VALUE_TOO_LONG", "filename"),
        ("a.mp3", "audio/mpeg", 0, "INVALID_ARGUMENT", "size_bytes"),
        ("a.mp3", "audio/mpeg", -5, "INVALID_ARGUMENT", "size_bytes"),
    ],
)
def test_bad_upload_requests_name_the_field(uploads, filename, content_type, size, reason, field):
    reply = uploads.create(filename, content_type, size)
    assert reply.status_code == 400 and reason_of(reply.json()) == reason
    assert field in field_violations(reply.json())


def test_a_put_larger_than_declared_is_refused_and_nothing_is_kept(stack, uploads, media_samples):
    path = media_samples / "tone.mp3"
    upload = uploads.started(path, "audio/mpeg")
    reply = uploads.put(upload, path.read_bytes() + b"extra")
    assert reply.status_code == 413 and reply.json()["reason"] == "UPLOAD_TOO_LARGE"
    assert blob_files(stack.storage_dir, upload["name"]) == []
    incomplete = uploads.complete(upload["name"])
    assert incomplete.status_code == 400 and reason_of(incomplete.json()) == "UPLOAD_INCOMPLETE"
    assert uploads.get(upload["name"]).json()["upload"]["state"] == "UPLOAD_STATE_PENDING"  # it may still arrive


def test_a_put_shorter_than_declared_fails_the_upload_at_completion(stack, rest, signed_in, uploads, media_samples):
    path = media_samples / "tone.mp3"
    upload = uploads.started(path, "audio/mpeg")
    assert uploads.put(upload, path.read_bytes()[:-10]).status_code == 200
    refused = uploads.complete(upload["name"])
    assert refused.status_code == 400 and reason_of(refused.json()) == "UPLOAD_INCOMPLETE"
    assert uploads.get(upload["name"]).json()["upload"]["state"] == "UPLOAD_STATE_FAILED"
    assert blob_files(stack.storage_dir, upload["name"]) == []
    assert assets_of(rest, signed_in.headers) == []


def test_expired_tampered_and_misused_upload_urls_are_refused(stack, uploads, media_samples):
    path = media_samples / "tone.mp3"
    upload = uploads.started(path, "audio/mpeg")
    url = urlsplit(upload["uploadUrl"])
    key = unquote(url.path.removeprefix("/blobs/"))
    params = dict(parse_qsl(url.query))
    expired = signing.sign(
        stack.blob_signing_key, signing.Grant("PUT", key, int(time.time()) - 1, int(params["max"]), params["type"])
    )
    forged = ("B" if params["sig"][0] == "A" else "A") + params["sig"][1:]
    body = path.read_bytes()
    cases = {
        "SIGNATURE_EXPIRED": ("PUT", url._replace(query=urlencode(expired)).geturl(), upload["uploadHeaders"]),
        "SIGNATURE_INVALID": ("PUT", url._replace(query=urlencode({**params, "sig": forged})).geturl(), upload["uploadHeaders"]),
        "METHOD_NOT_ALLOWED": ("GET", upload["uploadUrl"], {}),
        "CONTENT_TYPE_MISMATCH": ("PUT", upload["uploadUrl"], {"Content-Type": "application/octet-stream"}),
    }
    for reason, (method, target, headers) in cases.items():
        reply = httpx.request(method, target, content=body if method == "PUT" else None, headers=headers)
        assert reply.status_code == 403, (reason, reply.text)
        assert reply.json()["reason"] == reason
    assert blob_files(stack.storage_dir, upload["name"]) == []


# ---------------------------------------------------------------------------- refused at completion: nothing kept


@pytest.mark.parametrize(
    ("sample", "content_type", "reason"),
    [
        ("text.mp4", "video/mp4", "NOT_MEDIA"),
        ("truncated_video.mp4", "video/mp4", "NOT_MEDIA"),
        ("truncated_video_faststart.mp4", "video/mp4", "NOT_MEDIA"),
        ("video_no_audio.mp4", "video/mp4", "NO_AUDIO_STREAM"),
        ("video.avi", "video/x-msvideo", "UNSUPPORTED_FORMAT"),
    ],
)
def test_a_file_that_is_not_usable_media_is_refused_and_deleted(
    stack, rest, signed_in, uploads, media_samples, sample, content_type, reason
):
    upload = uploads.sent(media_samples / sample, content_type)
    refused = uploads.complete(upload["name"])
    assert refused.status_code == 400 and reason_of(refused.json()) == reason, refused.text
    assert uploads.get(upload["name"]).json()["upload"]["state"] == "UPLOAD_STATE_FAILED"
    assert assets_of(rest, signed_in.headers) == []
    assert blob_files(stack.storage_dir, upload["name"]) == []
    again = uploads.complete(upload["name"])
    assert again.status_code == 400 and reason_of(again.json()) == "UPLOAD_FAILED"


def test_a_silent_file_is_still_media(uploads, media_samples):
    upload = uploads.sent(media_samples / "silence.wav", "audio/wav")
    assert uploads.complete(upload["name"]).status_code == 200


# ---------------------------------------------------------------------------- an upload URL after its upload is over


def staged_files(storage_dir, upload_name: str) -> list:
    """Files under the upload's staging key (uploads/<id>/...), where its URL PUTs."""
    folder = storage_dir / "uploads" / upload_name.split("/")[-1]
    return [p for p in folder.rglob("*") if p.is_file()]


def test_an_upload_url_takes_no_file_once_its_upload_is_completed_refused_or_expired(
    stack, rest, signed_in, uploads, media_samples
):
    tone, text = media_samples / "tone.mp3", media_samples / "text.mp4"
    completed = uploads.sent(tone, "audio/mpeg")
    asset = uploads.complete(completed["name"]).json()["asset"]
    refused = uploads.sent(text, "video/mp4")
    assert reason_of(uploads.complete(refused["name"]).json()) == "NOT_MEDIA"
    expired = uploads.started(tone, "audio/mpeg")
    move_upload_expiry_to_the_past(stack.database_url, expired["name"])  # its URL's own expiry is still ahead

    for upload, body in ((completed, tone.read_bytes()), (refused, text.read_bytes()), (expired, tone.read_bytes())):
        late = uploads.put(upload, body)
        assert late.status_code == 409, late.text
        assert late.json()["reason"] == "UPLOAD_CLOSED" and late.json()["code"] == 409 and late.json()["message"]
        assert staged_files(stack.storage_dir, upload["name"]) == [], upload["name"]

    # The asset is untouched: the same bytes download.
    url = rest.post(f"/v1/{asset['name']}:createDownloadUrl", json={}, headers=signed_in.headers).json()["url"]
    assert httpx.get(url).content == tone.read_bytes()
    assert uploads.get(expired["name"]).json()["upload"]["state"] == "UPLOAD_STATE_EXPIRED"


def test_the_sweep_deletes_staged_files_no_upload_will_use_and_keeps_pending_ones(stack, uploads, media_samples):
    """What the blob server cannot refuse (a PUT to a presigned S3 URL, here a file written
    straight into the store) the media service's periodic sweep deletes."""
    tone = media_samples / "tone.mp3"
    completed = uploads.sent(tone, "audio/mpeg")
    assert uploads.complete(completed["name"]).status_code == 200
    pending = uploads.sent(tone, "audio/mpeg")
    abandoned = uploads.sent(tone, "audio/mpeg")
    move_upload_expiry_to_the_past(stack.database_url, abandoned["name"], SWEEP_GRACE + timedelta(minutes=1))
    landed = stack.storage_dir / "uploads" / completed["name"].split("/")[-1] / "late.mp3"
    landed.parent.mkdir(parents=True)
    landed.write_bytes(tone.read_bytes())

    async def sweep() -> None:
        pool = await asyncpg.create_pool(stack.database_url, server_settings={"search_path": "media"}, min_size=1, max_size=2)
        try:
            await sweep_uploads_once(MediaStore(pool), LocalBlobStore(stack.storage_dir))
        finally:
            await pool.close()

    asyncio.run(sweep())
    assert staged_files(stack.storage_dir, completed["name"]) == []
    assert staged_files(stack.storage_dir, abandoned["name"]) == []
    assert uploads.get(abandoned["name"]).json()["upload"]["state"] == "UPLOAD_STATE_EXPIRED"
    assert len(staged_files(stack.storage_dir, pending["name"])) == 1
    assert uploads.complete(pending["name"]).status_code == 200


# ---------------------------------------------------------------------------- ownership and lists


def test_another_users_uploads_and_assets_are_not_found(rest, signed_in, uploads, media_samples, edge_channel):
    upload = uploads.sent(media_samples / "tone.mp3", "audio/mpeg")
    other = new_user(edge_channel).headers
    assert rest.get(f"/v1/{upload['name']}", headers=other).status_code == 404
    assert rest.post(f"/v1/{upload['name']}:complete", json={}, headers=other).status_code == 404
    asset = uploads.complete(upload["name"]).json()["asset"]
    for method, path, body in (
        ("GET", f"/v1/{asset['name']}", None),
        ("POST", f"/v1/{asset['name']}:createDownloadUrl", {}),
        ("DELETE", f"/v1/{asset['name']}", None),
    ):
        reply = rest.request(method, path, json=body, headers=other)
        assert reply.status_code == 404 and reason_of(reply.json()) == "ASSET_NOT_FOUND", (method, path)
    assert assets_of(rest, other) == []
    assert rest.get(f"/v1/{asset['name']}", headers=signed_in.headers).status_code == 200


def test_listing_assets_pages_and_refuses_a_negative_page_size(rest, signed_in, uploads, media_samples):
    names = [
        uploads.complete(uploads.sent(media_samples / "tone.ogg", "audio/ogg")["name"]).json()["asset"]["name"] for _ in range(3)
    ]
    first = rest.get("/v1/assets", params={"pageSize": 2}, headers=signed_in.headers).json()
    second = rest.get("/v1/assets", params={"pageSize": 2, "pageToken": first["nextPageToken"]}, headers=signed_in.headers).json()
    assert [a["name"] for a in first["assets"] + second["assets"]] == names[::-1]  # newest first
    assert second["nextPageToken"] == ""
    negative = rest.get("/v1/assets", params={"pageSize": -1}, headers=signed_in.headers)
    assert negative.status_code == 400 and reason_of(negative.json()) == "INVALID_ARGUMENT"
    assert "page_size" in field_violations(negative.json())
