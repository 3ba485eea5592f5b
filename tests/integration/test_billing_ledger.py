"""Credits as users and services see them: balances and statements through Envoy, holds and grants
for Octavia services only, and a ledger that stays balanced and never goes below zero under concurrency.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc
from octavia.jobs.v1 import jobs_pb2

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.errors import error_info

from .conftest import PASSWORD, new_email
from .ledger import assert_ledger_balanced, holds_of

pytestmark = pytest.mark.integration
B = billing_pb2
WELCOME = 100


@pytest.fixture(scope="module")
def billing(stack):
    """BillingService on its own port, as Octavia services reach it."""
    channel = grpc.insecure_channel(stack.endpoint("billing").target)
    yield billing_pb2_grpc.BillingServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def service(stack) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made with a service credential (an Octavia service, or an operator's key)."""
    return ((SERVICE_TOKEN_HEADER, ServiceCredentials("operator", stack.service_secret).token()),)


class User:
    """A new user with a REST session through Envoy."""

    def __init__(self, rest: httpx.Client):
        email = new_email()
        assert rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 200
        login = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        self.rest, self.name = rest, login["user"]["name"]
        self.token = login["tokens"]["accessToken"]
        self.headers = {"authorization": f"Bearer {self.token}"}

    def balance(self) -> tuple[int, int]:
        reply = self.rest.get("/v1/balance", headers=self.headers)
        assert reply.status_code == 200, reply.text
        balance = reply.json()["balance"]
        return int(balance["availableCredits"]), int(balance["heldCredits"])

    def transactions(self, query: str = "pageSize=100") -> list[dict]:
        reply = self.rest.get(f"/v1/transactions?{query}", headers=self.headers)
        assert reply.status_code == 200, reply.text
        return reply.json()["transactions"]


@pytest.fixture
def user(rest) -> User:
    return User(rest)


def usage(seconds: int, kind: int = jobs_pb2.JOB_KIND_TRANSCRIPTION, languages: int = 0) -> B.Usage:
    """At the default prices a transcription costs 10 credits a minute: `seconds` * 10 / 60."""
    return B.Usage(kind=kind, duration=duration_pb2.Duration(seconds=seconds), target_language_count=languages)


def reserve(billing, service, user: User, seconds: int, reference: str | None = None) -> B.ReserveCreditsResponse:
    request = B.ReserveCreditsRequest(
        user=user.name, reference=reference or f"jobs/{uuid.uuid4()}", usage=usage(seconds), description="Transcription"
    )
    return billing.ReserveCredits(request, metadata=service)


def set_available(billing, service, user: User, credits: int) -> None:
    change = credits - user.balance()[0]
    if change:
        billing.GrantCredits(B.GrantCreditsRequest(user=user.name, credits=change, description="test setup"), metadata=service)


def refused(call) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    info = error_info(error.value)
    return error.value.code(), info.reason if info else "", dict(info.metadata) if info else {}


# -- what a user sees -------------------------------------------------------------------------------


def test_a_new_account_opens_with_the_welcome_credits_once_even_when_first_touched_concurrently(user):
    with ThreadPoolExecutor(20) as pool:
        balances = list(pool.map(lambda _: user.balance(), range(20)))
    assert set(balances) == {(WELCOME, 0)}
    [welcome] = user.transactions()
    assert (welcome["reason"], welcome["reference"], welcome["availableChange"]) == (
        "TRANSACTION_REASON_GRANT",
        "welcome",
        str(WELCOME),
    )
    assert {e["account"]: int(e["credits"]) for e in welcome["entries"]} == {
        "system/grants": -WELCOME, f"{user.name}/available": WELCOME
    }  # fmt: skip


