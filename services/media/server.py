"""Wires the media service into the shared runtime: the API, blob storage and its HTTP server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog
from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import MediaApi
from .blobserver import BlobServer, PutCheck
from .stages import MediaStages
from .storage import UPLOADS_PREFIX, BlobStore, LocalBlobStore, open_store
from .store import COMPLETED, FAILED, PENDING, MediaStore

log = structlog.get_logger("media")
SWEEP_INTERVAL_S = 300
# An upload URL still works for a PUT that started just before it expired: wait this long
# after the expiry before deleting what such a PUT may have left behind.
SWEEP_GRACE = timedelta(minutes=15)
SWEEP_BATCH = 200


async def setup(rt: Runtime) -> None:
    blobs = open_store(rt.config)
    await blobs.prepare()
    store = MediaStore(rt.db)
    if isinstance(blobs, LocalBlobStore):
        # The local backend's signed URLs are served here (users reach it through Envoy's /blobs/).
        server = BlobServer(
            blobs,
            rt.config.blob_signing_key,
            port=rt.config.blob_port,
            grace_s=rt.config.grace_period_s,
            put_check=upload_put_check(store),
        )
        await server.start()
        rt.background(server.serve(), name="blobs.serve")
    rt.background(sweep_uploads(store, blobs), name="uploads.sweep")
    rt.serve(media_pb2_grpc.add_MediaServiceServicer_to_server, MediaApi(store, blobs, rt.config))
    # Probing, extraction and subtitles are short and mostly ffmpeg in a thread: two at once.
    rt.run_stages(MediaStages(blobs, store).handlers(), concurrency=2)


def upload_put_check(store: MediaStore) -> PutCheck:
    """The blob server's PUT check: a staging key takes a file only while its upload is
    PENDING and unexpired (a PUT begun before the expiry may finish within SWEEP_GRACE,
    before the sweep looks) and no CompleteUpload is moving what arrived. Other keys
    (job artifacts, whose URLs only workers get) always do."""

    async def check(key: str, arrived: bool) -> tuple[int, str, str] | None:
        if not key.startswith(UPLOADS_PREFIX):
            return None
        window = await store.put_window(key, SWEEP_GRACE)
        if window is None:
            return 404, "UPLOAD_NOT_FOUND", "no upload has this URL"
        if window.state == COMPLETED:
            return (
                409,
                "UPLOAD_CLOSED",
                "the upload was completed and its file is an asset now; start a new upload to send another",
            )
        if window.state == FAILED:
            return 409, "UPLOAD_CLOSED", "the upload was refused; start a new upload"
        if window.state != PENDING or (window.past_grace if arrived else window.expired):
            return 409, "UPLOAD_CLOSED", "the upload expired before it was completed; start a new upload"
        if window.completing:
            return 409, "UPLOAD_COMPLETING", "the upload is being completed; a file sent now would not be part of it"
        return None

    return check


async def sweep_uploads(store: MediaStore, blobs: BlobStore) -> None:
    """Every SWEEP_INTERVAL_S, `sweep_uploads_once`."""
    while True:
        try:
            await sweep_uploads_once(store, blobs)
        except Exception as exc:  # noqa: BLE001 - a database or storage outage: try again next round
            log.warning("uploads.sweep_failed", error=str(exc) or type(exc).__name__)
        await asyncio.sleep(SWEEP_INTERVAL_S)


async def sweep_uploads_once(store: MediaStore, blobs: BlobStore) -> int:
    """Delete what uploads left in storage that nothing will use; returns how many blobs.

    Uploads expired for longer than SWEEP_GRACE are marked EXPIRED (if never completed)
    and their staging key emptied, once each. Then every blob under a staging key whose
    upload is no longer PENDING goes: a presigned S3 URL cannot be revoked, so a PUT to
    it after CompleteUpload (or a refusal) lands whatever the upload's state, every round
    until the URL expires. Last, the temporary files of writes that never finished.
    """
    deleted = 0
    while due := await store.uploads_to_sweep(SWEEP_GRACE, SWEEP_BATCH):
        for _, key in due:
            deleted += await blobs.delete(key)
        await store.mark_swept([upload_id for upload_id, _ in due])
    keys = await blobs.list_keys(UPLOADS_PREFIX)
    for start in range(0, len(keys), SWEEP_BATCH):
        owners = {key: _upload_of(key) for key in keys[start : start + SWEEP_BATCH]}
        states = await store.upload_states([upload_id for upload_id in owners.values() if upload_id is not None])
        for key, upload_id in owners.items():
            if upload_id is None or states.get(upload_id) != PENDING:  # closed, or no upload at all
                deleted += await blobs.delete(key)
    deleted += await blobs.discard_abandoned()
    if deleted:
        log.info("uploads.swept", blobs=deleted)
    return deleted


def _upload_of(staging_key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(staging_key.removeprefix(UPLOADS_PREFIX).split("/", 1)[0])
    except ValueError:
        return None


SERVICE = Service(
    name="media",
    apis=(media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name,),
    setup=setup,
    nats=True,
    consumers=bus.stage_workers("media"),
)
