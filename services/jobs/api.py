"""The JobService servicer: thin; it validates, reads the store and shapes replies."""

from __future__ import annotations

from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from octavia_runtime.auth import current_user_id
from octavia_runtime.errors import not_found
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.pending import pending
from octavia_runtime.resources import parse_name, timestamp

from .store import JobRow, JobStore

_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
_PIPELINE = "jobs and their stage pipeline (upload, transcribe, translate, subtitles)"


def job_message(row: JobRow) -> jobs_pb2.Job:
    job = jobs_pb2.Job.FromString(row.spec)
    job.name = f"jobs/{row.id}"
    job.owner = f"users/{row.owner_id}"
    job.state = row.state
    job.create_time.CopyFrom(timestamp(row.created_at))
    job.update_time.CopyFrom(timestamp(row.updated_at))
    return job


@pending(
    _SERVICE,
    {"CreateJob": _PIPELINE, "CancelJob": _PIPELINE, "DeleteJob": _PIPELINE, "WatchJob": "live job progress (WatchJob)"},
)
class JobApi(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, store: JobStore):
        self.store = store

    async def GetJob(self, request, context):
        job_id = parse_name(request.name, "jobs", field="name")
        row = await self.store.get(current_user_id(), job_id)
        if row is None:  # another user's job is as absent as a job that never existed
            raise not_found("job", request.name)
        return jobs_pb2.GetJobResponse(job=job_message(row))

    async def ListJobs(self, request, context):
        limit, after = page_size(request.page_size), keyset_after(request.page_token)
        rows = await self.store.list(current_user_id(), limit + 1, state=request.state, kind=request.kind, after=after)
        page, next_token = keyset_page(rows, limit)
        return jobs_pb2.ListJobsResponse(jobs=[job_message(row) for row in page], next_page_token=next_token)
