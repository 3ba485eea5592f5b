"""Wires the billing service into the shared runtime."""

from __future__ import annotations

from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.server import Runtime, Service

from .api import BillingApi
from .checkouts import Checkouts, allowed_origins
from .ledger import Ledger
from .payments import PolarPayments
from .pricing import Pricing
from .store import BillingStore


async def setup(rt: Runtime) -> None:
    config = rt.config
    store = BillingStore(rt.db)
    pricing = Pricing(config.prices, config.billing_unit_s)
    ledger = Ledger(store, pricing, config.welcome_credits)
    provider = PolarPayments(config.polar_api_url, config.polar_token, config.polar_webhook_secret)
    origins = allowed_origins(config.cors_origins, config.public_url)
    checkouts = Checkouts(store, ledger, provider, config.credit_packs, origins)
    rt.serve(billing_pb2_grpc.add_BillingServiceServicer_to_server, BillingApi(ledger, pricing, checkouts, provider))


SERVICE = Service(
    name="billing",
    apis=(billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,),
    setup=setup,
)
