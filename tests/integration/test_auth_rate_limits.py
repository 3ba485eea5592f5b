"""Rate limits on logging in and signing up: 429 with a reason and when to try again."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime import cache
from octavia_runtime.config import load
from octavia_runtime.errors import error_info
from octavia_runtime.ratelimit import RateLimited
from services.auth.accounts import Limits

from .conftest import PASSWORD, new_email
from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration


@pytest.fixture
def failed_log_ins_allowed(stack) -> int:
    return stack.rate_limits["login_account"].requests


def test_an_account_is_locked_after_too_many_failed_log_ins_even_with_the_right_password(
    rest, edge_channel, failed_log_ins_allowed
):
    email = new_email()
    rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    for _ in range(failed_log_ins_allowed):
        wrong = rest.post("/v1/auth/login", json={"email": email, "password": "wrong password 1"})
        assert wrong.status_code == 401

    locked = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429, locked.text
    assert reason_of(locked.json()) == "RATE_LIMITED"
    assert 0 < int(locked.headers["retry-after"]) <= 900
    retry = next(d for d in locked.json()["details"] if d["@type"].endswith("google.rpc.RetryInfo"))
    assert retry["retryDelay"] == f"{locked.headers['retry-after']}s"

    with pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(edge_channel).LogIn(auth_pb2.LogInRequest(email=email.upper(), password=PASSWORD))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    assert dict(caught.value.trailing_metadata())["retry-after"].isdigit()
    details = rpc_status.from_call(caught.value).details
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)

    other = new_email()
    rest.post("/v1/auth/signup", json={"email": other, "password": PASSWORD})
    assert rest.post("/v1/auth/login", json={"email": other, "password": PASSWORD}).status_code == 200, "per account"


def test_a_successful_log_in_forgives_earlier_mistakes(rest, failed_log_ins_allowed):
    email = new_email()
    rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    for _ in range(2):
        for _ in range(failed_log_ins_allowed - 1):
            assert rest.post("/v1/auth/login", json={"email": email, "password": "wrong password 1"}).status_code == 401
        assert rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200


async def test_per_address_limits_count_each_address_apart(stack):
    """The limiters sign-up and log-in use, against the stack's Valkey, at a limit small enough to reach."""
    limits = Limits.from_config(
        cache.connect(stack.redis_url), load({"OCTAVIA_RATE_LIMITS": "signup_address=3/60,login_address=3/60"})
    )
    address, neighbour = f"test-{uuid.uuid4()}", f"test-{uuid.uuid4()}"  # keys no real client has
    for limiter in (limits.signup_address, limits.login_address):
        for _ in range(3):
            await limiter.hit(address)
        with pytest.raises(RateLimited) as caught:
            await limiter.hit(address)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and 0 < caught.value.retry_after_s <= 20
        await limiter.check(neighbour)
        await limiter.hit(neighbour)
