"""Wires the tts service into the shared runtime."""

from __future__ import annotations

from octavia.jobs.v1 import jobs_pb2
from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import TtsApi
from .engines import shared_engines
from .stages import TtsStage


async def setup(rt: Runtime) -> None:
    engines = shared_engines(rt.config)
    rt.serve(tts_pb2_grpc.add_TtsServiceServicer_to_server, TtsApi(engines))
    # Two tasks at a time: one segment is fetched and stored while another is spoken
    # (each engine speaks one segment at a time; run more workers for more voices at once).
    rt.run_stages({jobs_pb2.STAGE_TTS: TtsStage(engines, rt.remote_blobs())}, concurrency=2)


SERVICE = Service(
    name="tts",
    apis=(tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name,),
    setup=setup,
    postgres=False,  # holds no data: models live in the process, work arrives over JetStream
    nats=True,
    consumers=bus.stage_workers("tts"),
)
