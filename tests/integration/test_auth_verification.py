"""Email verification: the email a new user gets, its link, and the links that do not work."""

from __future__ import annotations

import hashlib

import asyncpg
import grpc
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials

from .conftest import PASSWORD, new_email
from .mailbox import messages_to, verification_link, verification_token, wait_for_message
from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration


def sign_up_and_log_in(rest) -> tuple[str, dict[str, str], str]:
    """A new user: (email, bearer headers, access token)."""
    email = new_email()
    assert rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 200
    token = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["tokens"]["accessToken"]
    return email, {"authorization": f"Bearer {token}"}, token


def what_every_service_is_told(stack, service_channel, access_token: str) -> auth_pb2.AuthenticateTokenResponse:
    """AuthenticateToken, as another service's interceptor calls it."""
    credentials = ServiceCredentials("jobs", stack.service_secret)
    return auth_pb2_grpc.AuthServiceStub(service_channel("auth")).AuthenticateToken(
        auth_pb2.AuthenticateTokenRequest(access_token=access_token),
        metadata=((SERVICE_TOKEN_HEADER, credentials.token()),),
    )


def test_a_new_user_is_emailed_a_link_that_verifies_them_at_once_for_every_service(stack, rest, service_channel):
    email, headers, access_token = sign_up_and_log_in(rest)
    assert rest.get("/v1/auth/me", headers=headers).json()["user"]["emailVerified"] is False
    assert what_every_service_is_told(stack, service_channel, access_token).email_verified is False

    message = wait_for_message(stack, email)
    assert verification_link(message).startswith(f"{stack.app_url}/verify-email?token=")
    verified = rest.post("/v1/auth/verify-email", json={"token": verification_token(message)})
    assert verified.status_code == 200, verified.text
    assert verified.json()["user"]["emailVerified"] is True

    # The session opened before verifying knows at once: no new log-in, no refresh.
    assert rest.get("/v1/auth/me", headers=headers).json()["user"]["emailVerified"] is True
    assert what_every_service_is_told(stack, service_channel, access_token).email_verified is True


def test_a_link_works_once(stack, rest):
    email, _, _ = sign_up_and_log_in(rest)
    token = verification_token(wait_for_message(stack, email))
    assert rest.post("/v1/auth/verify-email", json={"token": token}).status_code == 200
    again = rest.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and reason_of(again.json()) == "VERIFICATION_TOKEN_USED"


@pytest.mark.parametrize(("token", "reason"), [("not-a-token", "INVALID_VERIFICATION_TOKEN"), ("", "INVALID_ARGUMENT")])
def test_a_made_up_or_missing_token_is_refused(rest, token, reason):
    reply = rest.post("/v1/auth/verify-email", json={"token": token})
    assert reply.status_code == 400 and reason_of(reply.json()) == reason
    assert reply.json()["message"].startswith("token:")


async def test_an_expired_link_is_refused_and_the_user_can_ask_for_a_new_one(stack, rest):
    email, headers, _ = sign_up_and_log_in(rest)
    token = verification_token(wait_for_message(stack, email))
    # A day passes: the token's expiry is moved into the past, as time would.
    con = await asyncpg.connect(stack.database_url)
    try:
        await con.execute(
            "UPDATE auth.email_verifications SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
            hashlib.sha256(token.encode()).digest(),
        )
    finally:
        await con.close()
    expired = rest.post("/v1/auth/verify-email", json={"token": token})
    assert expired.status_code == 400 and reason_of(expired.json()) == "VERIFICATION_TOKEN_EXPIRED"

    assert rest.post("/v1/auth/verify-email:resend", headers=headers, json={}).status_code == 200
    fresh = verification_token(wait_for_message(stack, email, count=2))
    assert fresh != token
    assert rest.post("/v1/auth/verify-email", json={"token": fresh}).json()["user"]["emailVerified"] is True
    done = rest.post("/v1/auth/verify-email:resend", headers=headers, json={})
    assert done.status_code == 400 and reason_of(done.json()) == "EMAIL_ALREADY_VERIFIED"


def test_asking_for_the_email_again_is_limited_per_user(stack, rest, edge_channel):
    email, headers, access_token = sign_up_and_log_in(rest)
    for _ in range(3):
        assert rest.post("/v1/auth/verify-email:resend", headers=headers, json={}).status_code == 200
    refused = rest.post("/v1/auth/verify-email:resend", headers=headers, json={})
    assert refused.status_code == 429 and reason_of(refused.json()) == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) > 0
    wait_for_message(stack, email, count=4)  # the sign-up's and three more...
    assert len(messages_to(stack, email)) == 4, "...and none for the refused request"

    other_email, other_headers, _ = sign_up_and_log_in(rest)
    assert rest.post("/v1/auth/verify-email:resend", headers=other_headers, json={}).status_code == 200

    with pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(edge_channel).ResendVerificationEmail(
            auth_pb2.ResendVerificationEmailRequest(), metadata=(("authorization", f"Bearer {access_token}"),)
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