def test_balance_quote_and_statement_through_envoy_rest(billing, service, user, rest):
    quote = rest.post(
        "/v1/quotes:compute",
        headers=user.headers,
        json={"usage": {"kind": "JOB_KIND_SUBTITLES", "duration": "61.2s", "targetLanguageCount": 2}},
    ).json()["quote"]
    assert (quote["credits"], quote["billableDuration"], quote["availableCredits"], quote["sufficient"]) == (
        "21",
        "62s",
        "100",
        True,
    )
    too_long = {"usage": {"kind": "JOB_KIND_VIDEO_DUBBING", "duration": "3600s", "targetLanguageCount": 1}}
    assert rest.post("/v1/quotes:compute", headers=user.headers, json=too_long).json()["quote"]["sufficient"] is False

    held = reserve(billing, service, user, 120).hold  # 20 credits
    billing.CaptureHold(B.CaptureHoldRequest(name=held.name, credits=15), metadata=service)
    assert user.balance() == (85, 0)

    statement = user.transactions()
    assert [t["reason"] for t in statement] == [
        "TRANSACTION_REASON_CAPTURE", "TRANSACTION_REASON_HOLD", "TRANSACTION_REASON_GRANT"
    ], "newest first"  # fmt: skip
    capture = statement[0]
    assert (capture["availableChange"], capture["heldChange"], capture["hold"], capture["description"]) == (
        "5", "-20", held.name, "Transcription"
    )  # fmt: skip
    assert {e["account"]: int(e["credits"]) for e in capture["entries"]} == {
        f"{user.name}/held": -20, "system/revenue": 15, f"{user.name}/available": 5
    }  # fmt: skip

    first = rest.get("/v1/transactions?pageSize=2", headers=user.headers).json()
    rest_of_it = rest.get(f"/v1/transactions?pageSize=2&pageToken={first['nextPageToken']}", headers=user.headers).json()
    assert [t["name"] for t in first["transactions"] + rest_of_it["transactions"]] == [t["name"] for t in statement]
    assert rest_of_it["nextPageToken"] == ""
    holds_only = user.transactions("reason=TRANSACTION_REASON_HOLD")
    assert [t["reference"] for t in holds_only] == [held.reference]
    assert len(user.transactions("pageSize=1000")) == 3, "a page size above the maximum is capped, not refused"
    for query in ("pageSize=-1", "pageToken=not-a-token", "reason=TRANSACTION_REASON_NOPE"):
        assert rest.get(f"/v1/transactions?{query}", headers=user.headers).status_code == 400, query


def test_a_user_never_sees_another_users_transactions(billing, service, rest):
    ada, bob = User(rest), User(rest)
    reserve(billing, service, bob, 60)
    assert {t["user"] for t in ada.transactions()} == {ada.name}
    assert {t["user"] for t in bob.transactions()} == {bob.name}
    assert not {t["name"] for t in ada.transactions()} & {t["name"] for t in bob.transactions()}


def test_prices_and_credit_packs_are_public(rest):
    prices = rest.get("/v1/prices").json()["prices"]
    assert [p["kind"] for p in prices] == [
        "JOB_KIND_TRANSCRIPTION", "JOB_KIND_SUBTITLES", "JOB_KIND_AUDIO_TRANSLATION", "JOB_KIND_VIDEO_DUBBING"
    ]  # fmt: skip
    packs = rest.get("/v1/creditPacks").json()["creditPacks"]
    assert [p["name"] for p in packs] == ["creditPacks/starter", "creditPacks/creator", "creditPacks/studio"]


# -- holds ----------------------------------------------------------------------------------------


def test_a_reservation_is_one_hold_per_reference(billing, service, user):
    reference = f"jobs/{uuid.uuid4()}"
    first = reserve(billing, service, user, 60, reference)
    assert (first.hold.credits, first.hold.state, first.hold.reference) == (10, B.HOLD_STATE_HELD, reference)
    assert (first.balance.available_credits, first.balance.held_credits) == (90, 10)

    again = reserve(billing, service, user, 60, reference)
    assert again.hold == first.hold and user.balance() == (90, 10)
    by_reference = billing.GetHold(B.GetHoldRequest(reference=reference), metadata=service).hold
    assert by_reference == billing.GetHold(B.GetHoldRequest(name=first.hold.name), metadata=service).hold == first.hold

    code, reason, details = refused(lambda: reserve(billing, service, user, 61, reference))
    assert (code, reason, details["hold"]) == (grpc.StatusCode.ALREADY_EXISTS, "REFERENCE_REUSED", first.hold.name)
    billing.CaptureHold(B.CaptureHoldRequest(name=first.hold.name), metadata=service)
    assert reserve(billing, service, user, 60, reference).hold.state == B.HOLD_STATE_CAPTURED, "whatever its state"
    assert len([t for t in user.transactions() if t["reason"] == "TRANSACTION_REASON_HOLD"]) == 1


