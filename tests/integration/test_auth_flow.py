"""Sign up, log in, who am I, log out: through Envoy's REST and through gRPC."""

from __future__ import annotations

import grpc
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.errors import error_info

from .conftest import PASSWORD, new_email

pytestmark = pytest.mark.integration


def reason_of(body: dict) -> str:
    """The ErrorInfo reason inside an Envoy-rendered google.rpc.Status body."""
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail["reason"]
    return ""


def test_a_browser_signs_up_logs_in_sees_itself_and_logs_out(rest):
    email = new_email()
    signed_up = rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "displayName": "Ada"})
    assert signed_up.status_code == 200, signed_up.text
    assert signed_up.json()["user"]["email"] == email
    assert "password" not in signed_up.text.lower()

    logged_in = rest.post("/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()["tokens"]
    assert tokens["tokenType"] == "Bearer" and tokens["refreshToken"]
    headers = {"authorization": f"Bearer {tokens['accessToken']}"}

    me = rest.get("/v1/auth/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["user"] == {**signed_up.json()["user"]}
    assert me.headers.get("x-request-id"), "every reply carries its request id"

    assert rest.post("/v1/auth/logout", headers=headers, json={}).status_code == 200
    refused = rest.get("/v1/auth/me", headers=headers)
    assert refused.status_code == 401
    assert reason_of(refused.json()) == "SESSION_ENDED"


def test_a_grpc_client_signs_up_logs_in_sees_itself_and_logs_out(edge_channel):
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    email = new_email()
    user = auth.SignUp(auth_pb2.SignUpRequest(email=email, password=PASSWORD)).user
    tokens = auth.LogIn(auth_pb2.LogInRequest(email=email, password=PASSWORD)).tokens
    metadata = (("authorization", f"Bearer {tokens.access_token}"),)
    assert auth.GetMe(auth_pb2.GetMeRequest(), metadata=metadata).user.name == user.name

    auth.LogOut(auth_pb2.LogOutRequest(), metadata=metadata)
    with pytest.raises(grpc.RpcError) as refused:
        auth.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(refused.value).reason == "SESSION_ENDED"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, 400, "INVALID_EMAIL"),
        ({"email": "weak@example.com", "password": "short"}, 400, "WEAK_PASSWORD"),
        ({"email": "", "password": PASSWORD}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_bad_sign_ups_are_refused_with_status_and_reason(rest, body, status, reason):
    reply = rest.post("/v1/auth/signup", json=body)
    assert reply.status_code == status, reply.text
    assert reason_of(reply.json()) == reason
    assert reply.json()["message"], "the message says what is wrong"


def test_an_email_can_sign_up_once(rest):
    email = new_email()
    assert rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 200
    again = rest.post("/v1/auth/signup", json={"email": email.title(), "password": PASSWORD})
    assert again.status_code == 409
    assert reason_of(again.json()) == "EMAIL_TAKEN"


def test_a_wrong_password_or_unknown_email_is_unauthenticated_alike(rest, signed_in):
    wrong = rest.post("/v1/auth/login", json={"email": signed_in.email, "password": PASSWORD + "x"})
    unknown = rest.post("/v1/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert reason_of(wrong.json()) == reason_of(unknown.json()) == "INVALID_CREDENTIALS"
    assert wrong.json()["message"] == unknown.json()["message"], "no hint whether the account exists"


def test_a_refresh_token_works_once_and_its_reuse_ends_the_session(rest, signed_in):
    first = rest.post("/v1/auth/refresh", json={"refreshToken": signed_in.refresh_token})
    assert first.status_code == 200, first.text
    new_tokens = first.json()["tokens"]
    assert new_tokens["refreshToken"] != signed_in.refresh_token
    newest = {"authorization": f"Bearer {new_tokens['accessToken']}"}
    assert rest.get("/v1/auth/me", headers=newest).status_code == 200
    assert rest.get("/v1/jobs", headers=newest).status_code == 200

    reused = rest.post("/v1/auth/refresh", json={"refreshToken": signed_in.refresh_token})
    assert reused.status_code == 401 and reason_of(reused.json()) == "REFRESH_TOKEN_REUSED"
    # The whole session is revoked, including the newest tokens, on every service.
    for path in ("/v1/auth/me", "/v1/jobs"):
        after = rest.get(path, headers=newest)
        assert after.status_code == 401 and reason_of(after.json()) == "SESSION_ENDED"
    newest_refresh = rest.post("/v1/auth/refresh", json={"refreshToken": new_tokens["refreshToken"]})
    assert newest_refresh.status_code == 401 and reason_of(newest_refresh.json()) == "INVALID_REFRESH_TOKEN"


def test_tokens_that_are_garbage_or_signed_by_someone_else_are_refused(rest, signed_in):
    import jwt

    header, payload, _ = signed_in.access_token.split(".")
    forged = jwt.encode(jwt.decode(signed_in.access_token, options={"verify_signature": False}), "x" * 40, algorithm="HS256")
    for token in ("garbage", f"{header}.{payload}.AAAA", forged):
        reply = rest.get("/v1/auth/me", headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 401
        assert reason_of(reply.json()) == "INVALID_TOKEN"


def test_tampered_and_expired_access_tokens_are_refused(stack, rest, signed_in):
    import base64
    import json
    import time
    import uuid

    import jwt

    header, payload, signature = signed_in.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    someone_else = base64.urlsafe_b64encode(json.dumps({**claims, "sub": str(uuid.uuid4())}).encode()).rstrip(b"=")
    tampered = rest.get("/v1/auth/me", headers={"authorization": f"Bearer {header}.{someone_else.decode()}.{signature}"})
    assert tampered.status_code == 401 and reason_of(tampered.json()) == "INVALID_TOKEN"

    # Signed with the real secret, for the real session, but past its expiry.
    past = int(time.time()) - 60
    expired = jwt.encode({**claims, "iat": past - 900, "exp": past}, stack.jwt_secret, algorithm="HS256")
    reply = rest.get("/v1/jobs", headers={"authorization": f"Bearer {expired}"})
    assert reply.status_code == 401 and reason_of(reply.json()) == "TOKEN_EXPIRED"
    assert rest.get("/v1/jobs", headers=signed_in.headers).status_code == 200, "the genuine token still works"


def test_log_out_everywhere_ends_every_session_at_once_on_every_service(rest, signed_in):
    other_device = rest.post("/v1/auth/login", json={"email": signed_in.email, "password": PASSWORD}).json()["tokens"]
    devices = [signed_in.headers, {"authorization": f"Bearer {other_device['accessToken']}"}]
    for headers in devices:
        assert rest.get("/v1/jobs", headers=headers).status_code == 200

    ended = rest.post("/v1/auth/logout-everywhere", headers=signed_in.headers, json={})
    assert ended.status_code == 200 and ended.json()["revokedSessions"] == 2
    for headers in devices:
        for path in ("/v1/jobs", "/v1/assets", "/v1/auth/me"):
            refused = rest.get(path, headers=headers)
            assert refused.status_code == 401 and reason_of(refused.json()) == "SESSION_ENDED", path
    for refresh_token in (signed_in.refresh_token, other_device["refreshToken"]):
        assert rest.post("/v1/auth/refresh", json={"refreshToken": refresh_token}).status_code == 401


def test_changing_the_password_ends_the_other_sessions_and_keeps_this_one(rest, signed_in):
    other_device = rest.post("/v1/auth/login", json={"email": signed_in.email, "password": PASSWORD}).json()["tokens"]
    new_password = "a brand new one 7"

    wrong = rest.post(
        "/v1/auth/password", headers=signed_in.headers, json={"currentPassword": "not it 1234", "newPassword": new_password}
    )
    assert wrong.status_code == 401 and reason_of(wrong.json()) == "INVALID_CREDENTIALS"
    weak = rest.post("/v1/auth/password", headers=signed_in.headers, json={"currentPassword": PASSWORD, "newPassword": "short"})
    assert weak.status_code == 400 and reason_of(weak.json()) == "WEAK_PASSWORD"

    changed = rest.post(
        "/v1/auth/password", headers=signed_in.headers, json={"currentPassword": PASSWORD, "newPassword": new_password}
    )
    assert changed.status_code == 200, changed.text
    assert rest.get("/v1/jobs", headers=signed_in.headers).status_code == 200, "the session that changed it goes on"
    elsewhere = rest.get("/v1/jobs", headers={"authorization": f"Bearer {other_device['accessToken']}"})
    assert elsewhere.status_code == 401 and reason_of(elsewhere.json()) == "SESSION_ENDED"

    assert rest.post("/v1/auth/login", json={"email": signed_in.email, "password": PASSWORD}).status_code == 401
    assert rest.post("/v1/auth/login", json={"email": signed_in.email, "password": new_password}).status_code == 200
