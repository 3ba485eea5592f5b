"""The grpc.aio bootstrap shared by all seven services.

A service is a `Service` (what it needs) plus a `setup(runtime)` function that
builds its servicers and hands them over with `runtime.serve(...)`. `run(service)` does the rest, the same way for everyone:

1. load and validate the configuration (a bad variable stops the process
   with its name);
2. connect to what the service uses (Postgres after migrating its schema,
   Valkey, NATS with the JetStream streams and consumers declared), retrying
   until each answers, since the stack starts everything at once;
3. serve gRPC with health (grpc.health.v1), reflection and the shared
   interceptor, and Prometheus metrics on the service's metrics port;
4. report SERVING only while every dependency answers (checked every few
   seconds), NOT_SERVING otherwise; the health name "liveness" stays SERVING
   while the process runs;
5. on SIGTERM or SIGINT: report NOT_SERVING, finish in-flight calls within the
   grace period, stop background tasks, close connections.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import pkgutil
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import nats
import redis.asyncio as redis
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import bus, cache, db, logging, metrics, pagination, stages
from .auth import SERVICE_TOKEN_HEADER, Authenticator, RemoteAuthenticator, ServiceCredentials
from .blobs import RemoteBlobs
from .config import ROOT, Config, ConfigError, load
from .interceptor import REQUEST_ID_HEADER, ServerInterceptor

log = structlog.get_logger("server")
HEALTH_INTERVAL_S = 2.0
LIVENESS = "liveness"
DEPENDENCY_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Request headers a call may carry: more than Envoy lets through (max_request_headers_kb, 60 KiB),
# which forwards a REST request's path in x-envoy-original-path; gRPC's own default (8 KiB, refused
# at random up to 16 KiB) would answer a long path with a RESOURCE_EXHAUSTED that has no reason.
MAX_METADATA_BYTES = 96 * 1024


@dataclass(frozen=True)
class Service:
    """What a service is and what it needs from the runtime."""

    name: str
    apis: tuple[str, ...]  # fully-qualified gRPC services it serves, e.g. "octavia.jobs.v1.JobService"
    setup: Callable[[Runtime], Awaitable[None]]
    postgres: bool = True
    redis: bool = False
    nats: bool = False
    consumers: tuple[bus.Consumer, ...] = ()
    # Reflection lists these services too (the edge's reflection host lists the whole API).
    reflect_catalogue: bool = False


@dataclass
class Runtime:
    """What a service's setup receives: its config, connections and server."""

    service: Service
    config: Config
    credentials: ServiceCredentials
    # Checks user credentials; None means "ask the auth service" (only auth sets its own).
    authenticator: Authenticator | None = None
    db: asyncpg.Pool | None = None
    redis: redis.Redis | None = None
    nc: nats.NATS | None = None
    js: nats.js.JetStreamContext | None = None
    _servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = field(default_factory=list)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def serve(self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> None:
        """Serve `servicer` (e.g. `serve(jobs_pb2_grpc.add_JobServiceServicer_to_server, JobApi(...))`)."""
        self._servicers.append((add_to_server, servicer))

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to another service that carries this service's identity (one per peer)."""
        if service not in self._channels:
            endpoint = self.config.endpoint(service)
            # dns:/// with round_robin: calls spread over every address the name has
            # (every pod behind a headless Kubernetes Service), not one pinned connection.
            self._channels[service] = grpc.aio.insecure_channel(
                f"dns:///{endpoint.target}",
                interceptors=[_ServiceIdentity(self.credentials)],
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.lb_policy_name", "round_robin"),
                    # A peer that restarts is back within seconds: retry it at least every 2 s
                    # (gRPC's default backoff grows to 2 minutes and strands waiting calls).
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
        return self._channels[service]

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run a loop for the life of the service; it is cancelled at shutdown."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    def run_stages(self, handlers: dict[int, stages.Handler], *, concurrency: int = 1) -> None:
        """Work on the pipeline tasks this service owns (its consumer in `service.consumers`)."""
        consumers = bus.stage_workers(self.service.name)
        worker = stages.StageWorker(
            self.nc, self.js, consumers, handlers, domain=f"{self.service.name}.octavia", concurrency=concurrency
        )
        self.background(worker.run(), name="stage-worker")

    def remote_blobs(self) -> RemoteBlobs:
        """Job blobs through the media service's signed URLs (for workers outside media)."""
        return RemoteBlobs(self.channel("media"))


def run(service: Service) -> None:
    """Entry point of `python -m services.<name>`."""
    try:
        config = load()
    except ConfigError as exc:
        print(f"octavia-{service.name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.configure(service.name, config.log_level)
    try:
        asyncio.run(_serve(service, config))
    except KeyboardInterrupt:
        pass
    except db.MigrationError as exc:
        log.error("server.migration_failed", error=str(exc))
        print(f"octavia-{service.name}: {exc}", file=sys.stderr)
        sys.exit(3)


async def _serve(service: Service, config: Config) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    rt = Runtime(service, config, ServiceCredentials(service.name, config.service_secret))
    pagination.use_secret(config.service_secret)  # every replica of every service signs page tokens alike
    await _connect(rt, stopping)
    if stopping.is_set():
        await _close(rt)
        return

    await service.setup(rt)
    if rt.authenticator is None:
        rt.authenticator = RemoteAuthenticator(rt.channel("auth"))
    server = grpc.aio.server(
        interceptors=[ServerInterceptor(service.name, rt.credentials, rt.authenticator)],
        options=[
            ("grpc.so_reuseport", 0),  # a second process on the same port must fail, not share it
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    for add_to_server, servicer in rt._servicers:
        add_to_server(servicer, server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflected = set(service.apis) | (set(public_api()) if service.reflect_catalogue else set())
    reflection.enable_server_reflection([*sorted(reflected), HEALTH_SERVICE, reflection.SERVICE_NAME], server)
    endpoint = config.endpoint(service.name)
    server.add_insecure_port(f"0.0.0.0:{endpoint.port}")
    await server.start()
    # Everything built so far lives as long as the process: keep the collector off it.
    gc.freeze()
    metrics.serve(endpoint.metrics_port)
    log.info("server.started", port=endpoint.port, metrics_port=endpoint.metrics_port, apis=list(service.apis))

    # "liveness" answers SERVING while the process runs, whatever its dependencies do
    # (the Kubernetes liveness probe asks it; readiness asks the overall status "").
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    watcher = asyncio.create_task(_watch_health(rt, health_servicer), name="health")
    await stopping.wait()

    log.info("server.stopping", grace_s=config.grace_period_s)
    watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.grace_period_s)
    await _close(rt)
    log.info("server.stopped")


async def _connect(rt: Runtime, stopping: asyncio.Event) -> None:
    """Open every connection the service uses, waiting for each to answer."""
    service, config = rt.service, rt.config
    if service.postgres:
        migrations = ROOT / "services" / service.name / "migrations"
        rt.db = await _retry("postgres", stopping, lambda: db.connect(config.database_url, service.name, migrations))
    if service.redis:
        rt.redis = cache.connect(config.redis_url)
        await _retry("valkey", stopping, rt.redis.ping)
    if service.nats:
        rt.nc = await _retry("nats", stopping, lambda: bus.connect(config.nats_url, service.name))
        if rt.nc is not None:
            js = rt.js = rt.nc.jetstream()
            await _retry("jetstream", stopping, lambda: bus.declare(js, service.consumers))


async def _retry(what: str, stopping: asyncio.Event, attempt: Callable[[], Awaitable[Any]]) -> Any:
    delay = 0.2
    while not stopping.is_set():
        try:
            return await asyncio.wait_for(attempt(), timeout=10)
        except db.MigrationError:
            raise  # a broken migration stays broken: stop with its message
        except Exception as exc:  # noqa: BLE001 - any other failure means "not up yet"
            log.warning("dependency.waiting", dependency=what, error=str(exc) or type(exc).__name__, retry_in_s=delay)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, 2.0)
    return None


async def _dependencies_answer(rt: Runtime) -> list[str]:
    """The names of the dependencies that do not answer right now."""
    checks: dict[str, Awaitable[Any]] = {}
    if rt.db is not None:
        checks["postgres"] = rt.db.fetchval("SELECT 1")
    if rt.redis is not None:
        checks["valkey"] = rt.redis.ping()
    if isinstance(rt.authenticator, RemoteAuthenticator):
        stub = health_pb2_grpc.HealthStub(rt.channel("auth"))
        checks["auth"] = _expect_serving(stub.Check(health_pb2.HealthCheckRequest(), timeout=DEPENDENCY_TIMEOUT_S))
    results = await asyncio.gather(
        *(asyncio.wait_for(check, DEPENDENCY_TIMEOUT_S) for check in checks.values()), return_exceptions=True
    )
    down = [name for name, result in zip(checks, results, strict=True) if isinstance(result, BaseException)]
    if rt.nc is not None and not rt.nc.is_connected:
        down.append("nats")
    return down


async def _expect_serving(call: Awaitable[health_pb2.HealthCheckResponse]) -> None:
    reply = await call
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError("not serving")


async def _watch_health(rt: Runtime, servicer: health.aio.HealthServicer) -> None:
    serving: bool | None = None
    while True:
        down = await _dependencies_answer(rt)
        if (not down) != serving:
            serving = not down
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *rt.service.apis):
                await servicer.set(name, status)
            log.info("health.changed", serving=serving, down=down)
        await asyncio.sleep(HEALTH_INTERVAL_S)


async def _close(rt: Runtime) -> None:
    for task in rt._tasks:
        task.cancel()
    await asyncio.gather(*rt._tasks, return_exceptions=True)
    for channel in rt._channels.values():
        await channel.close()
    if rt.nc is not None:
        # drain() can hang after nak/term on pull subscriptions; close() is enough at exit.
        await rt.nc.close()
    if rt.redis is not None:
        await rt.redis.aclose()
    if rt.db is not None:
        await rt.db.close()


HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def public_api() -> list[str]:
    """Every Octavia gRPC service in the generated package (imports all of them)."""
    import octavia

    names = []
    for module in pkgutil.walk_packages(octavia.__path__, "octavia."):
        if module.name.endswith("_pb2"):
            for svc in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
                names.append(svc.full_name)
    return sorted(names)


class _ServiceIdentity(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds this service's token, and the request id of the call being handled, to outgoing calls."""

    def __init__(self, credentials: ServiceCredentials):
        self.credentials = credentials

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(SERVICE_TOKEN_HEADER, self.credentials.token())
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id and REQUEST_ID_HEADER not in metadata:
            metadata.add(REQUEST_ID_HEADER, request_id)
        # Wait for a peer that is (re)starting instead of failing at once: every internal
        # call has a timeout, so this bounds the wait, and a restarted service is reached
        # as soon as it listens rather than after the channel's reconnect backoff.
        wait = True if details.wait_for_ready is None else details.wait_for_ready
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, wait)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)
