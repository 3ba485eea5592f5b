"""Blob storage: the local backend and its HTTP blob server, the S3 backend against a local moto server, and the upload sweep."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from services.media import signing
from services.media.blobserver import BlobServer
from services.media.server import sweep_uploads_once
from services.media.storage import ABANDONED_AFTER_S, BlobNotFound, InvalidKey, LocalBlobStore, S3BlobStore
from services.media.store import COMPLETED, EXPIRED, FAILED, PENDING

SECRET = "a-test-signing-key-of-at-least-32-characters"
MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- the store's contract, on both backends


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """A local S3-compatible server (moto) on a free port; its endpoint URL."""
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def aws_credentials(monkeypatch):
    # moto accepts any credentials; boto3 needs some to sign with.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "octavia-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "octavia-test-secret")


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path) -> AsyncIterator[LocalBlobStore | S3BlobStore]:
    if request.param == "local":
        blobs = LocalBlobStore(tmp_path / "blobs", signing_key=SECRET, public_url="http://edge", internal_url="http://media")
    else:
        endpoint = request.getfixturevalue("moto")
        request.getfixturevalue("aws_credentials")
        blobs = S3BlobStore(f"octavia-{os.urandom(4).hex()}", endpoint_url=endpoint, region="us-east-1")
    await blobs.prepare()
    yield blobs


async def test_a_stored_file_reads_back_whole(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    assert await store.put_file("jobs/j1/extract_audio/_/asr_audio.wav", source, "audio/wav") == source.stat().st_size
    assert await store.size("jobs/j1/extract_audio/_/asr_audio.wav") == source.stat().st_size
    out = tmp_path / "out" / "copy.bin"
    await store.get_file("jobs/j1/extract_audio/_/asr_audio.wav", out)
    assert out.read_bytes() == source.read_bytes()
    async with store.local_copy("jobs/j1/extract_audio/_/asr_audio.wav") as path:
        assert path.read_bytes() == source.read_bytes()


async def test_absent_blobs(store, tmp_path):
    assert await store.size("jobs/none/x.wav") is None
    assert await store.delete("jobs/none/x.wav") is False
    with pytest.raises(BlobNotFound):
        await store.get_file("jobs/none/x.wav", tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()
    with pytest.raises(BlobNotFound):
        async with store.local_copy("jobs/none/x.wav"):
            pass
    with pytest.raises(BlobNotFound):
        await store.move("jobs/none/x.wav", "jobs/none/y.wav")


async def test_delete_and_delete_prefix(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"abc")
    for key in ("jobs/j1/a.wav", "jobs/j1/tts/pt/s.00001.wav", "jobs/j1/tts/pt/s.00002.wav", "jobs/j10/a.wav"):
        await store.put_file(key, source, "audio/wav")
    assert await store.delete("jobs/j1/a.wav") is True
    assert await store.size("jobs/j1/a.wav") is None
    assert await store.delete_prefix("jobs/j1/") == 2
    assert await store.delete_prefix("jobs/j1/") == 0
    assert await store.size("jobs/j10/a.wav") == 3  # a prefix is a folder, not a string prefix
    with pytest.raises(InvalidKey):
        await store.delete_prefix("jobs")


async def test_move_replaces_the_target(store, tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    first.write_bytes(b"first")
    second.write_bytes(b"second!")
    await store.put_file("uploads/u/a.mp3", first, "audio/mpeg")
    await store.put_file("assets/u/a.mp3", second, "audio/mpeg")
    await store.move("uploads/u/a.mp3", "assets/u/a.mp3")
    assert await store.size("uploads/u/a.mp3") is None
    assert await store.size("assets/u/a.mp3") == 5


async def test_keys_that_could_escape_are_refused_by_every_method(store, tmp_path):
    for bad in ("../x", "/abs", "a\\b"):
        with pytest.raises(InvalidKey):
            await store.size(bad)
        with pytest.raises(InvalidKey):
            store.sign(bad, "GET", 60)


# ---------------------------------------------------------------------------- the local backend


async def test_local_writes_leave_no_temporary_files(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    await store.prepare()
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 10)
    await store.put_file("uploads/u/a.mp3", source, "audio/mpeg")
    await store.move("uploads/u/a.mp3", "assets/u/a.mp3")
    assert files_under(tmp_path / "blobs") == ["assets/u/a.mp3"]
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == [".incoming", "assets"]  # emptied folders go


async def test_a_symlink_planted_in_the_store_cannot_lead_out(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    await store.prepare()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd").write_text("root")
    (tmp_path / "blobs" / "jobs").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidKey):
        await store.size("jobs/passwd")


# ---------------------------------------------------------------------------- the blob server


@pytest.fixture
async def blob_server(tmp_path) -> AsyncIterator[BlobServer]:
    store = LocalBlobStore(tmp_path / "blobs", signing_key=SECRET)
    await store.prepare()
    server = BlobServer(store, SECRET, host="127.0.0.1", port=0)
    await server.start()
    store.public_url = store.internal_url = f"http://127.0.0.1:{server.port}"
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def stored(server: BlobServer) -> list[str]:
    """Every file under the store's root, temporary ones included."""
    return sorted(str(p.relative_to(server.store.root)) for p in server.store.root.rglob("*") if p.is_file())


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {**dict(parse_qsl(parts.query)), **changes}
    return parts._replace(query=urlencode(params)).geturl()


