"""Payment webhooks: the Standard Webhooks signature over the raw body, Polar's keys, and reading its events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from octavia_runtime.config import load
from octavia_runtime.errors import ApiError
from scripts.fake_polar import Delivery, FakePolar
from services.billing import webhooks
from services.billing.payments import (
    MAX_WEBHOOK_BODY,
    OrderPaid,
    OrderRefunded,
    OtherEvent,
    PolarPayments,
    polar_webhook_keys,
)

# The test vector of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = load({}).polar_webhook_secret


def headers(signature: str, webhook_id: str = SPEC_ID, timestamp: int = SPEC_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def reason(error: pytest.ExceptionInfo[ApiError]) -> tuple[str, str]:
    return error.value.code.name, error.value.reason


def test_the_specification_test_vector_signs_and_verifies():
    key = webhooks.standard_key(SPEC_SECRET)
    assert webhooks.sign(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert webhooks.verify([key], headers(SPEC_SIGNATURE), SPEC_BODY, now=SPEC_TIMESTAMP) == SPEC_ID


def test_one_matching_signature_among_several_is_enough():
    key = webhooks.standard_key(SPEC_SECRET)
    rotated = f"v1,{base64.b64encode(b'x' * 32).decode()} v2,whatever {SPEC_SIGNATURE}"
    assert webhooks.verify([key], headers(rotated), SPEC_BODY, now=SPEC_TIMESTAMP + 60) == SPEC_ID


@pytest.mark.parametrize(
    "tampered",
    [
        {"body": SPEC_BODY + b" "},  # one byte more in the body
        {"webhook_id": "msg_other"},
        {"timestamp": SPEC_TIMESTAMP + 1},
        {"signature": SPEC_SIGNATURE.replace("v1,", "v2,")},
        {"signature": SPEC_SIGNATURE[:-2] + "F="},
    ],
)
def test_anything_changed_after_signing_is_refused(tampered):
    key = webhooks.standard_key(SPEC_SECRET)
    sent = headers(
        tampered.get("signature", SPEC_SIGNATURE), tampered.get("webhook_id", SPEC_ID), tampered.get("timestamp", SPEC_TIMESTAMP)
    )
    with pytest.raises(ApiError) as refused:
        webhooks.verify([key], sent, tampered.get("body", SPEC_BODY), now=SPEC_TIMESTAMP)
    assert reason(refused) == ("UNAUTHENTICATED", "INVALID_WEBHOOK_SIGNATURE")


@pytest.mark.parametrize("skew", [-301, 301, 86400])
def test_a_timestamp_more_than_five_minutes_away_is_stale(skew):
    key = webhooks.standard_key(SPEC_SECRET)
    with pytest.raises(ApiError) as refused:
        webhooks.verify([key], headers(SPEC_SIGNATURE), SPEC_BODY, now=SPEC_TIMESTAMP + skew)
    assert reason(refused) == ("UNAUTHENTICATED", "STALE_WEBHOOK")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_webhook_without_its_headers_is_refused(missing):
    sent = {k: v for k, v in headers(SPEC_SIGNATURE).items() if k != missing}
    with pytest.raises(ApiError) as refused:
        webhooks.verify([webhooks.standard_key(SPEC_SECRET)], sent, SPEC_BODY, now=SPEC_TIMESTAMP)
    assert reason(refused) == ("UNAUTHENTICATED", "INVALID_WEBHOOK_SIGNATURE")


def test_polar_signs_with_the_utf8_bytes_of_the_whole_secret_and_newer_endpoints_with_the_encoded_key():
    # Polar's SDKs: Webhook(base64(secret)); the standardwebhooks library strips a `whsec_` prefix (there is
    # none left after base64) and decodes the base64, so the key is the secret string's own bytes.
    sdk_key = base64.b64decode(base64.b64encode(SECRET.encode()))
    assert polar_webhook_keys(SECRET) == (sdk_key, webhooks.standard_key(SECRET))
    assert polar_webhook_keys("a Polar secret that is not whsec_ base64 at all") == (
        b"a Polar secret that is not whsec_ base64 at all",
    )

    def polar_signature(key: bytes) -> str:  # written out here, apart from the code under test
        digest = hmac.new(key, f"{SPEC_ID}.{SPEC_TIMESTAMP}.".encode() + SPEC_BODY, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    for key in (SECRET.encode(), base64.b64decode(SECRET.removeprefix("whsec_"))):
        assert webhooks.verify(polar_webhook_keys(SECRET), headers(polar_signature(key)), SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID


@pytest.mark.parametrize("scheme", ["polar", "standard"])
def test_the_fake_provider_signs_what_billing_verifies(scheme):
    fake = FakePolar(load({}), scheme)
    delivery = Delivery("msg_fake", "order.paid", json.dumps(event("order.paid", order())).encode(), timestamp=SPEC_TIMESTAMP)
    fake._sign(delivery, SECRET)
    received = PolarPayments("http://polar", "token", SECRET).read_webhook(
        headers(delivery.signature, "msg_fake"), delivery.body, SPEC_TIMESTAMP
    )
    assert received == OrderPaid("msg_fake", "order.paid", "ord_1", "chk_1")


def order(**fields) -> dict:
    return {"id": "ord_1", "status": "paid", "checkout_id": "chk_1", "total_amount": 1000, "refunded_amount": 0, **fields}


def event(event_type: str, data) -> dict:
    return {"type": event_type, "timestamp": "2026-11-22T04:00:00Z", "data": data}


def read(payload) -> object:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    key = webhooks.standard_key(SECRET)
    return PolarPayments("http://polar", "token", SECRET).read_webhook(
        headers(webhooks.sign(key, "msg_1", SPEC_TIMESTAMP, body), "msg_1"), body, SPEC_TIMESTAMP
    )


def test_polar_events_are_read_into_what_billing_uses():
    assert read(event("order.paid", order())) == OrderPaid("msg_1", "order.paid", "ord_1", "chk_1")
    assert read(event("order.paid", order(checkout_id=None))) == OrderPaid("msg_1", "order.paid", "ord_1", None)
    refunded = order(status="partially_refunded", refunded_amount=250)
    assert read(event("order.refunded", refunded)) == OrderRefunded("msg_1", "order.refunded", "ord_1", 250, 1000)
    assert read(event("customer.updated", {"id": "cus_1"})) == OtherEvent("msg_1", "customer.updated")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        [1, 2],
        {"data": order()},
        {"type": "order.paid", "data": "ord_1"},
        event("order.paid", order(id=None)),
        event("order.refunded", order(refunded_amount="250")),
        event("order.refunded", {"id": "ord_1"}),
    ],
)
def test_a_signed_body_that_is_not_a_polar_event_is_invalid_argument(payload):
    with pytest.raises(ApiError) as refused:
        read(payload)
    assert reason(refused) == ("INVALID_ARGUMENT", "MALFORMED_WEBHOOK")


def signed_raw(body: bytes, webhook_id: str = "msg_1") -> object:
    key = webhooks.standard_key(SECRET)
    return PolarPayments("http://polar", "token", SECRET).read_webhook(
        headers(webhooks.sign(key, webhook_id, SPEC_TIMESTAMP, body), webhook_id), body, SPEC_TIMESTAMP
    )


def paid_body(**fields) -> bytes:
    return json.dumps(event("order.paid", order(**fields))).encode()


# Bodies a JSON reader may choke on or read oddly: each is refused as malformed, never a crash.
HOSTILE_BODIES = {
    "deep arrays": b"[" * 100_000,
    "deep objects": b'{"a":' * 100_000,
    "deep arrays, closed": b"[" * 5000 + b"]" * 5000,
    "deep data": b'{"type": "order.paid", "data": ' + b'{"id": ' * 2000 + b'"x"' + b"}" * 2001,
    "a huge integer": b'{"type": "order.paid", "data": {"id": ' + b"9" * 5000 + b"}}",
    "an overflowing float": b'{"type": "order.refunded", "data": {"id": "o", "refunded_amount": 1e999, "total_amount": 1}}',
    "NaN": b'{"type": "order.refunded", "data": {"id": "o", "refunded_amount": NaN, "total_amount": 1}}',
    "Infinity": b'{"type": "order.refunded", "data": {"id": "o", "refunded_amount": Infinity, "total_amount": 1}}',
    "a float amount": paid_body()
    .replace(b'"refunded_amount": 0', b'"refunded_amount": 0.5')
    .replace(b'"order.paid"', b'"order.refunded"'),
    "a bigint amount": json.dumps(event("order.refunded", order(refunded_amount=2**64 - 1))).encode(),
    "a negative amount": json.dumps(event("order.refunded", order(refunded_amount=-1))).encode(),
    "a boolean amount": json.dumps(event("order.refunded", order(refunded_amount=True))).encode(),
    "a lone surrogate": b'{"type": "order.paid", "data": {"id": "\\ud800"}}',
    "bad UTF-8": b'{"type": "order.paid", "data": {"id": "\xff\xfe"}}',
    "a BOM": b"\xef\xbb\xbf" + paid_body(),
    "trailing garbage": paid_body() + b"x",
    "two documents": paid_body() + paid_body(),
    "empty": b"",
    "whitespace": b" \n\t ",
    "null": b"null",
    "a string": b'"order.paid"',
    "a number": b"42",
    "an array of the event": b"[" + paid_body() + b"]",
    "no data": b'{"type": "order.paid"}',
    "data null": b'{"type": "order.paid", "data": null}',
    "type null": b'{"type": null, "data": {}}',
    "type a number": b'{"type": 1, "data": {}}',
    "type with a NUL": b'{"type": "order.paid\\u0000", "data": {}}',
    "an unknown type with a NUL": b'{"type": "x\\u0000y", "data": {}}',
    "a very long type": json.dumps({"type": "x" * 10_000, "data": {}}).encode(),
    "an order id with a NUL": paid_body(id="ord\x00_1"),
    "an order id with a newline": paid_body(id="ord\n1"),
    "an empty order id": paid_body(id=""),
    "a very long order id": paid_body(id="o" * 10_000),
    "an order id as a number": paid_body(id=1),
    "a checkout id with a NUL": paid_body(checkout_id="chk\x00"),
    "a checkout id as an object": paid_body(checkout_id={"id": "chk_1"}),
    "a non-ASCII order id": paid_body(id="ord_ü"),
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_a_signed_body_that_is_malformed_too_deep_or_oddly_typed_is_malformed_webhook(body):
    with pytest.raises(ApiError) as refused:
        signed_raw(body)
    assert reason(refused) == ("INVALID_ARGUMENT", "MALFORMED_WEBHOOK")
    assert len(refused.value.message) < 200


def test_a_body_larger_than_any_event_is_refused_before_it_is_read():
    body = b'{"type": "customer.updated", "data": {"pad": "' + b"x" * MAX_WEBHOOK_BODY + b'"}}'
    with pytest.raises(ApiError) as refused:
        signed_raw(body)
    assert reason(refused) == ("INVALID_ARGUMENT", "MALFORMED_WEBHOOK")


@pytest.mark.parametrize("webhook_id", ["m" * 201, "msg\x00"])
def test_a_webhook_id_that_could_not_be_stored_is_malformed(webhook_id):
    with pytest.raises(ApiError) as refused:
        signed_raw(paid_body(), webhook_id)
    assert reason(refused) == ("INVALID_ARGUMENT", "MALFORMED_WEBHOOK")


def test_what_a_strict_reader_still_takes():
    # A key given twice counts the last time, as in any JSON reader (and in what Polar signs, it never is).
    twice = b'{"type": "customer.updated", "type": "order.paid", "data": {"id": "ord_1", "checkout_id": "chk_1"}}'
    assert signed_raw(twice) == OrderPaid("msg_1", "order.paid", "ord_1", "chk_1")
    # Fields billing does not use may hold anything JSON allows.
    extra = event("order.paid", order(metadata={"deep": [[[{"x": 1.5e300}]]]}, amount=2**64 - 1, note="\u0000 ü"))
    assert signed_raw(json.dumps(extra).encode()) == OrderPaid("msg_1", "order.paid", "ord_1", "chk_1")
    most = 2**63 - 1
    refunded = event("order.refunded", order(refunded_amount=most, total_amount=most))
    assert signed_raw(json.dumps(refunded).encode()) == OrderRefunded("msg_1", "order.refunded", "ord_1", most, most)


@pytest.mark.parametrize(
    "answer",
    [
        b"[" * 100_000,
        b"not json",
        b"[]",
        b'{"id": "chk_1", "url": "https://buy.polar.sh/chk_1"}',
        b'{"id": "chk_1", "url": "javascript:alert(1)", "expires_at": "2026-11-22T05:00:00Z"}',
        b'{"id": "chk\\u0000", "url": "https://buy.polar.sh/chk_1", "expires_at": "2026-11-22T05:00:00Z"}',
        b'{"id": "chk_1", "url": "https://buy.polar.sh/chk_1", "expires_at": "soon"}',
        b'{"id": "chk_1", "url": "https://buy.polar.sh/chk_1", "expires_at": "2026-11-22T05:00:00"}',
    ],
)
async def test_a_provider_answering_a_checkout_that_cannot_be_read_is_unavailable(monkeypatch, answer):
    import httpx

    from octavia_runtime.config import CreditPack
    from services.billing.payments import CheckoutRequest

    real_client = httpx.AsyncClient
    transport = httpx.MockTransport(lambda request: httpx.Response(201, content=answer))
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kwargs: real_client(transport=transport, **kwargs))
    pack = CreditPack("starter", "Starter", 1000, 1000, "USD", "prod_1")
    request = CheckoutRequest(uuid.uuid4(), uuid.uuid4(), pack, "http://localhost:3000/", "http://localhost:3000/")
    with pytest.raises(ApiError) as refused:
        await PolarPayments("http://polar", "token", SECRET).create_checkout(request)
    assert reason(refused) == ("UNAVAILABLE", "PAYMENTS_UNAVAILABLE")
