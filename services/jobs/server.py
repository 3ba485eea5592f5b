"""Wires the jobs service into the shared runtime."""

from __future__ import annotations

from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import JobApi
from .store import JobStore


async def setup(rt: Runtime) -> None:
    rt.serve(jobs_pb2_grpc.add_JobServiceServicer_to_server, JobApi(JobStore(rt.db)))


SERVICE = Service(
    name="jobs",
    apis=(jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,),
    setup=setup,
    nats=True,
    consumers=(bus.ORCHESTRATOR,),
)
