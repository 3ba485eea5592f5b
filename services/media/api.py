"""The MediaService servicer: thin; it validates, reads the store and shapes replies."""

from __future__ import annotations

from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime.auth import current_user_id
from octavia_runtime.errors import not_found
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.pending import pending
from octavia_runtime.resources import parse_name, timestamp

from .store import AssetRow, MediaStore

_SERVICE = media_pb2.DESCRIPTOR.services_by_name["MediaService"]
_UPLOADS = "uploads through presigned URLs and media probing"
_ARTIFACTS = "job artifacts and signed downloads"


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


@pending(
    _SERVICE,
    {
        "CreateUpload": _UPLOADS,
        "GetUpload": _UPLOADS,
        "CompleteUpload": _UPLOADS,
        "ProbeMedia": _UPLOADS,
        "DeleteAsset": _ARTIFACTS,
        "CreateDownloadUrl": _ARTIFACTS,
        "CreateBlobUrls": _ARTIFACTS,
        "RegisterArtifact": _ARTIFACTS,
        "DeleteJobArtifacts": _ARTIFACTS,
    },
)
class MediaApi(media_pb2_grpc.MediaServiceServicer):
    def __init__(self, store: MediaStore):
        self.store = store

    async def GetAsset(self, request, context):
        row = await self.store.get(current_user_id(), parse_name(request.name, "assets"))
        if row is None:
            raise not_found("asset", request.name)
        return media_pb2.GetAssetResponse(asset=asset_message(row))

    async def ListAssets(self, request, context):
        limit, after = page_size(request.page_size), keyset_after(request.page_token)
        job_id = parse_name(request.job, "jobs", field="job") if request.job else None
        rows = await self.store.list(current_user_id(), limit + 1, kind=request.kind, job_id=job_id, after=after)
        page, next_token = keyset_page(rows, limit)
        return media_pb2.ListAssetsResponse(assets=[asset_message(row) for row in page], next_page_token=next_token)
