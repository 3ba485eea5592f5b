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

A webhook body is read strictly even once its signature checks out (a
leaked secret, or a provider's bug, must not crash billing): at most
`MAX_WEBHOOK_BODY` bytes of UTF-8 JSON, parsed with orjson (which refuses
nesting deeper than 1024 levels instead of recursing, and NaN and numbers
out of a double's range), a top-level object whose ids are short visible
ASCII (they are stored and looked up in Postgres) and whose amounts are
integers; anything else is INVALID_ARGUMENT MALFORMED_WEBHOOK. A key given
twice counts once, the last time, as for any JSON reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

import grpc
import httpx
import orjson
import structlog

from octavia_runtime.config import CreditPack
from octavia_runtime.errors import ApiError, invalid_argument

from . import webhooks

log = structlog.get_logger("payments")
TIMEOUT_S = 10.0
MAX_WEBHOOK_BODY = 1 << 20  # far above any Polar event (a few KB)
MAX_AMOUNT = 2**63 - 1  # minor units: a bigint's range, far beyond any payment
_ID = re.compile(r"[!-~]{1,200}", re.ASCII)  # webhook, event type, order and session ids
_PAGE_URL = re.compile(r"https?://[!-~]{1,2000}", re.ASCII)  # the hosted payment page


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
        try:
            session = orjson.loads(reply.content)
            checkout = ProviderCheckout(_text(session, "id"), _text(session, "url", _PAGE_URL), _time(session, "expires_at"))
        except (ValueError, KeyError, TypeError):  # a provider that answers garbage is as good as one that does not answer
            log.warning("payments.unreadable", status=reply.status_code, body=reply.text[:500])
            raise payments_unavailable("its answer could not be read") from None
        return checkout

    def read_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> PaymentEvent:
        if len(body) > MAX_WEBHOOK_BODY:
            raise malformed_webhook(f"at most {MAX_WEBHOOK_BODY} bytes")
        webhook_id = webhooks.verify(self._keys, headers, body, now)
        try:
            if not _ID.fullmatch(webhook_id):
                raise TypeError(webhooks.ID_HEADER)
            payload = orjson.loads(body)
            if not isinstance(payload, dict):
                raise TypeError("not an object")
            event_type, data = payload["type"], payload["data"]
            if not isinstance(event_type, str) or not _ID.fullmatch(event_type) or not isinstance(data, dict):
                raise TypeError("type")
            if event_type == "order.paid":
                checkout_id = None if data.get("checkout_id") is None else _text(data, "checkout_id")
                return OrderPaid(webhook_id, event_type, _text(data, "id"), checkout_id)
            if event_type == "order.refunded":
                return OrderRefunded(
                    webhook_id, event_type, _text(data, "id"), _amount(data, "refunded_amount"), _amount(data, "total_amount")
                )
        except (ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
            raise malformed_webhook("not a Polar webhook event: a JSON object with a type and its data") from None
        return OtherEvent(webhook_id, event_type)


def malformed_webhook(problem: str) -> ApiError:
    return invalid_argument({"body": problem}, reason="MALFORMED_WEBHOOK")


def _text(data: dict, key: str, form: re.Pattern[str] = _ID) -> str:
    value = data[key]
    if not isinstance(value, str) or not form.fullmatch(value):
        raise TypeError(key)
    return value


def _time(data: dict, key: str) -> datetime:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(key)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(key)
    return moment


def _amount(data: dict, key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise TypeError(key)
    return value