def test_a_reservation_the_balance_does_not_cover_writes_nothing(billing, service, user):
    reference = f"jobs/{uuid.uuid4()}"
    code, reason, details = refused(lambda: reserve(billing, service, user, 601, reference))  # 101 credits
    assert (code, reason, details) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS", {"needed": "101", "available": "100"}
    )  # fmt: skip
    assert (
        refused(lambda: billing.GetHold(B.GetHoldRequest(reference=reference), metadata=service))[0] == grpc.StatusCode.NOT_FOUND
    )
    assert user.balance() == (100, 0) and len(user.transactions()) == 1


def test_capture_and_release_settle_a_hold_once(billing, service, user):
    def hold(seconds: int) -> B.Hold:
        return reserve(billing, service, user, seconds).hold

    def capture(name: str, credits: int = 0) -> B.Hold:
        return billing.CaptureHold(B.CaptureHoldRequest(name=name, credits=credits), metadata=service).hold

    def release(name: str) -> B.Hold:
        return billing.ReleaseHold(B.ReleaseHoldRequest(name=name), metadata=service).hold

    captured = capture(hold(180).name)  # 30 credits, all charged
    assert (captured.state, captured.captured_credits) == (B.HOLD_STATE_CAPTURED, 30)
    assert captured.update_time.seconds > 0
    assert capture(captured.name) == captured == capture(captured.name, 30), "the same capture again returns it"
    assert refused(lambda: capture(captured.name, 10))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CAPTURED")
    assert refused(lambda: release(captured.name))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CAPTURED")

    released = release(hold(60).name)  # 10 credits back
    assert (released.state, released.captured_credits) == (B.HOLD_STATE_RELEASED, 0)
    assert release(released.name) == released
    assert refused(lambda: capture(released.name))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED")

    partial = hold(120)  # 20 credits, 8 charged, 12 back
    assert refused(lambda: capture(partial.name, 21))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert capture(partial.name, 8).captured_credits == 8
    assert user.balance() == (100 - 30 - 8, 0)
    assert refused(lambda: capture(f"holds/{uuid.uuid4()}"))[:2] == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")


def test_bad_internal_requests_are_invalid_argument_naming_the_field(billing, service, user):
    cases = [
        (billing.ReserveCredits, B.ReserveCreditsRequest(user=user.name, reference="jobs/1"), "usage.kind"),
        (billing.ReserveCredits, B.ReserveCreditsRequest(user="alice", reference="jobs/1", usage=usage(60)), "user"),
        (billing.ReserveCredits, B.ReserveCreditsRequest(user=user.name, usage=usage(60)), "reference"),
        (billing.GrantCredits, B.GrantCreditsRequest(user=user.name, credits=5), "description"),
        (billing.GetHold, B.GetHoldRequest(), "name"),
        (billing.CaptureHold, B.CaptureHoldRequest(name="jobs/1"), "name"),
    ]
    for method, request, field in cases:
        with pytest.raises(grpc.RpcError) as error:
            method(request, metadata=service)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, error.value.details())
        assert field in error.value.details(), (field, error.value.details())


def test_fifty_concurrent_reservations_for_a_balance_that_covers_ten_make_exactly_ten_holds(billing, service, user, stack):
    set_available(billing, service, user, 10 * 10)  # ten one-minute transcriptions of 10 credits

    def attempt(_: int) -> str:
        try:
            reserve(billing, service, user, 60)
            return "held"
        except grpc.RpcError as error:
            return error_info(error).reason

    with ThreadPoolExecutor(50) as pool:
        outcomes = Counter(pool.map(attempt, range(50)))
    assert outcomes == {"held": 10, "INSUFFICIENT_CREDITS": 40}
    assert user.balance() == (0, 100)
    assert_ledger_balanced(stack.database_url)


