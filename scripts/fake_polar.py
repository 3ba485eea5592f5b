"""The local stack's payments provider: a stand-in for Polar (polar.sh) that speaks the part of its API billing uses.

    python -m scripts.fake_polar [--signature polar|standard]
        listens on the port of OCTAVIA_POLAR_API_URL; webhooks go to $OCTAVIA_PUBLIC_URL/v1/webhooks/payments

Polar's API, with `Authorization: Bearer $OCTAVIA_POLAR_TOKEN` (anything else is a 401, as Polar answers):
- POST /v1/checkouts/        a checkout session for one product of the credit packs (OCTAVIA_CREDIT_PACKS);
                             201 with `id`, `url` (the hosted page), `expires_at` (an hour), `status` "open"
- GET  /v1/checkouts/{id}    the session, with the metadata and URLs it was created with
- POST /v1/refunds/          `{"order_id", "amount", "reason"}` refunds part or all of an order: `order.refunded`

The hosted checkout page, as the buyer's browser sees it:
- GET  /checkout/{id}        the page, with a Pay button that posts to
- POST /checkout/{id}/pay    pays: the order is created, `checkout.updated` and `order.paid` are delivered (and
                             their answers awaited), then 303 to the success URL; `x-fake-polar-order` names the order

For tests, not Polar's:
- GET  /_fake/health                     200 once listening
- GET  /_fake/deliveries                 every webhook sent: id, type, timestamp, body, signature, status of the answer
- POST /_fake/deliveries/{id}/resend     send a delivery again, same webhook-id and body (a redelivery);
                                         `{"timestamp": <unix s>}` re-signs it at another time (a stale replay)
- POST /_fake/webhooks                   send any event, `{"type", "data"}`, optionally with "webhook_id",
                                         "timestamp" and "secret" (sign with another secret: a forgery)

Deliveries are signed like Polar's: Standard Webhooks headers over the raw JSON body, the HMAC key being the
UTF-8 bytes of the whole secret (`--signature polar`, what Polar does for every endpoint made before
2026-09-08), or the key a `whsec_<base64>` secret encodes (`--signature standard`, Polar's newer endpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import html
import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from octavia_runtime.config import Config, CreditPack, load

CHECKOUT_TTL = timedelta(hours=1)
WEBHOOK_PATH = "/v1/webhooks/payments"
SIGNATURES = ("polar", "standard")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@dataclass
class Delivery:
    webhook_id: str
    type: str
    body: bytes
    timestamp: int = 0
    signature: str = ""
    status: int | str = ""

    def view(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id, "type": self.type, "timestamp": self.timestamp,
            "signature": self.signature, "status": self.status, "body": self.body.decode(),
        }  # fmt: skip


@dataclass
class FakePolar:
    config: Config
    signature: str = "polar"
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)

    @property
    def products(self) -> dict[str, CreditPack]:
        return {pack.product_id: pack for pack in self.config.credit_packs}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._bearer])
        app.add_routes([
            web.post("/v1/checkouts/", self.create_checkout),
            web.get("/v1/checkouts/{id}", self.get_checkout),
            web.post("/v1/refunds/", self.refund),
            web.get("/checkout/{id}", self.page),
            web.post("/checkout/{id}/pay", self.pay),
            web.get("/_fake/health", self.health),
            web.get("/_fake/deliveries", self.list_deliveries),
            web.post("/_fake/deliveries/{id}/resend", self.resend),
            web.post("/_fake/webhooks", self.send_any),
        ])  # fmt: skip
        return app

    @web.middleware
    async def _bearer(self, request: web.Request, handler):
        if request.path.startswith("/v1/") and request.headers.get("Authorization") != f"Bearer {self.config.polar_token}":
            return web.json_response(
                {"error": "invalid_token", "error_description": "The access token provided is expired, revoked or malformed"},
                status=401,
            )
        return await handler(request)

    # -- Polar's API ---------------------------------------------------------------------------------

    async def create_checkout(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(422, "RequestValidationError", "the body is not JSON")
        products = body.get("products") or []
        if not products or any(p not in self.products for p in products) or not body.get("success_url"):
            return _error(422, "RequestValidationError", "products must name known products; success_url is required")
        pack = self.products[products[0]]
        checkout_id = str(uuid.uuid4())
        now = _now()
        self.checkouts[checkout_id] = {
            "id": checkout_id,
            "created_at": _iso(now),
            "modified_at": None,
            "status": "open",
            "client_secret": f"polar_c_{uuid.uuid4().hex}",
            "url": f"{self.config.polar_api_url}/checkout/{checkout_id}",
            "expires_at": _iso(now + CHECKOUT_TTL),
            "success_url": body["success_url"],
            "return_url": body.get("return_url"),
            "amount": pack.price_minor_units,
            "total_amount": pack.price_minor_units,
            "currency": pack.currency.lower(),
            "product_id": pack.product_id,
            "products": [{"id": pack.product_id, "name": pack.display_name}],
            "customer_email": body.get("customer_email"),
            "external_customer_id": body.get("external_customer_id"),
            "metadata": body.get("metadata") or {},
        }
        return web.json_response(self.checkouts[checkout_id], status=201)

    async def get_checkout(self, request: web.Request) -> web.Response:
        checkout = self.checkouts.get(request.match_info["id"])
        if checkout is None:
            return _error(404, "ResourceNotFound", "Not found")
        return web.json_response(checkout)

    async def refund(self, request: web.Request) -> web.Response:
        body = await request.json()
        order = self.orders.get(body.get("order_id", ""))
        if order is None:
            return _error(404, "ResourceNotFound", "Not found")
        amount = body.get("amount")
        if not isinstance(amount, int) or not 0 < amount <= order["total_amount"] - order["refunded_amount"]:
            return _error(422, "RefundAmountTooHigh", "amount must be positive and at most what is left to refund")
        order["refunded_amount"] += amount
        order["status"] = "refunded" if order["refunded_amount"] == order["total_amount"] else "partially_refunded"
        order["modified_at"] = _iso(_now())
        refund = {
            "id": str(uuid.uuid4()), "created_at": _iso(_now()), "status": "succeeded", "reason": body.get("reason", "customer_request"),
            "amount": amount, "currency": order["currency"], "order_id": order["id"], "metadata": {},
        }  # fmt: skip
        await self.deliver("refund.created", refund)
        await self.deliver("order.refunded", order)
        return web.json_response(refund, status=201)

    # -- the hosted page -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        checkout = self.checkouts.get(request.match_info["id"])
        if checkout is None:
            return web.Response(status=404, text="no such checkout")
        product = html.escape(checkout["products"][0]["name"])
        price = f"{checkout['total_amount'] / 100:.2f} {checkout['currency'].upper()}"
        return web.Response(
            content_type="text/html",
            text=(
                f"<!doctype html><title>Pay {product}</title><h1>{product}: {price}</h1><p>Fake Polar checkout "
                f"({html.escape(checkout['status'])}).</p><form method=post action='/checkout/{checkout['id']}/pay'>"
                "<button>Pay</button></form>"
            ),
        )

    async def pay(self, request: web.Request) -> web.Response:
        checkout = self.checkouts.get(request.match_info["id"])
        if checkout is None:
            return _error(404, "ResourceNotFound", "Not found")
        if checkout["status"] != "open":
            return _error(403, "NotOpenCheckout", f"the checkout is {checkout['status']}")
        if datetime.fromisoformat(checkout["expires_at"]) <= _now():
            return _error(410, "ExpiredCheckoutError", "the checkout has expired")
        now = _iso(_now())
        customer_id = str(uuid.uuid4())
        order = {
            "id": str(uuid.uuid4()), "created_at": now, "modified_at": now, "status": "paid", "paid": True,
            "subtotal_amount": checkout["amount"], "discount_amount": 0, "net_amount": checkout["amount"],
            "amount": checkout["amount"], "tax_amount": 0, "total_amount": checkout["total_amount"],
            "refunded_amount": 0, "refunded_tax_amount": 0, "currency": checkout["currency"],
            "billing_reason": "purchase", "billing_address": None, "customer_id": customer_id,
            "product_id": checkout["product_id"], "discount_id": None, "subscription_id": None,
            "checkout_id": checkout["id"], "metadata": checkout["metadata"],
            "customer": {"id": customer_id, "email": checkout["customer_email"] or "buyer@example.com",
                         "external_id": checkout["external_customer_id"], "metadata": {}},
            "user_id": customer_id, "product": checkout["products"][0], "discount": None, "subscription": None,
            "items": [{"label": checkout["products"][0]["name"], "amount": checkout["amount"], "tax_amount": 0,
                       "proration": False, "product_price_id": None}],
        }  # fmt: skip
        self.orders[order["id"]] = order
        checkout.update(status="succeeded", modified_at=now)
        await self.deliver("checkout.updated", checkout)
        await self.deliver("order.paid", order)
        success = checkout["success_url"].replace("{CHECKOUT_ID}", checkout["id"])
        return web.Response(status=303, headers={"Location": success, "x-fake-polar-order": order["id"]})

    # -- webhooks ------------------------------------------------------------------------------------

    def _key(self, secret: str) -> bytes:
        if self.signature == "standard":
            return base64.b64decode(secret.removeprefix("whsec_"))
        # What Polar's server does for its endpoints: StandardWebhook(base64(secret)), which decodes it back.
        return secret.encode()

    def _sign(self, delivery: Delivery, secret: str) -> None:
        signed = f"{delivery.webhook_id}.{delivery.timestamp}.".encode() + delivery.body
        digest = hmac.new(self._key(secret), signed, hashlib.sha256).digest()
        delivery.signature = "v1," + base64.b64encode(digest).decode()

    async def deliver(
        self, event_type: str, data: dict[str, Any], *, webhook_id: str | None = None, timestamp: int | None = None,
        secret: str | None = None,
    ) -> Delivery:  # fmt: skip
        payload = {"type": event_type, "timestamp": _iso(_now()), "data": data}
        delivery = Delivery(webhook_id or str(uuid.uuid4()), event_type, json.dumps(payload, separators=(",", ":")).encode())
        self.deliveries[delivery.webhook_id] = delivery
        return await self._send(delivery, timestamp, secret)

    async def _send(self, delivery: Delivery, timestamp: int | None = None, secret: str | None = None) -> Delivery:
        delivery.timestamp = int(time.time()) if timestamp is None else timestamp
        self._sign(delivery, secret or self.config.polar_webhook_secret)
        headers = {
            "user-agent": "polar.sh webhooks",
            "content-type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(delivery.timestamp),
            "webhook-signature": delivery.signature,
        }
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(self.config.public_url + WEBHOOK_PATH, data=delivery.body, headers=headers) as reply:
                    delivery.status = reply.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.status = f"not delivered: {type(exc).__name__}"
        return delivery

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def list_deliveries(self, request: web.Request) -> web.Response:
        return web.json_response([d.view() for d in self.deliveries.values()])

    async def resend(self, request: web.Request) -> web.Response:
        delivery = self.deliveries.get(request.match_info["id"])
        if delivery is None:
            return _error(404, "ResourceNotFound", "no such delivery")
        options = await request.json() if request.can_read_body else {}
        return web.json_response((await self._send(delivery, options.get("timestamp"))).view())

    async def send_any(self, request: web.Request) -> web.Response:
        body = await request.json()
        delivery = await self.deliver(
            body["type"], body["data"], webhook_id=body.get("webhook_id"), timestamp=body.get("timestamp"),
            secret=body.get("secret"),
        )  # fmt: skip
        return web.json_response(delivery.view())


async def serve(config: Config, signature: str) -> None:
    # Idle keep-alive connections of test clients must not hold the exit up (aiohttp waits 60 s by default).
    runner = web.AppRunner(FakePolar(config, signature).app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = urlsplit(config.polar_api_url).port or 80
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(
        f"fake polar: {config.polar_api_url} (webhooks to {config.public_url}{WEBHOOK_PATH}, {signature} signatures)", flush=True
    )
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local stand-in for Polar's API and webhooks.")
    parser.add_argument("--signature", choices=SIGNATURES, default="polar", help="how webhooks are signed (default: %(default)s)")
    asyncio.run(serve(load(), parser.parse_args().signature))


if __name__ == "__main__":
    main()
