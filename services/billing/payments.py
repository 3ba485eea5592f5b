"""The payments provider behind checkouts: an interface, and its adapter for Polar (polar.sh).

Billing needs two things from a provider: a hosted checkout session for one
product (`create_checkout`), and its webhooks, verified and read as
provider-neutral events (`read_webhook`). Anything else Polar offers is not
used.

Polar, as used here:
- `POST {api}/v1/checkouts/` with `Authorization: Bearer <token>` and
  `{"products": [product id], "success_url", "return_url", "metadata",
  "external_customer_id"}` answers 201 with the session's `id`, `url`
  (the hosted payment page) and `expires_at`. The metadata carries
  Octavia's checkout and user ids; Polar copies it onto the order.
- Webhooks follow Standard Webhooks, with one quirk: endpoints whose secret
  was made before 2026-09-08 are signed with the UTF-8 bytes of the whole
  secret string as the HMAC key (Polar's SDKs do `base64(secret)` before
  handing it to the standardwebhooks library, which decodes it straight
  back), later ones with the key the `whsec_<base64>` secret encodes, as the
  specification says. Both keys derive from the one secret, so both are
  accepted; scripts/fake_polar.py signs the first way by default, as Polar
  does today.
- `order.paid` (data: the Order) confirms a payment: `id` is the order,
  `checkout_id` the session it paid. `order.refunded` carries the order's
  cumulative `refunded_amount` of its `total_amount`. Other types are not
  used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

import grpc
import httpx
import structlog

from octavia_runtime.config import CreditPack
from octavia_runtime.errors import ApiError, invalid_argument

from . import webhooks

log = structlog.get_logger("payments")
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckoutRequest:
    checkout_id: UUID  # Octavia's
    user_id: UUID
    pack: CreditPack
    success_url: str
    cancel_url: str


@dataclass(frozen=True)
class ProviderCheckout:
    id: str
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class OrderPaid:
    webhook_id: str
    type: str
    order_id: str
    checkout_id: str | None  # the provider's session the order paid; None for orders not from a checkout


@dataclass(frozen=True)
class OrderRefunded:
    webhook_id: str
    type: str
    order_id: str
    refunded_amount: int  # minor units, all refunds of the order so far
    total_amount: int


@dataclass(frozen=True)
class OtherEvent:
    """A verified event of a type billing does not use."""

    webhook_id: str
    type: str


PaymentEvent = OrderPaid | OrderRefunded | OtherEvent


class PaymentsProvider(Protocol):
    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        """A hosted checkout session; UNAVAILABLE (PAYMENTS_UNAVAILABLE) when the provider cannot be reached."""

    def read_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> PaymentEvent:
        """The event of a webhook whose signature checks out; UNAUTHENTICATED or INVALID_ARGUMENT otherwise."""


def payments_unavailable(detail: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE, "PAYMENTS_UNAVAILABLE", f"the payments provider cannot take a checkout now: {detail}"
    )


def polar_webhook_keys(secret: str) -> tuple[bytes, ...]:
    """The HMAC keys Polar may sign with for `secret`: its original one first, then the standard one."""
    standard = webhooks.standard_key(secret)
    return (secret.encode(),) if standard is None else (secret.encode(), standard)


class PolarPayments:
    def __init__(self, api_url: str, token: str, webhook_secret: str):
        self.api_url = api_url
        self._token = token
        self._keys = polar_webhook_keys(webhook_secret)

    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        body = {
            "products": [request.pack.product_id],
            "success_url": request.success_url,
            "return_url": request.cancel_url,
            "external_customer_id": str(request.user_id),
            "metadata": {"octavia_checkout": str(request.checkout_id), "octavia_user": str(request.user_id)},
        }
        # A client per checkout: they are rare, and nothing is left open between them.
        try:
            async with httpx.AsyncClient(base_url=self.api_url, timeout=TIMEOUT_S) as http:
                reply = await http.post("/v1/checkouts/", json=body, headers={"Authorization": f"Bearer {self._token}"})
        except httpx.HTTPError as exc:
            log.warning("payments.unreachable", api=self.api_url, error=repr(exc))
            raise payments_unavailable(f"{self.api_url} did not answer ({type(exc).__name__})") from None
        if reply.status_code == 429 or reply.status_code >= 500:
            log.warning("payments.refused", status=reply.status_code, body=reply.text[:500])
            raise payments_unavailable(f"it answered HTTP {reply.status_code}")
        if reply.status_code not in (200, 201):
            # Our request or our credentials are wrong: an operator must look (INTERNAL, logged with the answer).
            raise RuntimeError(f"Polar refused the checkout: HTTP {reply.status_code}: {reply.text[:500]}")
        session = reply.json()
        return ProviderCheckout(session["id"], session["url"], datetime.fromisoformat(session["expires_at"]))

    def read_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> PaymentEvent:
        webhook_id = webhooks.verify(self._keys, headers, body, now)
        try:
            payload = json.loads(body)
            event_type, data = payload["type"], payload["data"]
            if not isinstance(event_type, str) or not isinstance(data, dict):
                raise TypeError
            if event_type == "order.paid":
                checkout_id = data.get("checkout_id")
                if checkout_id is not None and not isinstance(checkout_id, str):
                    raise TypeError("checkout_id")
                return OrderPaid(webhook_id, event_type, _text(data, "id"), checkout_id)
            if event_type == "order.refunded":
                return OrderRefunded(
                    webhook_id, event_type, _text(data, "id"), _amount(data, "refunded_amount"), _amount(data, "total_amount")
                )
        except (ValueError, KeyError, TypeError):
            raise invalid_argument(
                {"body": "not a Polar webhook event: a JSON object with a type and its data"}, reason="MALFORMED_WEBHOOK"
            ) from None
        return OtherEvent(webhook_id, event_type)


def _text(data: dict, key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise TypeError(key)
    return value


def _amount(data: dict, key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(key)
    return value
