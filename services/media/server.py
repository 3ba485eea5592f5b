"""Wires the media service into the shared runtime."""

from __future__ import annotations

from octavia.media.v1 import media_pb2, media_pb2_grpc

from octavia_runtime import bus
from octavia_runtime.server import Runtime, Service

from .api import MediaApi
from .store import MediaStore


async def setup(rt: Runtime) -> None:
    rt.serve(media_pb2_grpc.add_MediaServiceServicer_to_server, MediaApi(MediaStore(rt.db)))


SERVICE = Service(
    name="media",
    apis=(media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name,),
    setup=setup,
    nats=True,
    consumers=(bus.stage_worker("media"),),
)
