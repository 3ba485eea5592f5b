"""Buying credit packs: checkout sessions with the payments provider, and the webhook events that settle them.

- CreateCheckout asks the provider for a session first and stores the
  checkout only once it has the payment page's URL: a provider that cannot
  be reached leaves nothing behind (UNAVAILABLE, and the user may try
  again). Two concurrent repeats of one request_id may each open a session;
  one is stored and returned to both, the other is never shown and expires.
- Redirects go only to an allowed origin (OCTAVIA_CORS_ORIGINS, or the
  public URL's), so a checkout cannot be turned into an open redirect; a
  wildcard CORS origin allows no redirect. The origin is the one a browser
  would go to: Python's urlsplit and a browser's URL parser disagree on
  backslashes, user info, tabs and newlines (which browsers drop), so a
  redirect URL is taken only in a form both read alike (`origin`).
- Each webhook is applied once: its webhook-id is recorded in the transaction
  that applies it. `order.paid` adds the pack's credits (PURCHASE, reference
  `checkouts/<id>`) and completes the checkout, once per checkout whatever
  the events (the order id is stored with it).
- `order.refunded` takes back the share of the pack's credits that the
  refunded share of the payment paid for (all of it for a full refund),
  as far as the user still has them available: credits already spent or
  held by running jobs are not clawed back. The shortfall is logged
  (`payments.refund_shortfall`) for an operator, and the checkout still
  counts as refunded by that share, so a later event does not try again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import structlog
from octavia.billing.v1 import billing_pb2

from octavia_runtime.config import CreditPack
from octavia_runtime.errors import invalid_argument, not_found, request_id_reused
from octavia_runtime.validation import max_length

from .ledger import Ledger, purchase_posting, refund_posting
from .payments import CheckoutRequest, OrderPaid, OrderRefunded, PaymentEvent, PaymentsProvider
from .store import Balance, BillingStore, Checkout, Tx

log = structlog.get_logger("checkouts")
B = billing_pb2
MAX_URL = max_length(billing_pb2.CreateCheckoutRequest, "success_url")
MAX_HOST = 253  # DNS's limit on a name
QUOTED_MAX = 80  # of a value quoted back in an error message
DEFAULT_PORTS = {"http": 80, "https": 443}
# Visible ASCII but the backslash: no spaces, tabs, newlines or other controls (browsers drop or
# rewrite those), nothing non-ASCII, and no `\` (which browsers read as `/` in an http(s) URL).
_VISIBLE = re.compile(r"[!-\[\]-~]*", re.ASCII)
_URL = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?)"  # no user info, no %-escapes
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:[/?#].*)?",  # the authority ends where a browser ends it
    re.ASCII | re.IGNORECASE,
)


def origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased, without a default port.

    None for anything else, and for any URL a browser might read another
    origin from than this does: only visible ASCII without backslashes, an
    authority of a plain host (a name, an IPv4 or a bracketed IPv6 address)
    and an optional port, and nothing else (no user info, no %-escapes).
    """
    if len(url) > MAX_URL or not _VISIBLE.fullmatch(url):
        return None
    parts = _URL.fullmatch(url)
    if parts is None:
        return None
    scheme, host, port = parts["scheme"].lower(), parts["host"].lower(), parts["port"]
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"  # as browsers write it: [::1]
        except ValueError:
            return None
    elif len(host.rstrip(".")) > MAX_HOST:
        return None
    if port is not None and not 0 < int(port) <= 65535:
        return None
    shown = "" if port is None or int(port) == DEFAULT_PORTS[scheme] else f":{int(port)}"
    return f"{scheme}://{host}{shown}"


def quoted(value: str) -> str:
    """`value` as an error message may quote it: short, whatever a client sent."""
    return value if len(value) <= QUOTED_MAX else value[: QUOTED_MAX - 3] + "..."


def allowed_origins(cors_origins: Sequence[str], public_url: str) -> frozenset[str]:
    return frozenset(o for o in (*(origin(c) for c in cors_origins if "*" not in c), origin(public_url)) if o)


