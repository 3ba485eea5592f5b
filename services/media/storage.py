"""Blob storage: one interface, a local-filesystem backend and an S3 backend.

Keys are relative paths such as `uploads/<upload id>/<file>`, `assets/<asset
id>/<file>` and `jobs/<job id>/<stage>/<language or _>/<role>.<ext>`.
`check_key` refuses anything that could leave the store's root or be read two
ways: absolute paths, backslashes, control characters, empty segments and
segments that start with a dot (`.`, `..`, and the local backend's own
`.incoming/`).

Clients never reach a backend directly: they get signed URLs (`sign`). The
local backend's URLs point at the media service's blob server
(services/media/blobserver.py), through Envoy for users (`config.public_url`)
or straight at the media service for other services' workers (`internal`).
The S3 backend's URLs are S3's own presigned URLs.

Every method that touches storage is async; blocking work (file copies,
boto3 calls) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

from octavia_runtime.config import Config

from . import signing

MAX_KEY_BYTES = 1024  # S3's limit, applied to both backends so a key works on either
BLOB_PATH = "/blobs/"  # where the blob server (and Envoy's route to it) serves keys
INCOMING_DIR = ".incoming"  # the local backend's temporary files; no key can start with a dot
# A temporary file not written to for this long belongs to a write that will never finish (its
# process died): an upload URL lasts an hour, and a live transfer writes every few megabytes.
ABANDONED_AFTER_S = 3600.0
UPLOADS_PREFIX = "uploads/"  # where uploads are staged: uploads/<upload id>/<file>
_COPY_CHUNK = 1024 * 1024


class InvalidKey(ValueError):
    """A storage key that could escape the store or be read two ways."""


class BlobNotFound(LookupError):
    """No blob is stored under the key."""


def check_key(key: str) -> str:
    """`key` if it is a valid storage key; InvalidKey saying why otherwise."""
    if not key:
        raise InvalidKey("the key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey("the key is an absolute path")
    if "\\" in key:
        raise InvalidKey("the key holds a backslash")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidKey("the key holds a control character")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey("the key has an empty segment (// or a trailing /)")
        if segment.startswith("."):
            raise InvalidKey(f"the key has a segment starting with a dot ({segment!r})")
    return key


def check_prefix(prefix: str) -> str:
    """A key prefix ending in `/`; the empty prefix (everything) is refused."""
    if not prefix.endswith("/"):
        raise InvalidKey("a prefix must end with /")
    check_key(prefix[:-1])
    return prefix


def content_disposition(filename: str | None, inline: bool) -> str:
    """A Content-Disposition value (RFC 6266): an ASCII fallback name plus the exact UTF-8 name."""
    kind = "inline" if inline else "attachment"
    if not filename:
        return kind
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(frozen=True)
class SignedUrl:
    """A URL that allows one method on one object until `expire_time`."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)  # the request must carry exactly these
    expire_time: datetime = field(default_factory=lambda: datetime.now(UTC))


class BlobStore(Protocol):
    """What the media service needs of a blob backend."""

    async def prepare(self) -> None:
        """Make the store usable (create the folder or check the bucket); called once at start."""

    async def put_file(self, key: str, path: str | os.PathLike, content_type: str) -> int:
        """Store the local file `path` under `key` (replacing any blob there); returns the bytes stored."""

    async def get_file(self, key: str, path: str | os.PathLike) -> None:
        """Copy the blob to the local file `path` (replaced whole, never half-written); BlobNotFound if absent."""

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None if there is none."""

    async def delete(self, key: str) -> bool:
        """Delete the blob; False if there was none."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with `prefix` (which ends with /); returns how many."""

    async def list_keys(self, prefix: str) -> list[str]:
        """The keys of every blob under `prefix` (which ends with /)."""

    async def discard_abandoned(self) -> int:
        """Delete what writes that never finished (a process killed mid-PUT) left behind; returns how many."""

    async def move(self, src: str, dst: str) -> None:
        """Move a blob to another key (replacing any blob there); BlobNotFound if `src` is absent."""

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """`async with store.local_copy(key) as path`: the blob as a local file, for as long as the block runs.
        BlobNotFound if absent. The file is read-only to the caller: it may be the stored blob itself."""

    def sign(
        self,
        key: str,
        method: str,
        ttl_s: int,
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
        filename: str | None = None,
        inline: bool = False,
        internal: bool = False,
    ) -> SignedUrl:
        """A URL allowing `method` ("GET" or "PUT") on `key` for `ttl_s` seconds.

        PUT: the request must carry `content_type` (when given) and a body of at
        most `max_bytes` (S3: exactly). GET: served as `content_type`, as a
        download named `filename` (or `inline`). `internal`: for another
        service's worker inside the mesh rather than a user's browser."""