def test_concurrent_captures_and_releases_of_one_hold_settle_it_once(billing, service, user, stack):
    holds = [reserve(billing, service, user, 30).hold for _ in range(8)]  # 5 credits each

    def settle(job: tuple[B.Hold, int]) -> str:
        hold, n = job
        try:
            if n % 2:
                billing.CaptureHold(B.CaptureHoldRequest(name=hold.name), metadata=service)
                return "captured"
            billing.ReleaseHold(B.ReleaseHoldRequest(name=hold.name), metadata=service)
            return "released"
        except grpc.RpcError as error:
            return error_info(error).reason

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(settle, [(hold, n) for hold in holds for n in range(8)]))
    settled = holds_of(stack.database_url, [hold.reference for hold in holds])
    for i, hold in enumerate(holds):
        mine = outcomes[i * 8 : (i + 1) * 8]
        [how] = settled[hold.reference]
        winner, loser = ("captured", "HOLD_CAPTURED") if how == "CAPTURE" else ("released", "HOLD_RELEASED")
        assert set(mine) == {winner, loser} or set(mine) == {winner}, mine
    captured = sum(1 for how in settled.values() if how == ["CAPTURE"])
    assert user.balance() == (WELCOME - 5 * captured, 0)
    assert_ledger_balanced(stack.database_url)


# -- grants and who may call what -------------------------------------------------------------------


def test_an_operator_grants_and_takes_back_credits_through_envoy_with_the_service_key(user, rest, service):
    admin = {SERVICE_TOKEN_HEADER: service[0][1]}
    grant = {
        "user": user.name,
        "credits": "250",
        "description": "Support ticket",
        "reference": "T-42",
        "requestId": str(uuid.uuid4()),
    }
    first = rest.post("/v1/admin/credits", headers=admin, json=grant)
    assert first.status_code == 200, first.text
    assert first.json()["transaction"]["reason"] == "TRANSACTION_REASON_GRANT"
    assert first.json()["balance"]["availableCredits"] == "350"
    again = rest.post("/v1/admin/credits", headers=admin, json=grant)
    assert again.json()["transaction"] == first.json()["transaction"] and user.balance() == (350, 0)
    other_body = rest.post("/v1/admin/credits", headers=admin, json={**grant, "credits": "251"})
    assert (other_body.status_code, other_body.json()["details"][0]["reason"]) == (409, "REQUEST_ID_REUSED")

    take_back = {"user": user.name, "credits": "-300", "description": "Goodwill reversed"}
    adjustment = rest.post("/v1/admin/credits", headers=admin, json=take_back).json()["transaction"]
    assert (adjustment["reason"], adjustment["availableChange"]) == ("TRANSACTION_REASON_ADJUSTMENT", "-300")
    too_much = rest.post("/v1/admin/credits", headers=admin, json={**take_back, "credits": "-51"})
    assert (too_much.status_code, too_much.json()["details"][0]["reason"]) == (400, "INSUFFICIENT_CREDITS")
    assert user.balance() == (50, 0)
    zero = rest.post("/v1/admin/credits", headers=admin, json={**take_back, "credits": "0"})
    assert zero.status_code == 400


def test_internal_rpcs_refuse_a_users_token(billing, user, rest, edge_channel):
    as_user = (("authorization", f"Bearer {user.token}"),)
    hold = f"holds/{uuid.uuid4()}"
    calls = {
        "ReserveCredits": B.ReserveCreditsRequest(user=user.name, reference="jobs/x", usage=usage(60)),
        "CaptureHold": B.CaptureHoldRequest(name=hold),
        "ReleaseHold": B.ReleaseHoldRequest(name=hold),
        "GetHold": B.GetHoldRequest(name=hold),
        "GrantCredits": B.GrantCreditsRequest(user=user.name, credits=1000, description="free money"),
    }
    for stub in (billing, billing_pb2_grpc.BillingServiceStub(edge_channel)):
        for method, request in calls.items():
            code, reason, _ = refused(
                lambda stub=stub, method=method, request=request: getattr(stub, method)(request, metadata=as_user)
            )
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CREDENTIAL_REQUIRED"), method
    grant = {"user": user.name, "credits": "1000", "description": "free money"}
    assert rest.post("/v1/admin/credits", headers=user.headers, json=grant).status_code == 403
    assert user.balance() == (WELCOME, 0)
