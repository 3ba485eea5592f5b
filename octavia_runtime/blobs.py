"""Reading and writing a job's blobs from a stage worker outside the media service.

Media owns blob storage. Other workers ask it for signed URLs
(`MediaService.CreateBlobUrls`, service identity only) and move the bytes
with plain HTTP, streamed from and to local files, so the same code works
whether the bytes live on media's disk or in S3.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from octavia.jobs.v1 import stages_pb2
from octavia.media.v1 import media_pb2, media_pb2_grpc

from .stages import transient

CHUNK = 1024 * 1024


class RemoteBlobs:
    def __init__(self, channel):
        self.media = media_pb2_grpc.MediaServiceStub(channel)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))

    async def _url(self, ref: stages_pb2.ArtifactRef, method: media_pb2.BlobMethod) -> media_pb2.SignedUrl:
        request = media_pb2.BlobUrlRequest(method=method)
        if ref.asset:
            request.asset = ref.asset
        else:
            request.key = ref.key
        reply = await self.media.CreateBlobUrls(media_pb2.CreateBlobUrlsRequest(requests=[request]), timeout=10)
        return reply.urls[0]

    async def fetch(self, ref: stages_pb2.ArtifactRef, path: Path) -> Path:
        """Download the blob `ref` names into `path`."""
        signed = await self._url(ref, media_pb2.BLOB_METHOD_GET)
        async with self.http.stream("GET", signed.url, headers=dict(signed.headers)) as response:
            if response.status_code != 200:
                raise transient("BLOB_UNAVAILABLE", f"reading {ref.key or ref.asset}: HTTP {response.status_code}")
            with path.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    out.write(chunk)
        return path

    async def store(self, ref: stages_pb2.ArtifactRef, path: Path) -> stages_pb2.ArtifactRef:
        """Upload `path` to the key `ref` names; returns `ref` with its size."""
        signed = await self._url(ref, media_pb2.BLOB_METHOD_PUT)
        size = path.stat().st_size
        headers = {**signed.headers, "Content-Length": str(size)}

        async def body():
            with path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    yield chunk

        response = await self.http.put(signed.url, content=body(), headers=headers)
        if response.status_code not in (200, 201, 204):
            raise transient("BLOB_UNAVAILABLE", f"writing {ref.key}: HTTP {response.status_code} {response.text[:200]}")
        stored = stages_pb2.ArtifactRef()
        stored.CopyFrom(ref)
        stored.size_bytes = size
        return stored

    async def close(self) -> None:
        await self.http.aclose()
