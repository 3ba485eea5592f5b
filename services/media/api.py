"""The MediaService servicer: thin; it validates, calls the store and blob storage, and shapes replies.

Uploads go straight to storage: CreateUpload signs a PUT for a staging key,
CompleteUpload moves what arrived to the asset's own key (so the still-valid
upload URL can no longer touch it), checks its size, probes it and records
the asset. A refused file is deleted and its upload marked FAILED: nothing
of it is kept. Another user's uploads and assets are NOT_FOUND everywhere.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime.auth import current_user_id
from octavia_runtime.config import Config
from octavia_runtime.errors import ApiError, invalid_argument, not_found, request_id_reused
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.resources import parse_name, timestamp

from .probe import MediaRejected, check_upload, probe
from .storage import UPLOADS_PREFIX, BlobNotFound, BlobStore, InvalidKey, check_key
from .store import COMPLETED, EXPIRED, FAILED, PENDING, AssetRow, MediaStore, UploadRow

UPLOAD_TTL = timedelta(hours=1)  # how long an upload URL works (and an upload waits for completion)
DOWNLOAD_TTL = timedelta(minutes=15)  # CreateDownloadUrl's default
BLOB_URL_TTL = timedelta(hours=1)  # CreateBlobUrls' default
MAX_FILENAME_CHARS = 255
MAX_REQUEST_ID_CHARS = 64
# A CompleteUpload holds its upload this long at most (a crashed one frees it when this ends).
COMPLETION_LEASE = timedelta(minutes=10)
JOBS_PREFIX = "jobs/"

_MEDIA_TYPE = re.compile(r"^(audio|video)/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_ANY_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_UNSAFE_IN_KEY = re.compile(r"[^A-Za-z0-9._-]+")


def asset_message(row: AssetRow) -> media_pb2.Asset:
    asset = media_pb2.Asset(
        name=f"assets/{row.id}",
        owner=f"users/{row.owner_id}",
        kind=row.kind,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        job=f"jobs/{row.job_id}" if row.job_id else "",
        create_time=timestamp(row.created_at),
    )
    if row.media_info:
        asset.media_info.ParseFromString(row.media_info)
    return asset


def failed_precondition(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, metadata=metadata)


def refused_media(refusal: MediaRejected) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, refusal.reason, refusal.message)


class MediaApi(media_pb2_grpc.MediaServiceServicer):
    def __init__(self, store: MediaStore, blobs: BlobStore, config: Config):
        self.store = store
        self.blobs = blobs
        self.config = config

    # ------------------------------------------------------------------ uploads

    async def CreateUpload(self, request, context):
        owner = current_user_id()
        filename, content_type = request.filename, request.content_type.strip().lower()
        _check_new_upload(filename, content_type, request.size_bytes, request.request_id, self.config.max_upload_bytes)
        upload_id = uuid.uuid4()
        row, created = await self.store.create_upload(
            upload_id,
            owner,
            filename=filename,
            content_type=content_type,
            size_bytes=request.size_bytes,
            staging_key=f"{UPLOADS_PREFIX}{upload_id}/{key_safe_filename(filename)}",
            request_id=request.request_id or None,
            expire_time=_now() + UPLOAD_TTL,
        )
        if not created:
            if (row.filename, row.content_type, row.size_bytes) != (filename, content_type, request.size_bytes):
                raise request_id_reused(f"file than {row.filename} ({row.size_bytes} bytes)", f"uploads/{row.id}")
            if row.state in (PENDING, EXPIRED) and row.expire_time <= _now():
                row = await self.store.renew_upload(row.id, _now() + UPLOAD_TTL)  # a fresh URL for a repeat
        return media_pb2.CreateUploadResponse(upload=self._upload_message(row))

    async def GetUpload(self, request, context):
        row = await self._own_upload(request.name)
        return media_pb2.GetUploadResponse(upload=self._upload_message(await self._expire_if_due(row)))

    async def CompleteUpload(self, request, context):
        upload_id = parse_name(request.name, "uploads")
        row, claimed = await self.store.claim_completion(current_user_id(), upload_id, COMPLETION_LEASE)
        if row is None:
            raise not_found("upload", request.name)
        if not claimed:
            return media_pb2.CompleteUploadResponse(asset=await self._completed_asset(row, request.name))
        try:
            asset = await self._complete(row)
        except BaseException:
            await self.store.release_completion(row.id)  # a no-op when the upload was marked FAILED
            raise
        return media_pb2.CompleteUploadResponse(asset=asset_message(asset))

    async def _complete(self, upload: UploadRow) -> AssetRow:
        name = f"uploads/{upload.id}"
        asset_key = f"assets/{upload.id}/{os.path.basename(upload.staging_key)}"
        try:
            await self.blobs.move(upload.staging_key, asset_key)
        except BlobNotFound:
            pass  # nothing PUT yet, or an earlier attempt moved it and stopped before recording the asset
        size = await self.blobs.size(asset_key)
        if size is None:
            raise failed_precondition(
                "UPLOAD_INCOMPLETE", f"nothing has been uploaded to {name} yet: PUT the file to its upload_url", upload=name
            )
        if size != upload.size_bytes:
            await self._refuse(upload, asset_key, "UPLOAD_INCOMPLETE")
            raise failed_precondition(
                "UPLOAD_INCOMPLETE",
                f"{size} bytes arrived but {upload.size_bytes} were declared; the file was deleted, start a new upload",
                upload=name,
            )
        try:
            info = await self._probe(asset_key, max_duration_s=self.config.max_media_duration_s)
        except MediaRejected as refusal:
            await self._refuse(upload, asset_key, refusal.reason)
            raise refused_media(refusal) from None
        return await self.store.complete_upload(
            upload, storage_key=asset_key, size_bytes=size, media_info=info.SerializeToString()
        )

    async def _refuse(self, upload: UploadRow, key: str, reason: str) -> None:
        """Keep nothing of a refused file: delete it, then mark the upload FAILED."""
        await self.blobs.delete(key)
        await self.store.fail_upload(upload.id, reason)

    async def _completed_asset(self, row: UploadRow, name: str) -> media_pb2.Asset:
        """CompleteUpload on an upload that is not (or no longer) PENDING and unclaimed."""
        if row.state == COMPLETED:
            asset = await self.store.get(row.owner_id, row.asset_id) if row.asset_id else None
            if asset is None:
                raise failed_precondition("ASSET_DELETED", f"{name} was completed, and its asset has since been deleted")
            return asset_message(asset)
        if row.state == FAILED:
            raise failed_precondition(
                "UPLOAD_FAILED", f"{name} was refused ({row.failure_reason}); start a new upload", upload=name
            )
        if row.state == EXPIRED or row.expire_time <= _now():
            await self._expire_if_due(row)
            raise failed_precondition("UPLOAD_EXPIRED", f"{name} expired before it was completed; start a new upload")
        raise ApiError(grpc.StatusCode.ABORTED, "UPLOAD_COMPLETING", f"{name} is being completed by another call; retry")

    async def _own_upload(self, name: str) -> UploadRow:
        row = await self.store.get_upload(current_user_id(), parse_name(name, "uploads"))
        if row is None:  # another user's upload is as absent as one that never existed
            raise not_found("upload", name)
        return row

    async def _expire_if_due(self, row: UploadRow) -> UploadRow:
        """Uploads expire lazily: the first read past the expiry marks it and deletes what arrived."""
        if row.state != PENDING or row.expire_time > _now():
            return row
        expired = await self.store.expire_upload(row.id)
        if expired is None:  # someone else changed it first
            return await self.store.get_upload(row.owner_id, row.id) or row
        await self.blobs.delete(row.staging_key)
        return expired

    def _upload_message(self, row: UploadRow) -> media_pb2.Upload:
        upload = media_pb2.Upload(
            name=f"uploads/{row.id}",
            owner=f"users/{row.owner_id}",
            filename=row.filename,
            content_type=row.content_type,
            size_bytes=row.size_bytes,
            state=row.state,
            expire_time=timestamp(row.expire_time),
            asset=f"assets/{row.asset_id}" if row.asset_id else "",
            create_time=timestamp(row.created_at),
        )
        remaining_s = (row.expire_time - _now()).total_seconds()
        if row.state == PENDING and remaining_s > 0:
            # Signed anew on each read, always for the upload's own expiry, size and type.
            signed = self.blobs.sign(
                row.staging_key,
                "PUT",
                math.ceil(remaining_s),
                content_type=row.content_type,
                max_bytes=row.size_bytes,
            )
            upload.upload_url = signed.url
            upload.upload_headers.update(signed.headers)
        return upload

    # ------------------------------------------------------------------ assets

    async def GetAsset(self, request, context):
        return media_pb2.GetAssetResponse(asset=asset_message(await self._own_asset(request.name)))

    async def ListAssets(self, request, context):
        scope = f"assets?kind={request.kind}&job={request.job}"
        limit, after = page_size(request.page_size), keyset_after(request.page_token, scope)
        job_id = parse_name(request.job, "jobs", field="job") if request.job else None
        rows = await self.store.list(current_user_id(), limit + 1, kind=request.kind, job_id=job_id, after=after)
        page, next_token = keyset_page(rows, limit, scope)
        return media_pb2.ListAssetsResponse(assets=[asset_message(row) for row in page], next_page_token=next_token)

    async def DeleteAsset(self, request, context):
        row = await self.store.delete_asset(current_user_id(), parse_name(request.name, "assets"))
        if row is None:
            raise not_found("asset", request.name)
        await self.blobs.delete(row.storage_key)
        return media_pb2.DeleteAssetResponse()

    async def CreateDownloadUrl(self, request, context):
        row = await self._own_asset(request.name)
        ttl_s = _ttl_s(request, "ttl", DOWNLOAD_TTL)
        signed = self.blobs.sign(
            row.storage_key,
            "GET",
            ttl_s,
            content_type=row.content_type,
            filename=row.filename,
            inline=request.inline_disposition,
        )
        return media_pb2.CreateDownloadUrlResponse(url=signed.url, expire_time=timestamp(signed.expire_time))

    async def _own_asset(self, name: str) -> AssetRow:
        row = await self.store.get(current_user_id(), parse_name(name, "assets"))
        if row is None:
            raise not_found("asset", name)
        return row

    # ------------------------------------------------------------------ internal

    async def ProbeMedia(self, request, context):
        source = request.WhichOneof("source")
        if source == "asset":
            if not request.owner:
                raise invalid_argument({"owner": "is required with asset: the user on whose behalf you ask"})
            owner_id = parse_name(request.owner, "users", field="owner")
            row = await self.store.get(owner_id, parse_name(request.asset, "assets", field="asset"))
            if row is None:
                raise not_found("asset", request.asset)
            if row.media_info and not request.refresh:
                info = media_pb2.MediaInfo.FromString(row.media_info)
            else:
                info = await self._probe_or_refuse(row.storage_key, request.asset)
                await self.store.set_media_info(row.id, info.SerializeToString())
            asset = asset_message(row)
            asset.media_info.CopyFrom(info)
            return media_pb2.ProbeMediaResponse(media_info=info, asset=asset)
        if source == "key":
            key = _job_key(request.key, "key")
            return media_pb2.ProbeMediaResponse(media_info=await self._probe_or_refuse(key, key))
        raise invalid_argument({"source": "set asset or key"})

    async def CreateBlobUrls(self, request, context):
        asks = list(request.requests)
        if not asks:
            raise invalid_argument({"requests": "name at least one URL to sign"})
        ttl_s = _ttl_s(request, "ttl", BLOB_URL_TTL)
        problems: dict[str, str] = {}
        asset_ids: dict[int, uuid.UUID] = {}
        for i, ask in enumerate(asks):
            if ask.method not in (media_pb2.BLOB_METHOD_GET, media_pb2.BLOB_METHOD_PUT):
                problems[f"requests[{i}].method"] = "must be BLOB_METHOD_GET or BLOB_METHOD_PUT"
            target = ask.WhichOneof("target")
            try:
                if target == "asset":
                    asset_ids[i] = parse_name(ask.asset, "assets", field=f"requests[{i}].asset")
                    if ask.method == media_pb2.BLOB_METHOD_PUT:
                        problems[f"requests[{i}].method"] = "assets are read-only: only BLOB_METHOD_GET"
                elif target == "key":
                    _job_key(ask.key, f"requests[{i}].key")
                else:
                    problems[f"requests[{i}]"] = "set asset or key"
            except ApiError as bad:
                problems.update(bad.fields)
        if problems:
            raise invalid_argument(problems)

        assets = await self.store.get_many(list(set(asset_ids.values())))
        urls = []
        for i, ask in enumerate(asks):
            method = "GET" if ask.method == media_pb2.BLOB_METHOD_GET else "PUT"
            if i in asset_ids:
                row = assets.get(asset_ids[i])
                if row is None:
                    raise not_found("asset", ask.asset)
                signed = self.blobs.sign(row.storage_key, method, ttl_s, content_type=row.content_type, internal=True)
            else:
                signed = self.blobs.sign(ask.key, method, ttl_s, internal=True)
            urls.append(
                media_pb2.SignedUrl(
                    target=ask.asset or ask.key,
                    method=ask.method,
                    url=signed.url,
                    headers=signed.headers,
                    expire_time=timestamp(signed.expire_time),
                )
            )
        return media_pb2.CreateBlobUrlsResponse(urls=urls)

    async def RegisterArtifact(self, request, context):
        job_id = parse_name(request.job, "jobs", field="job")
        owner_id = parse_name(request.owner, "users", field="owner")
        key = _job_key(request.key, "key")
        problems = {}
        if not key.startswith(f"{JOBS_PREFIX}{job_id}/"):
            problems["key"] = f"must be under {JOBS_PREFIX}{job_id}/, the job's own prefix"
        if error := _filename_problem(request.filename):
            problems["filename"] = error
        content_type = request.content_type.strip().lower()
        if not _ANY_TYPE.match(content_type):
            problems["content_type"] = "must be a MIME type such as audio/mp4 or text/vtt"
        if problems:
            raise invalid_argument(problems)

        size = await self.blobs.size(key)
        if size is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "BLOB_NOT_FOUND", f"nothing is stored at {key}", metadata={"key": key})
        media_info = None
        if content_type.startswith(("audio/", "video/")):
            media_info = (await self._probe_or_refuse(key, key)).SerializeToString()
        row = await self.store.upsert_artifact(
            owner_id=owner_id,
            job_id=job_id,
            key=key,
            filename=request.filename,
            content_type=content_type,
            size_bytes=size,
            media_info=media_info,
        )
        if row is None:
            raise failed_precondition("KEY_REGISTERED_ELSEWHERE", f"{key} is already an asset of another owner or job")
        return media_pb2.RegisterArtifactResponse(asset=asset_message(row))

    async def DeleteJobArtifacts(self, request, context):
        job_id = parse_name(request.job, "jobs", field="job")
        owner_id = parse_name(request.owner, "users", field="owner")
        # Rows first: an interruption then leaves blobs without assets (deleted on retry), never
        # assets whose blobs are gone.
        deleted_assets = await self.store.delete_job_artifacts(owner_id, job_id)
        deleted_blobs = await self.blobs.delete_prefix(f"{JOBS_PREFIX}{job_id}/")
        return media_pb2.DeleteJobArtifactsResponse(deleted_blobs=deleted_blobs, deleted_assets=deleted_assets)

    # ------------------------------------------------------------------ probing

    async def _probe(self, key: str, *, max_duration_s: int | None = None) -> media_pb2.MediaInfo:
        """Probe a blob (downloaded first when the backend is remote); with `max_duration_s`, apply the upload rules."""
        async with self.blobs.local_copy(key) as path:
            info = await asyncio.to_thread(probe, path)
        if max_duration_s is not None:
            check_upload(info, max_duration_s)
        return info

    async def _probe_or_refuse(self, key: str, name: str) -> media_pb2.MediaInfo:
        try:
            return await self._probe(key)
        except MediaRejected as refusal:
            raise refused_media(refusal) from None
        except BlobNotFound:
            raise failed_precondition("BLOB_NOT_FOUND", f"the file of {name} is missing from storage") from None


# --------------------------------------------------------------------------- validation


def _now() -> datetime:
    return datetime.now(UTC)


def _filename_problem(filename: str) -> str | None:
    if not filename.strip():
        return "is required"
    if len(filename) > MAX_FILENAME_CHARS:
        return f"must be at most {MAX_FILENAME_CHARS} characters"
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        return "must be a file name, without a path"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in filename):
        return "must not contain control characters"
    return None


def _check_new_upload(filename: str, content_type: str, size_bytes: int, request_id: str, max_bytes: int) -> None:
    """CreateUpload's fields; INVALID_ARGUMENT naming each bad one, with the most specific reason."""
    problems: dict[str, str] = {}
    reasons: list[str] = []
    if error := _filename_problem(filename):
        problems["filename"] = error
    if not _MEDIA_TYPE.match(content_type):
        problems["content_type"] = f"must be an audio/* or video/* MIME type, not {content_type or 'empty'}"
        reasons.append("UNSUPPORTED_CONTENT_TYPE")
    if size_bytes <= 0:
        problems["size_bytes"] = "must be the file's exact size in bytes, more than 0"
    elif size_bytes > max_bytes:
        problems["size_bytes"] = f"is {size_bytes} bytes; the limit is {max_bytes}"
        reasons.append("UPLOAD_TOO_LARGE")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        problems["request_id"] = f"must be at most {MAX_REQUEST_ID_CHARS} characters"
    if problems:
        raise invalid_argument(problems, reason=reasons[0] if len(reasons) == len(problems) else "INVALID_ARGUMENT")


def key_safe_filename(filename: str) -> str:
    """The file name as a storage key segment: ASCII letters, digits, `._-`; no leading dot.
    The original name is kept in the database for downloads."""
    stem, ext = os.path.splitext(filename)
    stem = _UNSAFE_IN_KEY.sub("_", stem).lstrip(".")[:100] or "file"
    ext = _UNSAFE_IN_KEY.sub("_", ext)[:16]
    return stem + ext


def _job_key(key: str, field: str) -> str:
    """A storage key under jobs/<job>/, the only keys other services may name."""
    try:
        check_key(key)
    except InvalidKey as exc:
        raise invalid_argument({field: str(exc)}) from None
    if not key.startswith(JOBS_PREFIX) or key.count("/") < 2:
        raise invalid_argument({field: f"must be a key under {JOBS_PREFIX}<job>/"})
    return key


def _ttl_s(request, field: str, default: timedelta) -> int:
    """A request's optional TTL (Duration) in whole seconds: unset or zero means `default`.
    (The API's declared bounds, 0 to 24 hours, were checked before the call got here.)"""
    ttl: Duration = getattr(request, field)
    seconds = ttl.seconds + ttl.nanos / 1e9
    return math.ceil(seconds) if seconds > 0 else int(default.total_seconds())