async def test_a_signed_put_stores_the_file_and_a_signed_get_serves_it(blob_server, http):
    store, body = blob_server.store, os.urandom(300_000)
    put = store.sign("uploads/u1/talk.mp4", "PUT", 60, content_type="video/mp4", max_bytes=len(body))
    reply = await http.put(put.url, content=body, headers=put.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"size_bytes": len(body)}
    assert stored(blob_server) == ["uploads/u1/talk.mp4"]

    get = store.sign("uploads/u1/talk.mp4", "GET", 60, content_type="video/mp4", filename="Talk (final).mp4")
    reply = await http.get(get.url)
    assert reply.status_code == 200 and reply.content == body
    assert reply.headers["content-type"] == "video/mp4"
    assert reply.headers["content-length"] == str(len(body))
    assert (
        reply.headers["content-disposition"]
        == "attachment; filename=\"Talk (final).mp4\"; filename*=UTF-8''Talk%20%28final%29.mp4"
    )
    reply = await http.get(get.url, headers={"Range": "bytes=100-199"})
    assert reply.status_code == 206 and reply.content == body[100:200]
    reply = await http.head(get.url)
    assert reply.status_code == 200 and reply.headers["content-length"] == str(len(body)) and not reply.content
    inline = store.sign("uploads/u1/talk.mp4", "GET", 60, filename="talk.mp4", inline=True)
    assert (await http.get(inline.url)).headers["content-disposition"].startswith("inline;")


async def test_a_put_over_the_signed_size_is_refused_and_nothing_is_kept(blob_server, http):
    put = blob_server.store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=1000)
    reply = await http.put(put.url, content=b"x" * 1001, headers=put.headers)
    assert reply.status_code == 413 and reply.json()["reason"] == "UPLOAD_TOO_LARGE"

    async def stream_without_length():  # chunked: the size shows only as the body arrives
        for _ in range(10):
            yield b"y" * 400_000

    reply = await http.put(put.url, content=stream_without_length(), headers=put.headers)
    assert reply.status_code == 413 and reply.json()["reason"] == "UPLOAD_TOO_LARGE"
    assert stored(blob_server) == []


@pytest.mark.parametrize("sent_type", ["audio/wav", None])
async def test_a_put_with_another_content_type_is_refused(blob_server, http, sent_type):
    put = blob_server.store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=1000)
    reply = await http.put(put.url, content=b"x" * 10, headers={"Content-Type": sent_type} if sent_type else {})
    assert reply.status_code == 403 and reply.json()["reason"] == "CONTENT_TYPE_MISMATCH"
    assert stored(blob_server) == []


async def test_expired_tampered_and_misused_urls_are_refused_in_json(blob_server, http):
    store = blob_server.store
    put = store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=1000)
    expired_params = signing.sign(SECRET, signing.Grant("PUT", "uploads/u1/a.mp3", int(time.time()) - 1, 1000, "audio/mpeg"))
    cases = {
        "SIGNATURE_EXPIRED": ("PUT", put.url.split("?")[0] + "?" + urlencode(expired_params)),
        "SIGNATURE_INVALID": ("PUT", with_params(put.url, max="100000000")),
        "METHOD_NOT_ALLOWED": ("GET", put.url),
        "WRONG_OBJECT": ("PUT", put.url.replace("/a.mp3?", "/b.mp3?")),
    }
    for reason, (method, url) in cases.items():
        reply = await http.request(method, url, content=b"x" * 10 if method == "PUT" else None, headers=put.headers)
        assert reply.status_code == 403, (reason, reply.text)
        assert reply.json() == {"code": 403, "message": reply.json()["message"], "reason": reason}
    unsigned = await http.put(put.url.split("?")[0], content=b"x", headers=put.headers)
    assert unsigned.status_code == 403 and unsigned.json()["reason"] == "SIGNATURE_INVALID"
    assert stored(blob_server) == []


