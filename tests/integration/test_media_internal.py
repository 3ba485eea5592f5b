"""The media service's internal RPCs, as the jobs service and stage workers call them.

A worker of another service gets signed URLs for a job's blobs (CreateBlobUrls),
reads and writes them straight at the media service's blob server, registers
what it wrote as artifacts of the job's owner, and the jobs service deletes
them all with the job.
"""

from __future__ import annotations

import time
import uuid

import grpc
import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.errors import error_info, field_violations

from .media_fixtures import Uploads, blob_files

pytestmark = pytest.mark.integration
GET, PUT = media_pb2.BLOB_METHOD_GET, media_pb2.BLOB_METHOD_PUT


@pytest.fixture
def media(service_channel) -> media_pb2_grpc.MediaServiceStub:
    return media_pb2_grpc.MediaServiceStub(service_channel("media"))


@pytest.fixture
def as_service(stack) -> tuple[tuple[str, str], ...]:
    """Call metadata of the jobs service's identity."""
    return ((SERVICE_TOKEN_HEADER, ServiceCredentials("jobs", stack.service_secret).token()),)


@pytest.fixture
def uploaded_asset(rest, signed_in, media_samples) -> dict:
    uploads = Uploads(rest, signed_in.headers)
    reply = uploads.complete(uploads.sent(media_samples / "video.mp4", "video/mp4")["name"])
    assert reply.status_code == 200, reply.text
    return reply.json()["asset"]


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_a_worker_reads_the_input_writes_artifacts_and_the_job_deletes_them(
    stack, media, as_service, signed_in, uploaded_asset, media_samples
):
    job = f"jobs/{uuid.uuid4()}"
    job_id = job.split("/")[1]
    keys = {"audio": f"jobs/{job_id}/extract_audio/_/asr_audio.wav", "srt": f"jobs/{job_id}/render_subtitles/pt/subtitles.srt"}
    urls = media.CreateBlobUrls(
        media_pb2.CreateBlobUrlsRequest(
            requests=[
                media_pb2.BlobUrlRequest(asset=uploaded_asset["name"], method=GET),
                media_pb2.BlobUrlRequest(key=keys["audio"], method=PUT),
                media_pb2.BlobUrlRequest(key=keys["srt"], method=PUT),
            ]
        ),
        metadata=as_service,
    ).urls
    assert [u.target for u in urls] == [uploaded_asset["name"], keys["audio"], keys["srt"]]
    internal = f"http://{stack.endpoint('media').host}:{stack.blob_port}/blobs/"
    assert all(u.url.startswith(internal) for u in urls), "workers reach the media service directly, not through the edge"
    assert all(abs(u.expire_time.seconds - (time.time() + 3600)) < 5 for u in urls)  # the default hour

    source = httpx.get(urls[0].url)
    assert source.status_code == 200 and source.content == (media_samples / "video.mp4").read_bytes()
    wav = (media_samples / "silence.wav").read_bytes()
    assert httpx.put(urls[1].url, content=wav, headers={"Content-Type": "audio/wav"}).status_code == 200
    srt = b"1\n00:00:00,000 --> 00:00:01,000\nOla\n"
    assert httpx.put(urls[2].url, content=srt, headers={"Content-Type": "application/x-subrip"}).status_code == 200

    register = lambda key, filename, content_type: (  # noqa: E731
        media.RegisterArtifact(
            media_pb2.RegisterArtifactRequest(
                key=key, owner=signed_in.user, job=job, filename=filename, content_type=content_type
            ),
            metadata=as_service,
        ).asset
    )
    audio = register(keys["audio"], "talk.wav", "audio/wav")
    assert (audio.kind, audio.owner, audio.job, audio.size_bytes) == (
        media_pb2.ASSET_KIND_ARTIFACT,
        signed_in.user,
        job,
        len(wav),
    )
    assert audio.media_info.streams[0].sample_rate_hertz == 16000
    subtitles = register(keys["srt"], "talk.pt.srt", "application/x-subrip")
    assert subtitles.size_bytes == len(srt) and not subtitles.HasField("media_info")
    assert register(keys["srt"], "talk.pt.srt", "application/x-subrip").name == subtitles.name  # idempotent by key

    listed = media.ListAssets(media_pb2.ListAssetsRequest(job=job), metadata=signed_in.metadata).assets
    assert {a.name for a in listed} == {audio.name, subtitles.name}

    probed = media.ProbeMedia(media_pb2.ProbeMediaRequest(key=keys["audio"]), metadata=as_service).media_info
    assert probed.format_name == "wav"
    not_media = refused(lambda: media.ProbeMedia(media_pb2.ProbeMediaRequest(key=keys["srt"]), metadata=as_service))
    assert not_media.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(not_media).reason == "NOT_MEDIA"

    deleted = media.DeleteJobArtifacts(media_pb2.DeleteJobArtifactsRequest(job=job, owner=signed_in.user), metadata=as_service)
    assert (deleted.deleted_blobs, deleted.deleted_assets) == (2, 2)
    assert blob_files(stack.storage_dir, job) == []
    again = media.DeleteJobArtifacts(media_pb2.DeleteJobArtifactsRequest(job=job, owner=signed_in.user), metadata=as_service)
    assert (again.deleted_blobs, again.deleted_assets) == (0, 0)
    assert media.ListAssets(media_pb2.ListAssetsRequest(job=job), metadata=signed_in.metadata).assets == []


