"""Wires the jobs service into the shared runtime: the API and the orchestrator's loops."""

from __future__ import annotations

from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.ratelimit import Limiter
from octavia_runtime.server import Runtime, Service

from .api import Admission, Catalogue, JobApi
from .credits import Credits
from .runner import Runner
from .store import JobStore


async def setup(rt: Runtime) -> None:
    assert rt.redis is not None, "SERVICE asks for Valkey, so the runtime connected it"
    store = JobStore(rt.db)
    credits = Credits(rt.channel("billing"))
    runner = Runner(store, rt.js, rt.nc, rt.channel("media"), credits)
    catalogue = Catalogue(rt.channel("transcribe"), rt.channel("translate"), rt.channel("tts"))
    admission = Admission(
        Limiter(rt.redis, "create_job_user", rt.config.rate_limits["create_job_user"], "jobs created"),
        rt.config.require_verified_email,
    )
    api = JobApi(store, runner, rt.channel("media"), catalogue, rt.nc, credits, admission)
    rt.serve(jobs_pb2_grpc.add_JobServiceServicer_to_server, api)
    rt.background(runner.relay(), "outbox-relay")
    rt.background(runner.consume_events(), "stage-events")
    rt.background(runner.sweep(), "deadline-sweep")
    rt.background(runner.watch_exhausted(), "exhausted-tasks")
    rt.background(runner.settle(), "settlements")


SERVICE = Service(
    name="jobs",
    apis=(jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,),
    setup=setup,
    nats=True,
    redis=True,
    consumers=(bus.ORCHESTRATOR,),
)