async def test_other_methods_and_bad_keys_get_json_errors(blob_server, http):
    get = blob_server.store.sign("uploads/u1/a.mp3", "GET", 60)
    reply = await http.delete(get.url)
    assert reply.status_code == 405 and reply.json()["reason"] == "METHOD_NOT_ALLOWED"
    reply = await http.get(get.url)
    assert reply.status_code == 404 and reply.json()["reason"] == "BLOB_NOT_FOUND"
    base = get.url.split("/blobs/")[0]
    reply = await http.get(f"{base}/blobs/uploads/.incoming/x?sig=x")
    assert reply.status_code == 400 and reply.json()["reason"] == "INVALID_KEY"


# ---------------------------------------------------------------------------- S3 presigned URLs


async def test_s3_presigned_put_and_get(moto, aws_credentials, http):
    store = S3BlobStore("octavia-presign", endpoint_url=moto)
    await store.prepare()
    body = os.urandom(50_000)
    put = store.sign("uploads/u1/Talk.mp4", "PUT", 60, content_type="video/mp4", max_bytes=len(body))
    # S3 enforces what the signature covers: the type and the exact length (moto does not check).
    signed_headers = dict(parse_qsl(urlsplit(put.url).query))["X-Amz-SignedHeaders"].split(";")
    assert {"content-type", "content-length", "host"} <= set(signed_headers)
    assert put.headers == {"Content-Type": "video/mp4"}
    reply = await http.put(put.url, content=body, headers=put.headers)  # never without a type: moto hangs
    assert reply.status_code == 200, reply.text
    assert await store.size("uploads/u1/Talk.mp4") == len(body)

    get = store.sign("uploads/u1/Talk.mp4", "GET", 60, content_type="video/mp4", filename="Talk ü.mp4")
    reply = await http.get(get.url)
    assert reply.status_code == 200 and reply.content == body
    assert reply.headers["content-type"] == "video/mp4"
    assert reply.headers["content-disposition"] == "attachment; filename=\"Talk _.mp4\"; filename*=UTF-8''Talk%20%C3%BC.mp4"
    reply = await http.get(get.url, headers={"Range": "bytes=0-9"})
    assert reply.status_code == 206 and reply.content == body[:10]


async def test_s3_delete_prefix_goes_past_one_listing_page(moto, aws_credentials, tmp_path):
    store = S3BlobStore("octavia-many", endpoint_url=moto)
    await store.prepare()
    source = tmp_path / "seg.wav"
    source.write_bytes(b"s")
    keys = [f"jobs/j1/tts/pt/s.{i:05d}.wav" for i in range(1005)]  # more than one ListObjectsV2 page (1000)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda key: store.client.put_object(Bucket=store.bucket, Key=key, Body=b"s", ContentType="audio/wav"), keys)
        )
    await store.put_file("jobs/j2/keep.wav", source, "audio/wav")
    assert await store.delete_prefix("jobs/j1/") == 1005
    assert await store.size("jobs/j2/keep.wav") == 1


# ---------------------------------------------------------------------------- closed uploads: refused PUTs and the sweep


async def test_listing_keys_gives_every_blob_under_a_folder_and_nothing_beside_it(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"abc")
    for key in ("uploads/u1/a.mp3", "uploads/u2/b c.mp4", "uploads10/x.mp3", "assets/u1/a.mp3"):
        await store.put_file(key, source, "audio/mpeg")
    assert sorted(await store.list_keys("uploads/")) == ["uploads/u1/a.mp3", "uploads/u2/b c.mp4"]
    assert await store.list_keys("jobs/") == []
    with pytest.raises(InvalidKey):
        await store.list_keys("uploads")


@pytest.fixture
async def checked_blob_server(tmp_path) -> AsyncIterator[tuple[BlobServer, list]]:
    """A blob server whose PUT check answers what the test puts in `answers` (keyed by `arrived`), and records its calls."""
    store = LocalBlobStore(tmp_path / "blobs", signing_key=SECRET)
    await store.prepare()
    answers: dict[bool, tuple[int, str, str] | None | Exception] = {False: None, True: None}
    calls: list[tuple[str, bool]] = []

    async def check(key: str, arrived: bool):
        calls.append((key, arrived))
        answer = answers[arrived]
        if isinstance(answer, Exception):
            raise answer
        return answer

    server = BlobServer(store, SECRET, host="127.0.0.1", port=0, put_check=check)
    await server.start()
    store.public_url = store.internal_url = f"http://127.0.0.1:{server.port}"
    yield server, [answers, calls]
    await server.stop()


CLOSED = (409, "UPLOAD_CLOSED", "the upload was completed")


