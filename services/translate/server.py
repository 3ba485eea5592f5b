"""Wires the translate service into the shared runtime."""

from __future__ import annotations

import asyncio

from octavia.jobs.v1 import jobs_pb2
from octavia.translate.v1 import translate_pb2, translate_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import TranslateApi
from .engines import shared_translators
from .stages import TranslateStage


async def setup(rt: Runtime) -> None:
    translators = shared_translators(rt.config)
    rt.serve(translate_pb2_grpc.add_TranslateServiceServicer_to_server, TranslateApi(translators))
    rt.run_stages({jobs_pb2.STAGE_TRANSLATE: TranslateStage(translators, rt.remote_blobs())})
    # Find the engines and their pairs now (Apertium answers through a subprocess);
    # each model loads on its first translation and stays.
    rt.background(asyncio.to_thread(translators.pairs), name="discover-engines")


SERVICE = Service(
    name="translate",
    apis=(translate_pb2.DESCRIPTOR.services_by_name["TranslateService"].full_name,),
    setup=setup,
    postgres=False,  # holds no data: models live in the process, work arrives over JetStream
    nats=True,
    consumers=bus.stage_workers("translate"),
)
