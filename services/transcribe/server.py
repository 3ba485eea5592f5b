"""Wires the transcribe service into the shared runtime."""

from __future__ import annotations

from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import TranscribeApi


async def setup(rt: Runtime) -> None:
    rt.serve(transcribe_pb2_grpc.add_TranscribeServiceServicer_to_server, TranscribeApi())


SERVICE = Service(
    name="transcribe",
    apis=(transcribe_pb2.DESCRIPTOR.services_by_name["TranscribeService"].full_name,),
    setup=setup,
    postgres=False,  # holds no data: models live in the process, work arrives over JetStream
    nats=True,
    consumers=(bus.stage_worker("transcribe"),),
)