async def test_a_put_to_a_closed_upload_is_refused_before_its_body_is_read(checked_blob_server, http):
    server, (answers, calls) = checked_blob_server
    answers[False] = CLOSED
    put = server.store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=1000)
    reply = await http.put(put.url, content=b"x" * 1000, headers=put.headers)
    assert reply.status_code == 409
    assert reply.json() == {"code": 409, "message": "the upload was completed", "reason": "UPLOAD_CLOSED"}
    assert calls == [("uploads/u1/a.mp3", False)]
    assert stored(server) == []


async def test_an_upload_that_closes_while_its_body_arrives_keeps_nothing(checked_blob_server, http):
    server, (answers, calls) = checked_blob_server
    answers[True] = CLOSED
    put = server.store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=1000)
    reply = await http.put(put.url, content=b"x" * 1000, headers=put.headers)
    assert reply.status_code == 409 and reply.json()["reason"] == "UPLOAD_CLOSED"
    assert calls == [("uploads/u1/a.mp3", False), ("uploads/u1/a.mp3", True)]
    assert stored(server) == []  # not even the temporary file

    answers[True] = None  # open all along: stored
    assert (await http.put(put.url, content=b"x" * 1000, headers=put.headers)).status_code == 200
    assert stored(server) == ["uploads/u1/a.mp3"]


async def test_a_put_whose_upload_cannot_be_checked_is_answered_503_to_retry(checked_blob_server, http):
    server, (answers, _) = checked_blob_server
    answers[False] = ConnectionRefusedError("the database is restarting")
    put = server.store.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=10)
    reply = await http.put(put.url, content=b"x" * 10, headers=put.headers)
    assert reply.status_code == 503 and reply.json()["reason"] == "UNAVAILABLE"
    assert stored(server) == []


class SweptUploads:
    """The three queries of MediaStore the sweep makes, over uploads kept in a dict:
    id -> [state, staging key, expired longer than the grace, swept]."""

    def __init__(self):
        self.rows: dict[uuid.UUID, list] = {}

    def add(self, state: int, *, long_expired: bool = False) -> str:
        upload_id = uuid.uuid4()
        key = f"uploads/{upload_id}/talk.mp3"
        self.rows[upload_id] = [state, key, long_expired, False]
        return key

    async def uploads_to_sweep(self, older_than, limit):
        return [(i, row[1]) for i, row in self.rows.items() if row[2] and not row[3]][:limit]

    async def mark_swept(self, upload_ids):
        for upload_id in upload_ids:
            row = self.rows[upload_id]
            row[0], row[3] = (EXPIRED if row[0] == PENDING else row[0]), True

    async def upload_states(self, upload_ids):
        return {i: self.rows[i][0] for i in upload_ids if i in self.rows}


async def test_the_sweep_deletes_what_closed_uploads_still_receive_and_keeps_what_pending_ones_staged(store, tmp_path):
    """S3 cannot refuse a PUT to a presigned URL: whatever lands on a completed, refused or
    expired upload's staging key goes at the next sweep, however often it comes back."""
    uploads = SweptUploads()
    pending = uploads.add(PENDING)
    late = {state: uploads.add(state) for state in (COMPLETED, FAILED, EXPIRED)}
    abandoned = uploads.add(PENDING, long_expired=True)
    stray = f"uploads/{uuid.uuid4()}/no-upload.mp3"
    source = tmp_path / "in.bin"
    source.write_bytes(b"abc")
    for key in (pending, *late.values(), abandoned, stray, "assets/a1/talk.mp3"):
        await store.put_file(key, source, "audio/mpeg")

    assert await sweep_uploads_once(uploads, store) == 5  # type: ignore[arg-type]
    assert await store.list_keys("uploads/") == [pending]
    assert await store.size("assets/a1/talk.mp3") == 3
    assert [row[0] for row in uploads.rows.values()] == [PENDING, COMPLETED, FAILED, EXPIRED, EXPIRED]

    await store.put_file(late[COMPLETED], source, "audio/mpeg")  # the URL still works: a second PUT
    assert await sweep_uploads_once(uploads, store) == 1  # type: ignore[arg-type]
    assert await sweep_uploads_once(uploads, store) == 0  # type: ignore[arg-type]
    assert await store.list_keys("uploads/") == [pending]


async def test_the_temporary_files_of_writes_that_never_finished_are_discarded(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    await store.prepare()
    abandoned, live = store.incoming_path(), store.incoming_path()
    abandoned.write_bytes(b"half a file")
    live.write_bytes(b"still arriving")
    long_ago = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(abandoned, (long_ago, long_ago))
    assert await store.discard_abandoned() == 1
    assert not abandoned.exists() and live.exists()
