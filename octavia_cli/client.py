"""Octavia's REST/JSON API through Envoy, with the signed-in session.

Every call carries the session's access token. An access token past its
expiry is refreshed first (POST /v1/auth/refresh), and a call answered 401
TOKEN_EXPIRED is refreshed and sent once more; the rotated tokens are saved.
With an API key (OCTAVIA_API_KEY) every call sends the key instead, and there
is no session to refresh or forget. Presigned upload and download URLs are
their own credential and are fetched without either, so neither ever reaches a
storage host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx

from .credentials import API_KEY_ENV, CredentialStore, Session, parse_duration
from .sse import SSEParser

CHUNK = 1024 * 1024  # bytes read from disk per upload write
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
# Longer than the 15 s between WatchJob heartbeats: a silent minute means the stream is gone.
STREAM_READ_TIMEOUT_S = 60.0
TRANSFER_TIMEOUT_S = 120.0
API_KEY_HEADER = "x-api-key"  # as auth.proto's CreateApiKeyResponse says; the CLI needs only the public API


class CliError(Exception):
    """A failure to report to the user as it is; exit status 1."""


class ConnectionFailed(CliError):
    """The network failed (nothing listening, a dropped connection, a timeout)."""


class CannotReach(ConnectionFailed):
    def __init__(self, api: str):
        super().__init__(f"cannot reach Octavia at {api}: is the stack up? (make up)")
        self.api = api


class NotLoggedIn(CliError):
    def __init__(self, api: str, why: str = "not logged in"):
        super().__init__(f"{why} at {api}: run `octavia login` (or `octavia signup`)")


class ApiKeyRefused(CliError):
    def __init__(self, api: str, why: str):
        super().__init__(
            f"the API key in {API_KEY_ENV} was refused at {api} ({why}): set a valid key, or unset it to use your login"
        )


@dataclass
class ApiError(CliError):
    """An error answer of the API: the google.rpc.Status that Envoy renders as
    JSON (`code`, `message`, `details` with an ErrorInfo), or one of Envoy's
    own errors (`code`, `message`, `reason`). `hint` is what the user can do
    about it, when a command knows better than the generic advice."""

    message: str
    reason: str = ""
    http_status: int | None = None
    code: int | None = None  # the gRPC code when the body is a google.rpc.Status
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None  # from a RetryInfo detail or the `retry-after` header
    hint: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return format_error(self)

    @classmethod
    def from_status(cls, status: Mapping[str, Any], http_status: int | None = None) -> ApiError:
        """From a google.rpc.Status in JSON (an error body, or a job's `error`)."""
        reason, domain, metadata, violations, retry_after = str(status.get("reason") or ""), "", {}, [], None
        for detail in status.get("details") or ():
            if not isinstance(detail, Mapping):
                continue
            kind = str(detail.get("@type", "")).rsplit("/", 1)[-1]
            if kind == "google.rpc.ErrorInfo":
                reason = detail.get("reason") or reason
                domain = detail.get("domain", "")
                metadata = dict(detail.get("metadata") or {})
            elif kind == "google.rpc.BadRequest":
                for violation in detail.get("fieldViolations") or ():
                    violations.append((violation.get("field", ""), violation.get("description", "")))
            elif kind == "google.rpc.RetryInfo":
                retry_after = parse_duration(detail.get("retryDelay"))
        code = status.get("code")
        return cls(
            message=str(status.get("message") or ""),
            reason=reason,
            http_status=http_status,
            code=code if isinstance(code, int) and 0 <= code <= 16 else None,  # Envoy's own errors carry the HTTP code
            domain=domain,
            metadata=metadata,
            field_violations=violations,
            retry_after_s=retry_after,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """From an error response whose body has been read."""
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, Mapping) and ("message" in body or "details" in body):
            error = cls.from_status(body, http_status=response.status_code)
            if not error.message:
                error.message = f"HTTP {response.status_code} {response.reason_phrase}"
        else:
            text = response.text.strip() if response.content else ""
            message = f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text[:300]}" if text else "")
            error = cls(message=message, http_status=response.status_code)
        if error.retry_after_s is None:
            error.retry_after_s = _retry_after(response.headers.get("retry-after", ""))
        return error


