"""The ledger's movements and the checkout rules, without a database: every movement balances and
moves the right user's credits; redirects stay on allowed origins; refunds take back their share."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from octavia.billing.v1 import billing_pb2

from services.billing import checkouts, ledger
from services.billing.store import Checkout, Hold

B = billing_pb2
USER = uuid.uuid4()
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def a_hold(credits: int = 30) -> Hold:
    return Hold(
        id=uuid.uuid4(), user_id=USER, reference="jobs/1", credits=credits, captured_credits=0, state=B.HOLD_STATE_HELD,
        kind=1, duration_ns=10**9, target_language_count=0, description="Transcription, 1 s", created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("posting", "reason", "available", "held"),
    [
        (ledger.welcome_posting(USER, 100), B.TRANSACTION_REASON_GRANT, 100, 0),
        (ledger.hold_posting(USER, uuid.uuid4(), "jobs/1", 30, ""), B.TRANSACTION_REASON_HOLD, -30, 30),
        (ledger.capture_posting(a_hold(30), 30), B.TRANSACTION_REASON_CAPTURE, 0, -30),
        (ledger.capture_posting(a_hold(30), 12), B.TRANSACTION_REASON_CAPTURE, 18, -30),
        (ledger.release_posting(a_hold(30)), B.TRANSACTION_REASON_RELEASE, 30, -30),
        (ledger.grant_posting(USER, 50, "support", "T-1", "", b""), B.TRANSACTION_REASON_GRANT, 50, 0),
        (ledger.grant_posting(USER, -20, "fix", "T-2", "", b""), B.TRANSACTION_REASON_ADJUSTMENT, -20, 0),
        (ledger.purchase_posting(USER, "checkouts/1", 1000, ""), B.TRANSACTION_REASON_PURCHASE, 1000, 0),
        (ledger.refund_posting(USER, "checkouts/1", 400, ""), B.TRANSACTION_REASON_REFUND, -400, 0),
    ],
)
def test_every_movement_balances_and_changes_the_users_credits_as_its_reason_says(posting, reason, available, held):
    assert sum(credits for _, credits in posting.entries) == 0
    assert all(credits for _, credits in posting.entries), "an entry moves at least one credit"
    assert posting.reason == reason and posting.user_id == USER
    assert ledger.changes(USER, posting.entries) == (available, held)
    system = {account for account, _ in posting.entries if account.startswith("system/")}
    assert system <= {ledger.SYSTEM_GRANTS, ledger.SYSTEM_PURCHASES, ledger.SYSTEM_REVENUE, ledger.SYSTEM_REFUNDS}


def test_a_partial_capture_charges_revenue_and_gives_the_rest_back():
    entries = dict(ledger.capture_posting(a_hold(30), 12).entries)
    assert entries == {f"users/{USER}/held": -30, "system/revenue": 12, f"users/{USER}/available": 18}


def test_redirects_are_allowed_on_the_configured_origins_only():
    allowed = checkouts.allowed_origins(("http://localhost:3000", "https://*.example.com"), "https://octavia.example:443")
    assert allowed == {"http://localhost:3000", "https://octavia.example"}, "a wildcard origin allows no redirect"
    assert checkouts.origin("HTTP://LocalHost:3000/billing?x=1") in allowed
    assert checkouts.origin("https://octavia.example/done/{CHECKOUT_ID}") in allowed
    for elsewhere in ("http://localhost:3001/", "https://octavia.example.evil.com/", "http://octavia.example/"):
        assert checkouts.origin(elsewhere) not in allowed
    for not_http in ("javascript:alert(1)", "//octavia.example/", "ftp://octavia.example/", "http://[::1/"):
        assert checkouts.origin(not_http) is None


@pytest.mark.parametrize(
    ("refunded", "total", "owed"),
    [(1000, 1000, 6000), (250, 1000, 1500), (1, 1000, 6), (0, 1000, 0), (1200, 1000, 6000), (0, 0, 6000)],
)
def test_a_refund_takes_back_the_share_of_credits_its_share_of_the_payment_bought(refunded, total, owed):
    assert checkouts.refund_owed(6000, refunded, total) == owed


def test_an_open_checkout_past_its_expiry_is_expired():
    open_checkout = Checkout(
        id=uuid.uuid4(), user_id=USER, credit_pack="starter", credits=1000, price_minor_units=1000, currency="USD",
        state=B.CHECKOUT_STATE_OPEN, url="", success_url="", cancel_url="", provider_checkout_id="c", provider_order_id=None,
        refunded_credits=0, request_id=None, request_hash=None, created_at=NOW, expire_time=NOW + timedelta(hours=1),
        complete_time=None,
    )  # fmt: skip
    assert not checkouts.expired(open_checkout, NOW)
    assert checkouts.expired(open_checkout, NOW + timedelta(hours=1))
    paid = Checkout(**{**open_checkout.__dict__, "state": B.CHECKOUT_STATE_COMPLETED})
    assert not checkouts.expired(paid, NOW + timedelta(days=1))
