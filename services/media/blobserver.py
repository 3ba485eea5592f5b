"""The local backend's HTTP server: signed PUT and GET of blobs, inside the media process.

    PUT  /blobs/<key>?method=PUT&expires=...&obj=...&max=...&type=...&sig=...
    GET  /blobs/<key>?method=GET&expires=...&obj=...&disposition=...&sig=...   (and HEAD)

Users reach it through Envoy (`/blobs/` on the public port, transcoder off);
other services' workers reach it directly on `config.blob_port`. Every
request needs a URL the media service signed (services/media/signing.py);
anything else is refused before a byte is stored, with a JSON body shaped
like Envoy's own errors: {"code": 403, "message": "...", "reason": "SIGNATURE_EXPIRED"}.

A PUT streams its body to a temporary file on the store's filesystem and
renames it into place when complete, so readers see the old blob or the new
one, never a part; a body over the signed maximum is refused (413) and its
partial file deleted. A signature cannot be taken back, so a PUT also asks
`put_check` whether its key still takes a file (an upload's staging key stops
when the upload is completed, refused or expired: 409 UPLOAD_CLOSED), before
reading the body and again before storing it. A GET serves the file with the
signed presentation (Content-Disposition, Content-Type) and supports Range
requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from . import signing
from .storage import BLOB_PATH, InvalidKey, LocalBlobStore, content_disposition

log = structlog.get_logger("blobs")
_WRITE_BATCH = 4 * 1024 * 1024  # bytes gathered before one write in a worker thread
_READ_CHUNK = 256 * 1024
# After refusing a body mid-way, read (and drop) the rest this long so the client sees the
# answer rather than a reset; aiohttp's default of 10 s would hold a refused upload's socket.
_LINGER_S = 2.0


# Asked before a PUT to a key reads its body (False) and before it stores it (True):
# None, or why not as (HTTP status, reason, message).
PutCheck = Callable[[str, bool], Awaitable[tuple[int, str, str] | None]]


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message, "reason": reason}, status=status)


class BlobServer:
    """Serves `store`'s blobs over HTTP on host:port (port 0: any free port, see `.port`)."""

    def __init__(
        self,
        store: LocalBlobStore,
        signing_key: str,
        *,
        host: str = "0.0.0.0",
        port: int,
        grace_s: float = 10,
        put_check: PutCheck | None = None,
    ):
        self.store = store
        self._signing_key = signing_key
        self._put_check = put_check
        self.host = host
        self.port = port
        self.grace_s = grace_s  # at shutdown, transfers under way get this long to finish
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        path = BLOB_PATH + "{key:.+}"
        app.router.add_get(path, self._get)  # also answers HEAD
        app.router.add_put(path, self._put)
        app.router.add_route("*", path, self._other_method)
        return app

    async def start(self) -> None:
        """Listen; a port already in use fails here, while the service starts."""
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=self.grace_s, lingering_time=_LINGER_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("blobs.started", port=self.port, root=str(self.store.root))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self) -> None:
        """Run until cancelled (as a runtime background task), then stop."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ handlers

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as refused:
            log.info("blobs.refused", method=request.method, path=request.path, status=refused.status, reason=refused.reason)
            return _error(refused.status, refused.reason, refused.message)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("blobs.failed", method=request.method, path=request.path)
            return _error(500, "INTERNAL", "the blob server failed; see the media service's log")

    def _authorize(self, request: web.Request) -> tuple[str, signing.Grant]:
        key = request.match_info["key"]
        try:
            self.store.path_of(key)
        except InvalidKey as exc:
            raise _Refused(400, "INVALID_KEY", str(exc)) from None
        params = {name: request.query.get(name, "") for name in request.query}
        try:
            return key, signing.verify(self._signing_key, request.method, key, params, time.time())
        except signing.SignatureError as exc:
            raise _Refused(403, exc.reason, exc.message) from None

    async def _put(self, request: web.Request) -> web.Response:
        key, grant = self._authorize(request)
        sent_type = request.headers.get("Content-Type", "")
        if grant.content_type and _media_type(sent_type) != _media_type(grant.content_type):
            raise _Refused(
                403,
                "CONTENT_TYPE_MISMATCH",
                f"the URL was signed for Content-Type {grant.content_type}, not {sent_type or 'none'}",
            )
        limit = grant.max_bytes
        if limit is not None and request.content_length is not None and request.content_length > limit:
            raise _Refused(413, "UPLOAD_TOO_LARGE", f"the body is {request.content_length} bytes; the URL allows at most {limit}")

        await self._check_put(key, arrived=False)
        temp = self.store.incoming_path()
        try:
            size = await self._receive(request, temp, limit)
            await self._check_put(key, arrived=True)  # the upload may have closed while the body came
            await asyncio.to_thread(self.store.commit, temp, key)
        finally:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
        log.info("blobs.stored", key=key, size_bytes=size)
        return web.json_response({"size_bytes": size})

    async def _check_put(self, key: str, *, arrived: bool) -> None:
        if self._put_check is None:
            return
        try:
            refusal = await self._put_check(key, arrived)
        except Exception as exc:  # noqa: BLE001 - the database is away: the client may retry
            log.warning("blobs.put_check_failed", key=key, error=str(exc) or type(exc).__name__)
            raise _Refused(503, "UNAVAILABLE", "whether this URL still takes a file cannot be checked now; retry") from None
        if refusal is not None:
            raise _Refused(*refusal)

    async def _receive(self, request: web.Request, temp: Path, limit: int | None) -> int:
        """Stream the body into `temp`; refused (413) as soon as it passes `limit`."""
        size = 0
        batch = bytearray()
        file = await asyncio.to_thread(open, temp, "wb")
        try:
            async for chunk in request.content.iter_chunked(_READ_CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _Refused(413, "UPLOAD_TOO_LARGE", f"the body is larger than the {limit} bytes the URL allows")
                batch += chunk
                if len(batch) >= _WRITE_BATCH:
                    await asyncio.to_thread(file.write, bytes(batch))
                    batch.clear()
            if batch:
                await asyncio.to_thread(file.write, bytes(batch))
        finally:
            await asyncio.to_thread(file.close)
        return size

    async def _get(self, request: web.Request) -> web.StreamResponse:
        key, grant = self._authorize(request)
        path = self.store.path_of(key)
        if not await asyncio.to_thread(path.is_file):
            raise _Refused(404, "BLOB_NOT_FOUND", "no file is stored at this URL")
        headers = {
            "Content-Disposition": content_disposition(grant.filename, grant.disposition == "inline"),
            # The URL is a capability of one user: no shared cache may keep the answer.
            "Cache-Control": "private, no-store",
        }
        if grant.content_type:
            headers["Content-Type"] = grant.content_type
        return web.FileResponse(path, chunk_size=_READ_CHUNK, headers=headers)

    async def _other_method(self, request: web.Request) -> web.Response:
        raise _Refused(405, "METHOD_NOT_ALLOWED", f"{request.method} is not served here; signed URLs allow GET, HEAD or PUT")


def _media_type(value: str) -> str:
    """`Audio/MPEG; charset=x` -> `audio/mpeg`: parameters and case do not change what a type is."""
    return value.split(";", 1)[0].strip().lower()
