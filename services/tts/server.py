"""Wires the tts service into the shared runtime."""

from __future__ import annotations

from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import TtsApi
from .engines import shared_engines


async def setup(rt: Runtime) -> None:
    rt.serve(tts_pb2_grpc.add_TtsServiceServicer_to_server, TtsApi(shared_engines(rt.config)))


SERVICE = Service(
    name="tts",
    apis=(tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name,),
    setup=setup,
    postgres=False,  # holds no data: models live in the process, work arrives over JetStream
    nats=True,
    consumers=bus.stage_workers("tts"),
)
