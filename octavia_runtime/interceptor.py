"""The server interceptor every service runs: one wrapper around each call.

In order, for each RPC: take or make the request id; authenticate the caller
against the method's access rule; check the request against the API's rules
(validation.py: it decodes, and every field keeps its limits); run the
handler; turn an ApiError, a dependency that is away (UNAVAILABLE) or a crash
(INTERNAL) into a google.rpc.Status with ErrorInfo; write one JSON log line
and the Prometheus samples. One wrapper rather than five keeps the per-call cost
to a single extra frame.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import structlog

from . import metrics, validation
from .auth import (
    ANONYMOUS,
    API_KEY_HEADER,
    PUBLIC,
    SERVICE,
    SERVICE_TOKEN_HEADER,
    Authenticator,
    Principal,
    ServiceCredentials,
    access_of,
    set_client,
    set_principal,
)
from .errors import ApiError, dependency_down, permission_denied, unauthenticated

log = structlog.get_logger("rpc")
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_AUTHENTICATE = "/octavia.auth.v1.AuthService/AuthenticateToken"


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str, credentials: ServiceCredentials, authenticator: Authenticator):
        self.service = service
        self.domain = f"{service}.octavia"
        self.credentials = credentials
        self.authenticator = authenticator
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        # Servicers are fixed once the server starts: wrap each method's handler once.
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        # A request that does not decode reaches the wrapper as validation.Malformed, so it is
        # answered INVALID_ARGUMENT with a reason rather than gRPC's bare UNKNOWN.
        deserializer = validation.tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client and bidi streams: none in the API (reflection's own stream passes as is)

    def _wrap_unary(self, behavior: Callable, method: str):
        async def wrapper(request, context: grpc.aio.ServicerContext):
            call = _Call(self, method, context)
            try:
                await call.begin()
                validation.check(request)
                return await behavior(request, context)
            except BaseException as exc:  # noqa: BLE001 - every outcome is logged and mapped
                await call.fail(exc)
            finally:
                call.end()

        return wrapper

    def _wrap_stream(self, behavior: Callable, method: str):
        async def wrapper(request, context: grpc.aio.ServicerContext) -> AsyncIterator:
            call = _Call(self, method, context)
            try:
                await call.begin()
                validation.check(request)
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:  # noqa: BLE001
                await call.fail(exc)
            finally:
                call.end()

        return wrapper

    async def authenticate(self, method: str, metadata: dict[str, str]) -> Principal:
        rule = access_of(method)
        if rule == PUBLIC:
            return ANONYMOUS
        service_token = metadata.get(SERVICE_TOKEN_HEADER)
        if service_token:
            return self.credentials.verify(service_token)
        if rule == SERVICE:
            if metadata.get("authorization") or metadata.get(API_KEY_HEADER):
                raise permission_denied("SERVICE_CREDENTIAL_REQUIRED", f"{method} is internal: only Octavia services may call it")
            raise unauthenticated("CREDENTIALS_MISSING", f"{method} needs a service credential")
        bearer = metadata.get("authorization", "")
        if bearer:
            scheme, _, token = bearer.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthenticated("MALFORMED_AUTHORIZATION", "the authorization header must be 'Bearer <access token>'")
            return await self.authenticator.authenticate(access_token=token.strip())
        api_key = metadata.get(API_KEY_HEADER)
        if api_key:
            return await self.authenticator.authenticate(api_key=api_key)
        raise unauthenticated("CREDENTIALS_MISSING", "sign in: send 'Authorization: Bearer <access token>' or an x-api-key")


# A service this call depends on did not answer: the caller may retry (not our bug: not INTERNAL).
_PEER_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class _Call:
    """The bookkeeping of one RPC: request id, principal, outcome, timing."""

    __slots__ = ("interceptor", "method", "context", "started", "code", "principal", "request_id")

    def __init__(self, interceptor: ServerInterceptor, method: str, context: grpc.aio.ServicerContext):
        self.interceptor = interceptor
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.principal = ANONYMOUS
        self.request_id = ""

    async def begin(self) -> None:
        metadata = {key: value for key, value in self.context.invocation_metadata() or () if isinstance(value, str)}
        given = metadata.get(REQUEST_ID_HEADER, "")
        # A client's own id is kept if it looks like one: it goes back in the trailers and into every log line.
        self.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=self.request_id, rpc=self.method)
        # In the trailers, not the headers: one write less per call. Through Envoy the
        # client sees x-request-id as a response header (always_set_request_id_in_response).
        self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        set_client(metadata.get("x-forwarded-for", ""), self.context)
        self.principal = await self.interceptor.authenticate(self.method, metadata)
        set_principal(self.principal)

    async def fail(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AbortError):  # the handler aborted with a status of its own
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if not isinstance(exc, Exception):  # cancelled by the client, or the process is exiting
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if (isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PEER_DOWN) or dependency_down(exc):
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc) or type(exc).__name__
            log.warning("rpc.dependency_unavailable", error=details, exception=type(exc).__name__)
            exc = ApiError(
                grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE", "a service this call needs is unavailable; try again"
            )
        if not isinstance(exc, ApiError):
            log.exception("rpc.crashed")
            exc = ApiError(grpc.StatusCode.INTERNAL, "INTERNAL", f"internal error; quote request id {self.request_id}")
        self.code = exc.code
        extra = (("retry-after", str(exc.retry_after_s)),) if exc.retry_after_s is not None else ()
        await self._abort(exc.to_status(self.interceptor.domain), extra)

    async def _abort(self, status: grpc.Status, extra: tuple[tuple[str, str], ...] = ()) -> None:
        trailers = (*status.trailing_metadata, *extra, (REQUEST_ID_HEADER, self.request_id))
        await self.context.abort(status.code, status.details, trailers)

    def end(self) -> None:
        elapsed = time.perf_counter() - self.started
        service = self.interceptor.service
        metrics.RPC_REQUESTS.labels(service, self.method, self.code.name).inc()
        metrics.RPC_LATENCY.labels(service, self.method).observe(elapsed)
        # Probes call health every few seconds, and every user call on every service checks its
        # credential with auth (logged by the calling service, same request id): debug only, if ok.
        quiet = self.method.startswith("/grpc.") or self.method == _AUTHENTICATE
        emit = log.debug if quiet and self.code == grpc.StatusCode.OK else log.info
        emit(
            "rpc",
            code=self.code.name,
            duration_ms=round(elapsed * 1000, 2),
            principal=self.principal.user_id or self.principal.service or self.principal.kind,
        )
        structlog.contextvars.unbind_contextvars("request_id", "rpc")
