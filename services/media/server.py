"""Wires the media service into the shared runtime: the API, blob storage and its HTTP server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import MediaApi
from .blobserver import BlobServer
from .stages import MediaStages
from .storage import BlobStore, LocalBlobStore, open_store
from .store import MediaStore

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
            blobs, rt.config.blob_signing_key, port=rt.config.blob_port, grace_s=rt.config.grace_period_s
        )
        await server.start()
        rt.background(server.serve(), name="blobs.serve")
    rt.background(sweep_uploads(store, blobs), name="uploads.sweep")
    rt.serve(media_pb2_grpc.add_MediaServiceServicer_to_server, MediaApi(store, blobs, rt.config))
    # Probing, extraction and subtitles are short and mostly ffmpeg in a thread: two at once.
    rt.run_stages(MediaStages(blobs, store).handlers(), concurrency=2)


async def sweep_uploads(store: MediaStore, blobs: BlobStore) -> None:
    """Delete what abandoned uploads left in storage: files never completed, and files PUT again
    to an upload URL after its upload was completed or refused. Each upload is swept once."""
    while True:
        try:
            while due := await store.uploads_to_sweep(SWEEP_GRACE, SWEEP_BATCH):
                for _, key in due:
                    await blobs.delete(key)
                await store.mark_swept([upload_id for upload_id, _ in due])
                log.info("uploads.swept", count=len(due))
        except Exception as exc:  # noqa: BLE001 - a database or storage outage: try again next round
            log.warning("uploads.sweep_failed", error=str(exc) or type(exc).__name__)
        await asyncio.sleep(SWEEP_INTERVAL_S)


SERVICE = Service(
    name="media",
    apis=(media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name,),
    setup=setup,
    nats=True,
    consumers=bus.stage_workers("media"),
)