def refund_owed(credits: int, refunded_amount: int, total_amount: int) -> int:
    """The credits that `refunded_amount` of a `total_amount` payment for `credits` bought (rounded up)."""
    if total_amount <= 0 or refunded_amount >= total_amount:
        return credits
    return -(-credits * refunded_amount // total_amount)


def expired(checkout: Checkout, now: datetime) -> bool:
    return checkout.state == B.CHECKOUT_STATE_OPEN and checkout.expire_time <= now


class Checkouts:
    def __init__(
        self,
        store: BillingStore,
        ledger: Ledger,
        provider: PaymentsProvider,
        packs: Sequence[CreditPack],
        origins: frozenset[str],
    ):
        self.store = store
        self.ledger = ledger
        self.provider = provider
        self.packs = {pack.id: pack for pack in packs}
        self.origins = origins

    async def create(self, user_id: UUID, credit_pack: str, success_url: str, cancel_url: str, request_id: str) -> Checkout:
        pack = self._validate(credit_pack, success_url, cancel_url, request_id)
        cancel_url = cancel_url or success_url
        request_hash = hashlib.sha256(f"{pack.id}\n{success_url}\n{cancel_url}".encode()).digest()
        if request_id:
            first = await self.store.checkout_by_request(user_id, request_id)
            if first is not None:
                return _same_request(first, request_hash)

        checkout_id = uuid.uuid4()
        session = await self.provider.create_checkout(CheckoutRequest(checkout_id, user_id, pack, success_url, cancel_url))
        checkout = Checkout(
            id=checkout_id, user_id=user_id, credit_pack=pack.id, credits=pack.credits,
            price_minor_units=pack.price_minor_units, currency=pack.currency, state=B.CHECKOUT_STATE_OPEN,
            url=session.url, success_url=success_url, cancel_url=cancel_url, provider_checkout_id=session.id,
            provider_order_id=None, refunded_credits=0, request_id=request_id or None,
            request_hash=request_hash if request_id else None, created_at=datetime.now(UTC),
            expire_time=session.expires_at, complete_time=None,
        )  # fmt: skip
        stored = await self.store.insert_checkout(checkout)
        if stored is None:  # a concurrent repeat of this request_id stored its checkout first
            first = await self.store.checkout_by_request(user_id, request_id)
            assert first is not None, "the insert lost to a checkout with this request_id, and checkouts are never deleted"
            return _same_request(first, request_hash)
        return stored

    def _validate(self, credit_pack: str, success_url: str, cancel_url: str, request_id: str) -> CreditPack:
        bad: dict[str, str] = {}
        collection, _, pack_id = credit_pack.partition("/")
        pack = self.packs.get(pack_id) if collection == "creditPacks" else None
        if pack is None:
            bad["credit_pack"] = f"must be one of {', '.join(f'creditPacks/{p}' for p in self.packs)}"
        for field, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if field == "success_url" and not url:
                bad[field] = "required: where the provider sends the user after paying"
            elif url and origin(url) is None:
                bad[field] = (
                    f"must be an absolute http(s) URL of at most {MAX_URL} characters, in visible ASCII"
                    " (no spaces, tabs, newlines or backslashes) and without user info"
                )
        if bad:
            raise invalid_argument(bad)
        refused = {
            field: f"{quoted(str(origin(url)))} is not an allowed origin"
            for field, url in (("success_url", success_url), ("cancel_url", cancel_url))
            if url and origin(url) not in self.origins
        }
        if refused:
            raise invalid_argument(refused, reason="REDIRECT_NOT_ALLOWED")
        assert pack is not None, "an unknown pack was refused above"
        return pack

    async def get(self, user_id: UUID, checkout_id: UUID) -> Checkout:
        checkout = await self.store.checkout(checkout_id)
        if checkout is None or checkout.user_id != user_id:  # another user's checkout is as absent as none
            raise not_found("checkout", f"checkouts/{checkout_id}")
        return checkout

    async def apply(self, event: PaymentEvent) -> None:
        """Apply a verified webhook event exactly once (a redelivery changes nothing)."""
        async with self.store.transaction() as tx:
            if not await tx.record_webhook(event.webhook_id, event.type):
                log.info("payments.webhook_repeated", webhook_id=event.webhook_id, type=event.type)
                return
            if isinstance(event, OrderPaid):
                found = await tx.checkout_by_provider(event.checkout_id) if event.checkout_id else None
            elif isinstance(event, OrderRefunded):
                found = await tx.checkout_by_order(event.order_id)
            else:
                return
            if found is None:
                log.warning("payments.unknown_checkout", webhook_id=event.webhook_id, type=event.type, order=event.order_id)
                return
            # The user's account lock first, as for every change to their credits; then the checkout, current.
            balance = await tx.lock_account(found.user_id, self.ledger.opening(found.user_id))
            checkout = await tx.checkout(found.id, lock=True)
            assert checkout is not None, "found above, and checkouts are never deleted"
            if isinstance(event, OrderPaid):
                await self._paid(tx, checkout, event)
            else:
                await self._refunded(tx, checkout, balance, event)

    @staticmethod
    async def _paid(tx: Tx, checkout: Checkout, event: OrderPaid) -> None:
        if checkout.provider_order_id is not None:
            return  # paid already (the order id is stored with the purchase)
        purchase = purchase_posting(
            checkout.user_id, f"checkouts/{checkout.id}", checkout.credits, f"Purchase of {_pack(checkout)}"
        )
        await tx.complete_checkout(checkout.id, B.CHECKOUT_STATE_COMPLETED, event.order_id, purchase)
        log.info("payments.purchased", checkout=f"checkouts/{checkout.id}", credits=checkout.credits, order=event.order_id)

    @staticmethod
    async def _refunded(tx: Tx, checkout: Checkout, balance: Balance, event: OrderRefunded) -> None:
        owed = refund_owed(checkout.credits, event.refunded_amount, event.total_amount)
        due = owed - checkout.refunded_credits
        if due <= 0:
            return
        taken = min(due, balance.available)
        reference = f"checkouts/{checkout.id}"
        if taken < due:
            log.warning("payments.refund_shortfall", checkout=reference, owed=due, taken=taken, user=str(checkout.user_id))
        state = B.CHECKOUT_STATE_REFUNDED if event.refunded_amount >= event.total_amount else checkout.state
        posting = refund_posting(checkout.user_id, reference, taken, f"Refund of {_pack(checkout)}") if taken else None
        await tx.refund_checkout(checkout.id, state, owed, posting)
        log.info("payments.refunded", checkout=reference, credits=taken, order=event.order_id)


def _pack(checkout: Checkout) -> str:
    return f"{checkout.credits} credits ({checkout.credit_pack})"


def _same_request(checkout: Checkout, request_hash: bytes) -> Checkout:
    if checkout.request_hash != request_hash:
        raise request_id_reused("checkout", f"checkouts/{checkout.id}")
    return checkout