def _expiry(ttl_s: int) -> tuple[int, datetime]:
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    expires = int(time.time()) + ttl_s
    return expires, datetime.fromtimestamp(expires, UTC)


# --------------------------------------------------------------------------- local filesystem


class LocalBlobStore:
    """Blobs as files under `root_dir`, written atomically (a temporary file renamed into place)."""

    def __init__(self, root_dir: str | os.PathLike, *, signing_key: str = "", public_url: str = "", internal_url: str = ""):
        self.root = Path(root_dir).resolve()
        self.incoming = self.root / INCOMING_DIR
        self._signing_key = signing_key
        self.public_url = public_url.rstrip("/")
        self.internal_url = internal_url.rstrip("/")

    def path_of(self, key: str) -> Path:
        """The file that holds (or would hold) the blob of `key`."""
        path = self.root / check_key(key)
        # check_key already rules out escapes; this also catches a symlink planted inside the root.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey("the key resolves outside the store")
        return path

    def incoming_path(self) -> Path:
        """A fresh temporary path on the store's filesystem, to write a blob before `commit`."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        return self.incoming / uuid.uuid4().hex

    async def discard_abandoned(self) -> int:
        return await asyncio.to_thread(self._discard_abandoned, time.time() - ABANDONED_AFTER_S)

    def _discard_abandoned(self, before: float) -> int:
        discarded = 0
        for temp in self.incoming.glob("*") if self.incoming.is_dir() else ():
            try:
                if temp.stat().st_mtime < before:
                    temp.unlink()
                    discarded += 1
            except FileNotFoundError:
                pass  # its write finished (or another sweep took it) meanwhile
        return discarded

    def commit(self, temp: Path, key: str) -> None:
        """Rename a finished temporary file into place: readers see the old blob or the new, never half of one."""
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, path)

    async def prepare(self) -> None:
        await asyncio.to_thread(self.incoming.mkdir, parents=True, exist_ok=True)

    async def put_file(self, key: str, path: str | os.PathLike, content_type: str) -> int:
        # The content type is not kept: signed GET URLs carry the type to serve.
        target = self.path_of(key)
        return await asyncio.to_thread(self._put, Path(path), target)

    def _put(self, source: Path, target: Path) -> int:
        temp = self.incoming_path()
        try:
            with open(source, "rb") as src, open(temp, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            size = temp.stat().st_size
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            return size
        finally:
            temp.unlink(missing_ok=True)

    async def get_file(self, key: str, path: str | os.PathLike) -> None:
        source = self.path_of(key)
        await asyncio.to_thread(_copy_atomically, source, Path(path), key)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path_of(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> bool:
        path = self.path_of(key)
        return await asyncio.to_thread(self._delete, path)

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        self._prune(path.parent)
        return True

    def _prune(self, directory: Path) -> None:
        """Remove folders left empty, up to (not including) the root."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def delete_prefix(self, prefix: str) -> int:
        folder = self.path_of(check_prefix(prefix)[:-1])
        return await asyncio.to_thread(self._delete_tree, folder)

    def _delete_tree(self, folder: Path) -> int:
        if not folder.is_dir():
            return 0
        count = sum(len(files) for _, _, files in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        self._prune(folder.parent)
        return count

    async def list_keys(self, prefix: str) -> list[str]:
        folder = self.path_of(check_prefix(prefix)[:-1])
        return await asyncio.to_thread(self._keys_under, folder)

    def _keys_under(self, folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        return sorted(path.relative_to(self.root).as_posix() for path in folder.rglob("*") if path.is_file())

    async def move(self, src: str, dst: str) -> None:
        source, target = self.path_of(src), self.path_of(dst)
        await asyncio.to_thread(self._move, source, target, src)

    def _move(self, source: Path, target: Path, key: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        self._prune(source.parent)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self.path_of(key)
        if not await asyncio.to_thread(path.is_file):
            raise BlobNotFound(key)
        yield path

    def sign(
        self,
        key: str,
        method: str,
        ttl_s: int,
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
        filename: str | None = None,
        inline: bool = False,
        internal: bool = False,
    ) -> SignedUrl:
        if not self._signing_key:
            raise RuntimeError("this LocalBlobStore has no signing key")
        expires, expire_time = _expiry(ttl_s)
        grant = signing.Grant(
            method=method,
            key=check_key(key),
            expires=expires,
            max_bytes=max_bytes if method == "PUT" else None,
            content_type=content_type,
            disposition=None if method == "PUT" else ("inline" if inline else "attachment"),
            filename=None if method == "PUT" else filename,
        )
        query = urlencode(signing.sign(self._signing_key, grant))
        base = self.internal_url if internal else self.public_url
        headers = {"Content-Type": content_type} if method == "PUT" and content_type else {}
        return SignedUrl(f"{base}{BLOB_PATH}{quote(key, safe='/')}?{query}", headers, expire_time)


def _copy_atomically(source: Path, target: Path, key: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as dst:
            try:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
            except FileNotFoundError:
                raise BlobNotFound(key) from None
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- S3


class S3BlobStore:
    """Blobs in one S3 bucket (AWS, MinIO, or any S3-compatible server at `endpoint_url`).

    Credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID, ..., an
    instance role). Presigned URLs use Signature Version 4."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str = "us-east-1", client=None):
        self.bucket = bucket
        if client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region,
                config=BotoConfig(
                    signature_version="s3v4",
                    # Path-style for S3-compatible servers, whose names rarely resolve as <bucket>.<host>.
                    s3={"addressing_style": "path" if endpoint_url else "auto"},
                    retries={"mode": "standard", "max_attempts": 5},
                ),
            )
        self.client = client  # boto3 clients are thread-safe: shared by the worker threads

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")

    async def prepare(self) -> None:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if not self._missing(exc):
                raise
            # Convenient with a fresh MinIO or moto; on AWS the operator normally creates the bucket.
            await asyncio.to_thread(self.client.create_bucket, Bucket=self.bucket)

    async def put_file(self, key: str, path: str | os.PathLike, content_type: str) -> int:
        check_key(key)
        await asyncio.to_thread(self.client.upload_file, str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})
        return os.path.getsize(path)

    async def get_file(self, key: str, path: str | os.PathLike) -> None:
        check_key(key)
        await asyncio.to_thread(self._download, key, Path(path))

    def _download(self, key: str, target: Path) -> None:
        from botocore.exceptions import ClientError

        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            try:
                self.client.download_file(self.bucket, key, temp)
            except ClientError as exc:
                if self._missing(exc):
                    raise BlobNotFound(key) from None
                raise
            os.replace(temp, target)
        finally:
            Path(temp).unlink(missing_ok=True)

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        check_key(key)
        try:
            head = await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    async def delete(self, key: str) -> bool:
        # S3 deletes answer the same whether or not the object existed: ask first.
        if await self.size(key) is None:
            return False
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)
        return True

    async def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:  # a page holds at most 1000 keys, DeleteObjects' limit
                reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                errors = reply.get("Errors", [])
                if errors:
                    raise RuntimeError(f"S3 refused to delete {len(errors)} objects under {prefix}: {errors[0]}")
                deleted += len(keys)
        return deleted

    async def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list_keys, prefix)

    async def discard_abandoned(self) -> int:
        # S3 stores an object whole or not at all; parts of a multipart upload that never completed
        # are for the bucket's lifecycle rule (AbortIncompleteMultipartUpload).
        return 0

    def _list_keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    async def move(self, src: str, dst: str) -> None:
        from botocore.exceptions import ClientError

        check_key(src), check_key(dst)
        try:
            # Managed copy: multipart (and type-preserving) for objects too large for one CopyObject.
            await asyncio.to_thread(self.client.copy, {"Bucket": self.bucket, "Key": src}, self.bucket, dst)
        except ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(src) from None
            raise
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=src)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="octavia-blob-")
        try:
            path = Path(folder) / Path(key).name
            await self.get_file(key, path)
            yield path
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def sign(
        self,
        key: str,
        method: str,
        ttl_s: int,
        *,
        content_type: str | None = None,
        max_bytes: int | None = None,
        filename: str | None = None,
        inline: bool = False,
        internal: bool = False,
    ) -> SignedUrl:
        # `internal` changes nothing: S3 is reached the same way from inside and outside the mesh.
        check_key(key)
        _, expire_time = _expiry(ttl_s)
        params: dict = {"Bucket": self.bucket, "Key": key}
        headers: dict[str, str] = {}
        if method == "PUT":
            operation = "put_object"
            if content_type:
                params["ContentType"] = content_type
                headers["Content-Type"] = content_type
            if max_bytes is not None:
                # A presigned PUT cannot say "at most": it signs the exact Content-Length.
                params["ContentLength"] = max_bytes
        elif method == "GET":
            operation = "get_object"
            params["ResponseContentDisposition"] = content_disposition(filename, inline)
            if content_type:
                params["ResponseContentType"] = content_type
        else:
            raise ValueError(f"method must be GET or PUT, not {method!r}")
        url = self.client.generate_presigned_url(operation, Params=params, ExpiresIn=ttl_s)
        return SignedUrl(url, headers, expire_time)


# --------------------------------------------------------------------------- choice


def open_store(config: Config) -> BlobStore:
    """The backend `config.storage` names."""
    if config.storage == "s3":
        return S3BlobStore(config.s3_bucket, endpoint_url=config.s3_endpoint_url or None, region=config.s3_region)
    media = config.endpoint("media")
    return LocalBlobStore(
        config.storage_dir,
        signing_key=config.blob_signing_key,
        public_url=config.public_url,
        internal_url=f"http://{media.host}:{config.blob_port}",
    )
