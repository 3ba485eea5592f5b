"""The BillingService servicer: thin; it reads the ledger through the store."""

from __future__ import annotations

from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.auth import current_user_id
from octavia_runtime.pending import pending
from octavia_runtime.resources import timestamp

from .store import BillingStore

_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"]
_LEDGER = "the credits ledger (prices, holds, transactions)"
_PAYMENTS = "payments (checkout sessions and webhooks)"


@pending(
    _SERVICE,
    {
        "ListTransactions": _LEDGER,
        "ListPrices": _LEDGER,
        "GetQuote": _LEDGER,
        "ReserveCredits": _LEDGER,
        "CaptureHold": _LEDGER,
        "ReleaseHold": _LEDGER,
        "GetHold": _LEDGER,
        "GrantCredits": _LEDGER,
        "ListCreditPacks": _PAYMENTS,
        "CreateCheckout": _PAYMENTS,
        "GetCheckout": _PAYMENTS,
        "HandlePaymentWebhook": _PAYMENTS,
    },
)
class BillingApi(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, store: BillingStore):
        self.store = store

    async def GetBalance(self, request, context):
        user_id = current_user_id()
        row = await self.store.balance(user_id)
        balance = billing_pb2.Balance(user=f"users/{user_id}", available_credits=row.available, held_credits=row.held)
        if row.updated_at:
            balance.update_time.CopyFrom(timestamp(row.updated_at))
        return billing_pb2.GetBalanceResponse(balance=balance)