def _retry_after(value: str) -> float | None:
    """A `retry-after` header: seconds, or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def format_error(error: ApiError) -> str:
    """The error as the CLI prints it: the message, the reason in brackets, and
    any field problems the message does not already name."""
    text = error.message or "unknown error"
    if error.reason:
        text += f" [{error.reason}]"
    for name, description in error.field_violations:
        if description and description not in error.message:
            text += f"\n  {name}: {description}"
    return text


class Client:
    """One API base URL, with the session stored for it (if any), or an API key."""

    def __init__(
        self,
        api: str,
        store: CredentialStore | None = None,
        *,
        user_agent: str = "octavia-cli",
        transport: httpx.BaseTransport | None = None,
        api_key: str = "",
    ):
        self.api = api.rstrip("/")
        self.store = store or CredentialStore()
        self.api_key = api_key
        self._session = self.store.get(self.api)
        self._headers = {"User-Agent": user_agent}
        self.http = httpx.Client(
            base_url=self.api,
            headers=self._headers,
            timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ session

    @property
    def session(self) -> Session | None:
        return self._session

    @property
    def signed_in(self) -> bool:
        """Whether calls carry a credential: the API key, else a stored session."""
        return bool(self.api_key) or self._session is not None

    def _credential(self) -> dict[str, str]:
        if self.api_key:
            return {API_KEY_HEADER: self.api_key}
        return {"Authorization": f"Bearer {self._access_token()}"}

    def save_session(self, tokens: Mapping[str, str], email: str) -> None:
        self._session = Session.from_tokens(tokens, email=email)
        self.store.put(self.api, self._session)

    def forget_session(self) -> bool:
        self._session = None
        return self.store.remove(self.api)

    def _access_token(self) -> str:
        if self._session is None:
            raise NotLoggedIn(self.api)
        if self._session.access_expired():
            self.refresh()
        return self._session.accessToken

    def refresh(self) -> None:
        """Trade the refresh token for new tokens and save them. Under the
        store's lock, and only if no other process has rotated them already."""
        if self._session is None:
            raise NotLoggedIn(self.api)
        with self.store.lock():
            stored = self.store.get(self.api)
            if stored is not None and stored.refreshToken != self._session.refreshToken:
                # Another process refreshed (or logged in) meanwhile: our refresh token is used up.
                self._session = stored
                if not stored.access_expired():
                    return
            used = self._session.refreshToken
            if self._session.refresh_expired():
                self.forget_session()
                raise NotLoggedIn(self.api, "your session has expired")
            try:
                reply = self.call("POST", "/v1/auth/refresh", {"refreshToken": used}, auth=False)
            except ApiError as exc:
                if exc.http_status in (400, 401, 403, 404):
                    self.forget_session()
                    raise NotLoggedIn(self.api, f"your session has ended ({exc.message})") from None
                raise
            self.save_session(reply["tokens"], self._session.email)

    # ------------------------------------------------------------------ calls

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> dict:
        """One JSON call; returns the decoded body or raises ApiError. `auth=False`
        sends no user credential (public calls, or `headers` carrying another one)."""
        with self._send(method, path, body, params=params, auth=auth, stream=False, extra_headers=headers) as response:
            return response.json() if response.content else {}

    @contextmanager
    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        params: Mapping[str, Any] | None,
        auth: bool,
        stream: bool,
        timeout: httpx.Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = {}  # every POST rule of the API takes a body
        for attempt in (1, 2):
            headers = {**(extra_headers or {}), **(self._credential() if auth else {})}
            request = self.http.build_request(
                method, path, json=body, params=params, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
            try:
                response = self.http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise CannotReach(self.api) from None
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"the connection to {self.api} failed: {_why(exc)}") from None
            try:
                if response.status_code >= 400:
                    response.read()
                    error = ApiError.from_response(response)
                    if response.status_code == 401 and auth and self.api_key:
                        raise ApiKeyRefused(self.api, error.message)
                    if response.status_code == 401 and auth and attempt == 1 and error.reason == "TOKEN_EXPIRED":
                        self.refresh()
                        continue
                    if (
                        response.status_code == 401
                        and auth
                        and error.reason in ("SESSION_ENDED", "INVALID_TOKEN", "USER_DELETED")
                    ):
                        self.forget_session()
                        raise NotLoggedIn(self.api, f"your session has ended ({error.message})")
                    raise error
                yield response
                return
            finally:
                response.close()

    def watch(self, name: str) -> Iterator[dict]:
        """The events of WatchJob, as each arrives: the `event` of every
        WatchJobResponse. Ends when the server ends the stream."""
        timeout = httpx.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        with self._send("GET", f"/v1/{name}:watch", None, params=None, auth=True, stream=True, timeout=timeout) as response:
            parser = SSEParser()
            chunks = response.iter_bytes()
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except httpx.TransportError as exc:
                    raise ConnectionFailed(f"the job stream broke: {_why(exc)}") from None
                for event in parser.feed(chunk):
                    yield _decode_event(event.data)
            for event in parser.close():
                yield _decode_event(event.data)

    # ------------------------------------------------------------------ presigned transfers

    def absolute(self, url: str) -> str:
        """A signed URL as given, or joined to the API URL if it is relative."""
        return url if urlparse(url).scheme else urljoin(self.api + "/", url.lstrip("/"))

    def put_file(self, url: str, headers: Mapping[str, str], path: Path, progress: Callable[[int], None] | None = None) -> None:
        """PUT the file to a presigned URL with exactly the headers it was signed
        with, streamed from disk in CHUNK-sized reads."""
        size = path.stat().st_size
        send = dict(headers)
        if not any(key.lower() == "content-length" for key in send):
            send["Content-Length"] = str(size)  # a known length, never chunked: storage needs it

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as source:
                while block := source.read(CHUNK):
                    yield block
                    if progress:
                        progress(len(block))

        with httpx.Client(timeout=httpx.Timeout(TRANSFER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), headers=self._headers) as plain:
            try:
                response = plain.put(self.absolute(url), content=chunks(), headers=send)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise CliError(f"cannot reach the upload URL's host ({urlparse(self.absolute(url)).netloc})") from None
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"the upload failed: {_why(exc)}") from None
            if response.status_code >= 300:
                raise ApiError.from_response(response)

    def download(self, url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
        """GET a presigned URL into `dest`, through a temporary file beside it.
        `progress(bytes_done_now, total_or_None)` is called per chunk."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with httpx.Client(timeout=httpx.Timeout(TRANSFER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), headers=self._headers) as plain:
            try:
                with plain.stream("GET", self.absolute(url)) as response:
                    if response.status_code >= 300:
                        response.read()
                        raise ApiError.from_response(response)
                    total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
                    with tmp.open("wb") as out:
                        for block in response.iter_bytes(CHUNK):
                            out.write(block)
                            if progress:
                                progress(len(block), total)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise CliError(f"cannot reach the download URL's host ({urlparse(self.absolute(url)).netloc})") from None
            except httpx.TransportError as exc:
                tmp.unlink(missing_ok=True)
                raise ConnectionFailed(f"the download of {dest.name} failed: {_why(exc)}") from None
        os.replace(tmp, dest)
        return dest


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _decode_event(data: str) -> dict:
    try:
        message = json.loads(data)
    except ValueError:
        raise CliError(f"the job stream sent something that is not JSON: {data[:200]!r}") from None
    if not isinstance(message, dict):
        raise CliError(f"unexpected message in the job stream: {data[:200]!r}")
    # Envoy may also send an error Status in-band when the stream fails mid-way.
    if "event" not in message and ("message" in message and "code" in message):
        raise ApiError.from_status(message)
    return message.get("event") or {}
