"""API errors as google.rpc.Status with ErrorInfo (and BadRequest for fields).

Handlers raise `ApiError`; the shared interceptor turns it into a gRPC status
whose details Envoy renders into the JSON body, so a browser sees the same
reason as a gRPC client. The domain (`<service>.octavia`) is filled in by the
interceptor from the service that raised it.

Everything an error quotes is clipped (`MAX_MESSAGE_CHARS` and friends): a
client's 20 KB value quoted back whole would make the status larger than
gRPC's metadata limit, and the caller would get a transport error instead of
the reason.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import cast

import asyncpg
import grpc
import nats.errors
import nats.js.errors
import redis.exceptions
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 300  # each field description and metadata value
MAX_DETAILS = 20  # field violations, and metadata entries


class ApiError(Exception):
    """An error a client should see: a status code, a stable reason and a message."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after_s: int | None = None,
    ):
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.fields = _clipped(fields)
        self.metadata = _clipped(metadata)
        self.retry_after_s = retry_after_s  # when set: a RetryInfo detail and a `retry-after` header

    def to_status(self, domain: str) -> grpc.Status:
        details = [_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=domain, metadata=self.metadata))]
        if self.fields:
            violations = [
                error_details_pb2.BadRequest.FieldViolation(field=name, description=text) for name, text in self.fields.items()
            ]
            details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
        if self.retry_after_s is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromSeconds(self.retry_after_s)
            details.append(_pack(retry))
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.message, details=details))


def clip(text: str, limit: int) -> str:
    """`text`, cut to at most `limit` characters (marked with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# An absolute path of two parts or more, not inside a URL or a resource name.
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\":,;()\[\]<>]+/)+[^\s'\":,;()\[\]<>]*")


def without_paths(text: str) -> str:
    """`text` with this machine's file paths cut to their file names: what users read names no server folder."""
    return _PATH.sub(lambda found: os.path.basename(found.group().rstrip("/")) or "…", text)


def _clipped(entries: Mapping[str, str] | None) -> dict[str, str]:
    items = list((entries or {}).items())[:MAX_DETAILS]
    return {clip(key, MAX_DETAIL_CHARS): clip(value, MAX_DETAIL_CHARS) for key, value in items}


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def invalid_argument(fields: Mapping[str, str], reason: str = "INVALID_ARGUMENT") -> ApiError:
    """A request with bad fields; the message lists every bad field."""
    message = "; ".join(f"{name}: {text}" for name, text in fields.items())
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, fields=fields)


def not_found(what: str, name: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{what.upper()}_NOT_FOUND", f"{name} not found", metadata={"name": name})


def request_id_reused(what: str, first: str = "") -> ApiError:
    """A request_id (a client's idempotency key) sent again with a different `what` (job, checkout, ...).

    `first` names what the key made the first time (e.g. `jobs/{id}`), for the client to fetch.
    """
    return ApiError(
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
        f"request_id was already used for a different {what}",
        metadata={"first": first} if first else None,
    )


def unauthenticated(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def permission_denied(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, reason, message)


def unimplemented(feature: str) -> ApiError:
    """An RPC of the API whose feature has not been built yet. Says which."""
    return ApiError(
        grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED_YET", f"{feature} is not implemented yet", metadata={"feature": feature}
    )


def _as_call(error: grpc.aio.AioRpcError | grpc.RpcError) -> grpc.Call:
    # A failed sync call raises an RpcError that is also its grpc.Call, and an AioRpcError has the
    # same code(), details() and trailing_metadata(): all that rpc_status.from_call reads.
    return cast(grpc.Call, error)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if it carries one (for clients and tests)."""
    status = rpc_status.from_call(_as_call(error))
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def field_violations(error: grpc.RpcError) -> Sequence[error_details_pb2.BadRequest.FieldViolation]:
    status = rpc_status.from_call(_as_call(error))
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return list(bad.field_violations)
    return []


# A server this process depends on is away for a moment (restarting, failing over, overloaded):
# the caller may retry, so a call that fails on one is UNAVAILABLE, never INTERNAL.
_DEPENDENCY_DOWN: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, broken pipe: any socket
    socket.gaierror,  # a name that does not resolve while its server restarts (Kubernetes)
    TimeoutError,  # asyncio's too
    redis.exceptions.ConnectionError,  # Valkey (BusyLoadingError while it loads its data)
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,  # the connection broke, or could not be made
    asyncpg.CannotConnectNowError,  # starting up
    asyncpg.AdminShutdownError,  # shutting down
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed": a pooled connection Postgres dropped
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,  # JetStream not answering yet (a restarted server electing its leaders)
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)


def dependency_down(exc: BaseException) -> bool:
    """Whether `exc` means that Postgres, Valkey, NATS or a network peer is briefly unreachable."""
    return isinstance(exc, _DEPENDENCY_DOWN)
