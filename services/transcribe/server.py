"""Wires the transcribe service into the shared runtime."""

from __future__ import annotations

import asyncio

import structlog
from octavia.jobs.v1 import jobs_pb2
from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import TranscribeApi
from .engine import Transcriber, TranscriptionError, shared_transcriber
from .stages import TranscribeStage

log = structlog.get_logger("transcribe")


async def setup(rt: Runtime) -> None:
    transcriber = shared_transcriber(rt.config)
    rt.serve(transcribe_pb2_grpc.add_TranscribeServiceServicer_to_server, TranscribeApi(transcriber))
    # One task at a time: a transcription already uses every core (CTranslate2 threads).
    rt.run_stages({jobs_pb2.STAGE_TRANSCRIBE: TranscribeStage(transcriber, rt.remote_blobs())})
    rt.background(_warm_up(transcriber), name="warm-up")


async def _warm_up(transcriber: Transcriber) -> None:
    """Load the default model (joining its files the first time) while the service already answers."""
    try:
        await asyncio.to_thread(transcriber.load)
    except TranscriptionError as exc:
        # Not fatal: ListModels still answers, and each transcription reports the same reason.
        log.error("transcribe.warm_up_failed", model=transcriber.default_model, error=str(exc))


SERVICE = Service(
    name="transcribe",
    apis=(transcribe_pb2.DESCRIPTOR.services_by_name["TranscribeService"].full_name,),
    setup=setup,
    postgres=False,  # holds no data: models live in the process, work arrives over JetStream
    nats=True,
    consumers=bus.stage_workers("transcribe"),
)
