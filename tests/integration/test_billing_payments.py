"""Buying credits: a checkout with the payments provider (the local fake Polar, scripts/fake_polar.py),
paid on its page, confirmed by its signed webhook through Envoy, applied once whatever is replayed or forged.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import grpc
import httpx
import pytest
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from scripts import stack as local_stack
from services.billing import webhooks

from .ledger import assert_ledger_balanced
from .test_billing_ledger import WELCOME, User, billing, reserve, service  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration
B = billing_pb2
SUCCESS = "http://localhost:3000/billing/done"  # on the stack's default CORS origin


@pytest.fixture(scope="module")
def polar(stack):
    """The fake provider's own API (checkouts as Polar keeps them, webhooks it sent) and its test hooks."""
    with httpx.Client(
        base_url=stack.polar_api_url, headers={"Authorization": f"Bearer {stack.polar_token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def user(rest) -> User:
    return User(rest)


def checkout(user: User, pack: str = "starter", **fields) -> httpx.Response:
    return user.rest.post(
        "/v1/checkouts", headers=user.headers, json={"creditPack": f"creditPacks/{pack}", "successUrl": SUCCESS, **fields}
    )


def pay(polar: httpx.Client, url: str) -> httpx.Response:
    """Press Pay on the hosted page: the provider delivers its webhooks before it redirects."""
    return polar.post(f"{url}/pay", follow_redirects=False)


def deliveries(polar: httpx.Client, order_id: str) -> dict[str, dict]:
    """The webhooks the provider sent about one order, by type."""
    sent = polar.get("/_fake/deliveries").json()
    return {d["type"]: d for d in sent if json.loads(d["body"])["data"].get("id") == order_id}


def post_webhook(rest: httpx.Client, body: bytes, key: bytes, *, webhook_id: str | None = None, timestamp: int | None = None):
    webhook_id, timestamp = webhook_id or f"msg_{uuid.uuid4().hex}", timestamp or int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.sign(key, webhook_id, timestamp, body),
    }
    return rest.post("/v1/webhooks/payments", content=body, headers=headers)


def test_buying_a_pack_adds_its_credits_once(user, polar, rest, stack):
    created = checkout(user)
    assert created.status_code == 200, created.text
    bought = created.json()["checkout"]
    assert (bought["state"], bought["credits"], bought["priceMinorUnits"], bought["currencyCode"]) == (
        "CHECKOUT_STATE_OPEN", "1000", "1000", "USD"
    )  # fmt: skip
    session = polar.get(f"/v1/checkouts/{bought['url'].rsplit('/', 1)[1]}").json()
    assert session["metadata"] == {
        "octavia_checkout": bought["name"].removeprefix("checkouts/"), "octavia_user": user.name.removeprefix("users/")
    }  # fmt: skip
    assert (session["success_url"], session["return_url"], session["product_id"]) == (SUCCESS, SUCCESS, "prod_octavia_starter")
    assert httpx.get(f"{stack.polar_api_url}/v1/checkouts/{session['id']}").status_code == 401, "the fake wants the token"

    paid = pay(polar, bought["url"])
    assert (paid.status_code, paid.headers["location"]) == (303, SUCCESS)
    sent = deliveries(polar, paid.headers["x-fake-polar-order"])
    assert sent["order.paid"]["status"] == 200
    completed = rest.get(f"/v1/{bought['name']}", headers=user.headers).json()["checkout"]
    assert completed["state"] == "CHECKOUT_STATE_COMPLETED" and completed["completeTime"]
    assert user.balance() == (WELCOME + 1000, 0)
    [purchase] = user.transactions("reason=TRANSACTION_REASON_PURCHASE")
    assert (purchase["reference"], purchase["availableChange"]) == (bought["name"], "1000")

    # Polar redelivers (same webhook-id), or sends the paid order again under a new webhook-id: nothing changes.
    assert polar.post(f"/_fake/deliveries/{sent['order.paid']['webhook_id']}/resend").json()["status"] == 200
    order = json.loads(sent["order.paid"]["body"])["data"]
    assert polar.post("/_fake/webhooks", json={"type": "order.paid", "data": order}).json()["status"] == 200
    assert pay(polar, bought["url"]).status_code == 403, "the page takes one payment"
    assert user.balance() == (WELCOME + 1000, 0) and len(user.transactions("reason=TRANSACTION_REASON_PURCHASE")) == 1
    assert_ledger_balanced(stack.database_url)


def test_forged_stale_and_malformed_webhooks_change_nothing(user, polar, rest, stack):
    bought = checkout(user).json()["checkout"]
    session_id = bought["url"].rsplit("/", 1)[1]
    order = {
        "id": f"ord_{uuid.uuid4().hex}",
        "status": "paid",
        "checkout_id": session_id,
        "total_amount": 1000,
        "refunded_amount": 0,
    }
    body = json.dumps({"type": "order.paid", "timestamp": "2026-01-01T00:00:00Z", "data": order}).encode()

    forged = post_webhook(rest, body, b"not the secret")
    assert (forged.status_code, forged.json()["details"][0]["reason"]) == (401, "INVALID_WEBHOOK_SIGNATURE")
    forged_by_the_fake = polar.post("/_fake/webhooks", json={"type": "order.paid", "data": order, "secret": "whsec_" + "A" * 44})
    assert forged_by_the_fake.json()["status"] == 401
    stale = post_webhook(rest, body, stack.polar_webhook_secret.encode(), timestamp=int(time.time()) - 301)
    assert (stale.status_code, stale.json()["details"][0]["reason"]) == (401, "STALE_WEBHOOK")
    malformed = post_webhook(rest, b'{"type": "order.paid", "data": "ord_1"}', stack.polar_webhook_secret.encode())
    assert (malformed.status_code, malformed.json()["details"][0]["reason"]) == (400, "MALFORMED_WEBHOOK")
    unsigned = rest.post("/v1/webhooks/payments", content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
    assert user.balance() == (WELCOME, 0)
    assert rest.get(f"/v1/{bought['name']}", headers=user.headers).json()["checkout"]["state"] == "CHECKOUT_STATE_OPEN"

    # The same event signed with the real secret, either way Polar signs: applied once.
    first = post_webhook(rest, body, stack.polar_webhook_secret.encode(), webhook_id="msg_" + order["id"])
    assert first.status_code == 200, first.text
    standard = webhooks.standard_key(stack.polar_webhook_secret)
    assert post_webhook(rest, body, standard, webhook_id="msg_" + order["id"]).status_code == 200
    assert user.balance() == (WELCOME + 1000, 0)


def test_events_billing_does_not_use_or_about_unknown_checkouts_are_accepted_without_effect(user, polar):
    customer = polar.post("/_fake/webhooks", json={"type": "customer.updated", "data": {"id": "cus_1"}}).json()
    unknown = polar.post(
        "/_fake/webhooks", json={"type": "order.paid", "data": {"id": "ord_x", "checkout_id": "chk_not_ours", "total_amount": 5}}
    ).json()
    assert (customer["status"], unknown["status"]) == (200, 200)
    assert user.balance() == (WELCOME, 0)


def test_a_refund_takes_back_its_share_of_the_credits_as_far_as_they_are_available(user, polar, billing, service, rest, stack):  # noqa: F811
    bought = checkout(user, "starter").json()["checkout"]
    order_id = pay(polar, bought["url"]).headers["x-fake-polar-order"]
    assert user.balance() == (1100, 0)

    quarter = polar.post("/v1/refunds/", json={"order_id": order_id, "amount": 250, "reason": "customer_request"})
    assert quarter.status_code == 201
    assert user.balance() == (850, 0)
    reserve(billing, service, user, 4800)  # 800 credits held by a running job: not for taking back
    assert user.balance() == (50, 800)

    rest_of_it = polar.post("/v1/refunds/", json={"order_id": order_id, "amount": 750, "reason": "customer_request"})
    assert rest_of_it.status_code == 201
    assert user.balance() == (0, 800), "750 were owed; the 50 available were taken, the held 800 were not"
    refunds = user.transactions("reason=TRANSACTION_REASON_REFUND")
    assert [int(t["availableChange"]) for t in refunds] == [-50, -250]
    assert {t["reference"] for t in refunds} == {bought["name"]}
    assert rest.get(f"/v1/{bought['name']}", headers=user.headers).json()["checkout"]["state"] == "CHECKOUT_STATE_REFUNDED"

    replayed = deliveries(polar, order_id)["order.refunded"]
    assert polar.post(f"/_fake/deliveries/{replayed['webhook_id']}/resend").json()["status"] == 200
    assert user.balance() == (0, 800)
    assert_ledger_balanced(stack.database_url)


def test_checkout_requests_are_checked_and_idempotent(user, rest):
    request_id = str(uuid.uuid4())
    first = checkout(user, requestId=request_id).json()["checkout"]
    assert checkout(user, requestId=request_id).json()["checkout"] == first
    reused = checkout(user, "creator", requestId=request_id)
    assert (reused.status_code, reused.json()["details"][0]["reason"]) == (409, "REQUEST_ID_REUSED")

    elsewhere = checkout(user, successUrl="https://evil.example/phish")
    assert (elsewhere.status_code, elsewhere.json()["details"][0]["reason"]) == (400, "REDIRECT_NOT_ALLOWED")
    cancel_elsewhere = checkout(user, cancelUrl="https://evil.example/phish")
    assert cancel_elsewhere.json()["details"][0]["reason"] == "REDIRECT_NOT_ALLOWED"
    assert checkout(user, "platinum").status_code == 400
    assert checkout(user, successUrl="").status_code == 400

    stranger = User(rest)
    assert rest.get(f"/v1/{first['name']}", headers=stranger.headers).status_code == 404
    assert rest.get(f"/v1/checkouts/{uuid.uuid4()}", headers=user.headers).status_code == 404


def refusal(reply: httpx.Response) -> tuple[int, str, list[str]]:
    """(HTTP status, ErrorInfo reason, fields named) of a refused call."""
    details = reply.json()["details"]
    fields = [v["field"] for d in details for v in d.get("fieldViolations", ())]
    return reply.status_code, next(d["reason"] for d in details if "reason" in d), fields


@pytest.mark.parametrize(
    ("url", "reasons"),
    [
        ("http://evil.example\\@localhost:3000/paid", {"INVALID_ARGUMENT"}),  # browsers go to evil.example
        ("http://localhost:3000@evil.example/paid", {"INVALID_ARGUMENT"}),
        ("http:/\\evil.example/paid", {"INVALID_ARGUMENT"}),
        ("//evil.example/paid", {"INVALID_ARGUMENT"}),
        ("javascript:alert(1)//localhost:3000/", {"INVALID_ARGUMENT"}),
        ("http://%6cocalhost:3000/paid", {"INVALID_ARGUMENT"}),
        # Refused by the generic check of every request, or else by the checkout's own.
        ("http://evil.example\tlocalhost:3000/paid", {"INVALID_ARGUMENT", "CONTROL_CHARACTER"}),
        ("http://localhost:3000/" + "x" * 20_000, {"INVALID_ARGUMENT", "VALUE_TOO_LONG"}),
        ("http://localhost.:3000/paid", {"REDIRECT_NOT_ALLOWED"}),  # another host to a browser
        ("http://LOCALHOST:3000.evil.example/", {"INVALID_ARGUMENT"}),
    ],
)
def test_a_redirect_a_browser_might_take_elsewhere_is_refused_with_its_reason(user, url, reasons):
    for field, body in (("success_url", {"successUrl": url}), ("cancel_url", {"cancelUrl": url})):
        refused = checkout(user, **body)
        status, reason, fields = refusal(refused)
        assert status == 400 and reason in reasons and fields == [field], refused.text
        assert len(refused.content) < 2000, "a refusal does not quote the URL back whole"
    assert checkout(user).status_code == 200, "the allowed redirect still works"
    assert user.balance() == (WELCOME, 0)


def test_a_signed_webhook_too_deeply_nested_to_read_is_malformed_and_billing_goes_on(user, polar, rest, stack):
    key = stack.polar_webhook_secret.encode()
    for body in (b"[" * 100_000, b'{"a":' * 100_000, b'{"type": "order.paid", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        refused = post_webhook(rest, body, key)
        assert refusal(refused)[:2] == (400, "MALFORMED_WEBHOOK"), refused.text[:500]
    customer = polar.post("/_fake/webhooks", json={"type": "customer.updated", "data": {"id": "cus_1"}}).json()
    assert customer["status"] == 200, "billing still applies webhooks"
    assert user.balance() == (WELCOME, 0)


def test_a_provider_that_cannot_be_reached_is_unavailable_and_leaves_no_checkout(user, stack):
    pid = int((stack.var_dir / "run" / "payments.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    try:
        while local_stack._alive(pid):
            time.sleep(0.05)
        request_id = str(uuid.uuid4())
        down = checkout(user, requestId=request_id)
        assert (down.status_code, down.json()["details"][0]["reason"]) == (503, "PAYMENTS_UNAVAILABLE")
    finally:
        local_stack.up(stack)
    retried = checkout(user, requestId=request_id)
    assert retried.status_code == 200 and retried.json()["checkout"]["state"] == "CHECKOUT_STATE_OPEN"


def test_the_grpc_api_reports_the_checkout_the_user_bought(user, edge_channel):
    stub = billing_pb2_grpc.BillingServiceStub(edge_channel)
    as_user = (("authorization", f"Bearer {user.token}"),)
    made = stub.CreateCheckout(B.CreateCheckoutRequest(credit_pack="creditPacks/studio", success_url=SUCCESS), metadata=as_user)
    assert stub.GetCheckout(B.GetCheckoutRequest(name=made.checkout.name), metadata=as_user).checkout == made.checkout
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateCheckout(B.CreateCheckoutRequest(credit_pack="creditPacks/studio", success_url=SUCCESS))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
