"""Changing the password: only from a signed-in session, and together with the log-out of every other session
of the user, or not at all."""

from __future__ import annotations

import uuid

import grpc
import jwt
import pytest
import redis.exceptions
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime import cache, db
from octavia_runtime.auth import Principal
from octavia_runtime.errors import error_info
from services.auth.accounts import Accounts
from services.auth.sessions import Sessions
from services.auth.store import AuthStore

from .conftest import PASSWORD
from .test_auth_api_keys import create_key
from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration
NEW_PASSWORD = "a brand new one 7"


def log_in(rest, email: str, password: str = PASSWORD) -> dict:
    reply = rest.post("/v1/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return reply.json()["tokens"]


def bearer(tokens: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['accessToken']}"}


def works(rest, headers: dict[str, str]) -> bool:
    return rest.get("/v1/auth/me", headers=headers).status_code == 200


def password_is(rest, email: str, password: str) -> bool:
    return rest.post("/v1/auth/login", json={"email": email, "password": password}).status_code == 200


def test_an_api_key_cannot_change_the_password_whatever_it_sends(rest, edge_channel, signed_in):
    other_device = log_in(rest, signed_in.email)
    _, secret = create_key(rest, signed_in.headers)
    key = {"x-api-key": secret}
    for body in (
        {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        {"currentPassword": "not it 1234", "newPassword": NEW_PASSWORD},  # refused as a key, not as a wrong password
        {"currentPassword": PASSWORD, "newPassword": "short"},
        {},
    ):
        refused = rest.post("/v1/auth/password", headers=key, json=body)
        assert refused.status_code == 403 and reason_of(refused.json()) == "ACCESS_TOKEN_REQUIRED", refused.text
        assert "signed-in session, not with an API key" in refused.json()["message"]
    request = auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD)
    with pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(edge_channel).ChangePassword(request, metadata=(("x-api-key", secret),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(caught.value).reason == "ACCESS_TOKEN_REQUIRED"

    assert password_is(rest, signed_in.email, PASSWORD) and not password_is(rest, signed_in.email, NEW_PASSWORD)
    assert works(rest, signed_in.headers) and works(rest, bearer(other_device)) and works(rest, key)
    assert rest.post("/v1/auth/refresh", json={"refreshToken": other_device["refreshToken"]}).status_code == 200


def test_a_password_change_logs_out_every_other_session_and_keeps_the_callers(rest, signed_in):
    others = [log_in(rest, signed_in.email) for _ in range(2)]
    changed = rest.post(
        "/v1/auth/password", headers=signed_in.headers, json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text

    assert works(rest, signed_in.headers), "the session that changed it goes on"
    renewed = rest.post("/v1/auth/refresh", json={"refreshToken": signed_in.refresh_token})
    assert renewed.status_code == 200 and works(rest, bearer(renewed.json()["tokens"]))
    for other in others:
        ended = rest.get("/v1/auth/me", headers=bearer(other))
        assert ended.status_code == 401 and reason_of(ended.json()) == "SESSION_ENDED"
        assert rest.post("/v1/auth/refresh", json={"refreshToken": other["refreshToken"]}).status_code == 401
    assert password_is(rest, signed_in.email, NEW_PASSWORD) and not password_is(rest, signed_in.email, PASSWORD)


def session_of(stack, access_token: str) -> str:
    return jwt.decode(access_token, stack.jwt_secret, algorithms=["HS256"])["sid"]


class _EndThenFail(Sessions):
    """Ends the sessions in Valkey, then fails as a commit that is lost afterwards would."""

    async def end(self, session_ids: list[str]) -> None:
        await super().end(session_ids)
        raise ConnectionResetError("the connection to Postgres broke before the commit")


async def change_in_process(stack, signed_in, sessions: Sessions) -> None:
    """ChangePassword as an auth process runs it, against the stack's Postgres and the given Valkey."""
    pool = await db.connect(stack.database_url, "auth", None)
    try:
        accounts = Accounts(AuthStore(pool), sessions, api_keys=None, mailer=None, limits=None, config=stack)
        user_id = signed_in.user.removeprefix("users/")
        caller = Principal(kind="user", user_id=user_id, session=session_of(stack, signed_in.access_token))
        await accounts.change_password(caller, PASSWORD, NEW_PASSWORD)
    finally:
        await pool.close()


async def revoked_sessions(stack, user: str) -> int:
    pool = await db.connect(stack.database_url, "auth", None)
    try:
        user_id = uuid.UUID(user.removeprefix("users/"))
        return await pool.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL", user_id)
    finally:
        await pool.close()


async def test_a_password_change_while_valkey_is_down_changes_nothing(stack, rest, signed_in):
    other = log_in(rest, signed_in.email)
    valkey_down = Sessions(cache.connect("redis://127.0.0.1:1/0", timeout_s=1))  # nothing listens on port 1
    with pytest.raises(redis.exceptions.ConnectionError):
        await change_in_process(stack, signed_in, valkey_down)

    assert password_is(rest, signed_in.email, PASSWORD) and not password_is(rest, signed_in.email, NEW_PASSWORD)
    assert works(rest, signed_in.headers) and works(rest, bearer(other)), "no session was logged out"
    assert await revoked_sessions(stack, signed_in.user) == 0


async def test_a_password_change_that_fails_to_commit_has_only_logged_out_the_other_sessions(stack, rest, signed_in):
    other = log_in(rest, signed_in.email)
    with pytest.raises(ConnectionResetError):
        await change_in_process(stack, signed_in, _EndThenFail(cache.connect(stack.redis_url)))

    assert password_is(rest, signed_in.email, PASSWORD) and not password_is(rest, signed_in.email, NEW_PASSWORD)
    assert works(rest, signed_in.headers), "the caller's session goes on"
    ended = rest.get("/v1/auth/me", headers=bearer(other))
    assert ended.status_code == 401 and reason_of(ended.json()) == "SESSION_ENDED", "the safe direction: logged out"
    assert await revoked_sessions(stack, signed_in.user) == 0, "Postgres changed nothing"
