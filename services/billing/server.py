"""Wires the billing service into the shared runtime."""

from __future__ import annotations

from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.server import Runtime, Service

from .api import BillingApi
from .store import BillingStore


async def setup(rt: Runtime) -> None:
    rt.serve(billing_pb2_grpc.add_BillingServiceServicer_to_server, BillingApi(BillingStore(rt.db)))


SERVICE = Service(
    name="billing",
    apis=(billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,),
    setup=setup,
)