def test_probe_media_of_an_asset_answers_for_its_owner_only(media, as_service, signed_in, uploaded_asset):
    ask = lambda owner, refresh=False: media.ProbeMedia(  # noqa: E731
        media_pb2.ProbeMediaRequest(asset=uploaded_asset["name"], owner=owner, refresh=refresh), metadata=as_service
    )
    recorded = ask(signed_in.user)
    assert recorded.asset.name == uploaded_asset["name"]
    assert [s.codec for s in recorded.media_info.streams] == ["h264", "aac"]
    assert ask(signed_in.user, refresh=True).media_info == recorded.media_info
    stranger = refused(lambda: ask(f"users/{uuid.uuid4()}"))
    assert stranger.code() == grpc.StatusCode.NOT_FOUND
    no_owner = refused(lambda: media.ProbeMedia(media_pb2.ProbeMediaRequest(asset=uploaded_asset["name"]), metadata=as_service))
    assert no_owner.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_blob_urls_are_for_job_keys_and_read_only_assets(media, as_service, uploaded_asset):
    def problems(*asks, ttl: Duration | None = None) -> dict[str, str]:
        error = refused(
            lambda: media.CreateBlobUrls(media_pb2.CreateBlobUrlsRequest(requests=asks, ttl=ttl), metadata=as_service)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        return {v.field: v.description for v in field_violations(error)}

    assert "requests[0].method" in problems(media_pb2.BlobUrlRequest(asset=uploaded_asset["name"], method=PUT))
    assert "requests[0].key" in problems(media_pb2.BlobUrlRequest(key="uploads/x/y.mp4", method=GET))
    assert "requests[0].key" in problems(media_pb2.BlobUrlRequest(key="jobs/../uploads/y.mp4", method=GET))
    assert "requests[0].method" in problems(media_pb2.BlobUrlRequest(key="jobs/j/a.wav"))
    assert "requests" in problems()
    assert "requests" in problems(*[media_pb2.BlobUrlRequest(key=f"jobs/j/{i}.wav", method=GET) for i in range(1001)])
    assert "ttl" in problems(media_pb2.BlobUrlRequest(key="jobs/j/a.wav", method=GET), ttl=Duration(seconds=86401))
    missing = refused(
        lambda: media.CreateBlobUrls(
            media_pb2.CreateBlobUrlsRequest(requests=[media_pb2.BlobUrlRequest(asset=f"assets/{uuid.uuid4()}", method=GET)]),
            metadata=as_service,
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_an_artifact_must_exist_under_its_jobs_own_prefix(media, as_service, signed_in):
    job = f"jobs/{uuid.uuid4()}"

    def register(key: str) -> grpc.RpcError:
        request = media_pb2.RegisterArtifactRequest(
            key=key, owner=signed_in.user, job=job, filename="a.wav", content_type="audio/wav"
        )
        return refused(lambda: media.RegisterArtifact(request, metadata=as_service))

    elsewhere = register(f"jobs/{uuid.uuid4()}/mix/pt/mixed_audio.wav")
    assert elsewhere.code() == grpc.StatusCode.INVALID_ARGUMENT
    absent = register(f"{job}/mix/pt/mixed_audio.wav")
    assert absent.code() == grpc.StatusCode.NOT_FOUND and error_info(absent).reason == "BLOB_NOT_FOUND"


def test_internal_rpcs_refuse_user_tokens(media, signed_in):
    error = refused(
        lambda: media.CreateBlobUrls(
            media_pb2.CreateBlobUrlsRequest(requests=[media_pb2.BlobUrlRequest(key="jobs/j/a.wav", method=GET)]),
            metadata=signed_in.metadata,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
