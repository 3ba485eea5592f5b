"""The BillingService servicer: thin; it reads the request, calls the ledger or the checkouts, and builds the reply."""

from __future__ import annotations

import time
from uuid import UUID

from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.auth import current_user_id
from octavia_runtime.errors import invalid_argument
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.resources import parse_name

from .checkouts import Checkouts
from .ledger import Ledger
from .payments import PaymentsProvider
from .pricing import Pricing
from .views import balance_message, checkout_message, credit_pack_message, hold_message, transaction_message

B = billing_pb2


def _caller() -> UUID:
    return UUID(current_user_id())


class BillingApi(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, ledger: Ledger, pricing: Pricing, checkouts: Checkouts, provider: PaymentsProvider):
        self.ledger = ledger
        self.pricing = pricing
        self.checkouts = checkouts
        self.provider = provider

    # -- the caller's credits ------------------------------------------------------------------------

    async def GetBalance(self, request, context):
        return B.GetBalanceResponse(balance=balance_message(await self.ledger.balance(_caller())))

    async def ListTransactions(self, request, context):
        scope = f"transactions?reason={request.reason}"
        limit, after = page_size(request.page_size), keyset_after(request.page_token, scope)
        movements = await self.ledger.movements(_caller(), limit + 1, request.reason, after)
        page, next_token = keyset_page(movements, limit, scope)
        return B.ListTransactionsResponse(transactions=[transaction_message(m) for m in page], next_page_token=next_token)

    async def ListPrices(self, request, context):
        return B.ListPricesResponse(prices=self.pricing.price_list())

    async def GetQuote(self, request, context):
        quote = self.pricing.quote(request.usage)
        balance = await self.ledger.balance(_caller())
        return B.GetQuoteResponse(
            quote=B.Quote(
                usage=quote.usage(),
                price=self.pricing.price(quote.kind),
                billable_duration=duration_pb2.Duration(seconds=quote.billable_s),
                credits=quote.credits,
                available_credits=balance.available,
                sufficient=balance.available >= quote.credits,
            )
        )

    # -- buying credits ------------------------------------------------------------------------------

    async def ListCreditPacks(self, request, context):
        return B.ListCreditPacksResponse(credit_packs=[credit_pack_message(p) for p in self.checkouts.packs.values()])

    async def CreateCheckout(self, request, context):
        checkout = await self.checkouts.create(
            _caller(), request.credit_pack, request.success_url, request.cancel_url, request.request_id
        )
        return B.CreateCheckoutResponse(checkout=checkout_message(checkout))

    async def GetCheckout(self, request, context):
        checkout = await self.checkouts.get(_caller(), parse_name(request.name, "checkouts"))
        return B.GetCheckoutResponse(checkout=checkout_message(checkout))

    async def HandlePaymentWebhook(self, request, context):
        # Through Envoy the webhook's HTTP headers arrive as metadata, its body byte for byte in body.data.
        headers = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        event = self.provider.read_webhook(headers, request.body.data, time.time())
        await self.checkouts.apply(event)
        return B.HandlePaymentWebhookResponse()

    # -- internal: holds and grants (service credential only) ----------------------------------------

    async def ReserveCredits(self, request, context):
        user_id = parse_name(request.user, "users", field="user")
        hold, balance = await self.ledger.reserve(user_id, request.reference, request.usage, request.description)
        return B.ReserveCreditsResponse(hold=hold_message(hold), balance=balance_message(balance))

    async def CaptureHold(self, request, context):
        hold = await self.ledger.capture(parse_name(request.name, "holds"), request.credits)
        return B.CaptureHoldResponse(hold=hold_message(hold))

    async def ReleaseHold(self, request, context):
        return B.ReleaseHoldResponse(hold=hold_message(await self.ledger.release(parse_name(request.name, "holds"))))

    async def GetHold(self, request, context):
        which = request.WhichOneof("hold")
        if which == "name":
            hold = await self.ledger.hold(hold_id=parse_name(request.name, "holds"))
        elif which == "reference" and request.reference:
            hold = await self.ledger.hold(reference=request.reference)
        else:
            raise invalid_argument({"name": "give the hold's name or its reference"})
        return B.GetHoldResponse(hold=hold_message(hold))

    async def GrantCredits(self, request, context):
        movement, balance = await self.ledger.grant(
            parse_name(request.user, "users", field="user"),
            request.credits,
            request.description,
            request.reference,
            request.request_id,
        )
        return B.GrantCreditsResponse(transaction=transaction_message(movement), balance=balance_message(balance))
