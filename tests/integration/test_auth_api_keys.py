"""API keys: a script's credential, with its owner's rights on every service, until it is deleted."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import grpc
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc
from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from octavia_runtime import cache, db
from octavia_runtime.auth import Principal
from octavia_runtime.errors import ApiError, error_info
from services.auth.apikeys import ApiKeys
from services.auth.store import AuthStore

from .conftest import PASSWORD, new_email
from .test_auth_flow import reason_of
from .test_sessions import following

pytestmark = pytest.mark.integration


def create_key(rest, headers, name: str = "deploy script") -> tuple[str, str]:
    """(resource name, secret) of a new key."""
    reply = rest.post("/v1/apiKeys", headers=headers, json={"displayName": name})
    assert reply.status_code == 200, reply.text
    return reply.json()["apiKey"]["name"], reply.json()["secret"]


def test_a_key_acts_for_its_owner_through_rest_and_grpc(rest, edge_channel, signed_in):
    name, secret = create_key(rest, signed_in.headers)
    key = {"x-api-key": secret}

    me = rest.get("/v1/auth/me", headers=key)
    assert me.status_code == 200 and me.json()["user"]["name"] == signed_in.user
    assert rest.get("/v1/jobs", headers=key).status_code == 200
    assert rest.get("/v1/assets", headers=key).status_code == 200

    metadata = (("x-api-key", secret),)
    assert auth_pb2_grpc.AuthServiceStub(edge_channel).GetMe(auth_pb2.GetMeRequest(), metadata=metadata).user.name == (
        signed_in.user
    )
    jobs_pb2_grpc.JobServiceStub(edge_channel).ListJobs(jobs_pb2.ListJobsRequest(), metadata=metadata)

    listed = rest.get("/v1/apiKeys", headers=signed_in.headers).json()["apiKeys"]
    assert [k["name"] for k in listed] == [name]
    assert listed[0]["lastUseTime"], "the key's use is recorded"


def test_keys_are_listed_newest_first_a_page_at_a_time_without_their_secrets(rest, signed_in):
    created = [create_key(rest, signed_in.headers, f"key {i}") for i in range(3)]
    first = rest.get("/v1/apiKeys", headers=signed_in.headers, params={"pageSize": 2}).json()
    second = rest.get(
        "/v1/apiKeys", headers=signed_in.headers, params={"pageSize": 2, "pageToken": first["nextPageToken"]}
    ).json()
    keys = first["apiKeys"] + second["apiKeys"]
    assert [k["name"] for k in keys] == [name for name, _ in reversed(created)]
    assert [k["displayName"] for k in keys] == ["key 2", "key 1", "key 0"]
    assert second["nextPageToken"] == ""
    for key, (_, secret) in zip(keys, reversed(created), strict=True):
        assert key["prefix"] == secret[:12]
        assert secret[12:] not in str(first) + str(second)
        assert "lastUseTime" not in key, "never used yet"


def test_a_deleted_key_is_refused_at_once_by_every_service(rest, edge_channel, signed_in):
    name, secret = create_key(rest, signed_in.headers)
    key = {"x-api-key": secret}
    assert rest.get("/v1/jobs", headers=key).status_code == 200  # remembered by auth from here

    assert rest.delete(f"/v1/{name}", headers=signed_in.headers).status_code == 200
    refused = rest.get("/v1/jobs", headers=key)
    assert refused.status_code == 401 and reason_of(refused.json()) == "INVALID_API_KEY"
    with pytest.raises(grpc.RpcError) as caught:
        jobs_pb2_grpc.JobServiceStub(edge_channel).ListJobs(jobs_pb2.ListJobsRequest(), metadata=(("x-api-key", secret),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rest.get("/v1/apiKeys", headers=signed_in.headers).json()["apiKeys"] == []


def test_another_users_key_is_not_found_and_keeps_working(rest, signed_in):
    name, secret = create_key(rest, signed_in.headers)
    other = new_email()
    rest.post("/v1/auth/signup", json={"email": other, "password": PASSWORD})
    token = rest.post("/v1/auth/login", json={"email": other, "password": PASSWORD}).json()["tokens"]["accessToken"]

    theirs = rest.delete(f"/v1/{name}", headers={"authorization": f"Bearer {token}"})
    assert theirs.status_code == 404 and reason_of(theirs.json()) == "API_KEY_NOT_FOUND"
    never = rest.delete(f"/v1/apiKeys/{uuid.uuid4()}", headers=signed_in.headers)
    assert never.status_code == 404 and reason_of(never.json()) == "API_KEY_NOT_FOUND"
    assert rest.get("/v1/jobs", headers={"x-api-key": secret}).status_code == 200


def test_a_key_may_list_keys_but_not_create_or_delete_them_nor_log_out(rest, signed_in):
    name, secret = create_key(rest, signed_in.headers)
    key = {"x-api-key": secret}
    assert rest.get("/v1/apiKeys", headers=key).status_code == 200
    created = rest.post("/v1/apiKeys", headers=key, json={"displayName": "successor"})
    for refused in (created, rest.delete(f"/v1/{name}", headers=key)):
        assert refused.status_code == 403 and reason_of(refused.json()) == "ACCESS_TOKEN_REQUIRED"
    assert rest.post("/v1/auth/logout", headers=key, json={}).status_code == 400
    assert rest.get("/v1/jobs", headers=key).status_code == 200


def test_a_key_is_not_a_session_and_outlives_log_out_everywhere(rest, signed_in):
    _, secret = create_key(rest, signed_in.headers)
    assert rest.post("/v1/auth/logout-everywhere", headers=signed_in.headers, json={}).status_code == 200
    assert rest.get("/v1/jobs", headers={"x-api-key": secret}).status_code == 200


@pytest.mark.parametrize("secret", ["garbage", "oct_00000000_" + "A" * 43])
def test_a_malformed_or_unknown_key_is_refused(rest, secret):
    refused = rest.get("/v1/jobs", headers={"x-api-key": secret})
    assert refused.status_code == 401 and reason_of(refused.json()) == "INVALID_API_KEY"


def test_a_key_without_a_label_is_refused(signed_in, edge_channel):
    with pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(edge_channel).CreateApiKey(
            auth_pb2.CreateApiKeyRequest(display_name=" "), metadata=signed_in.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_ARGUMENT"


async def test_a_key_deleted_through_one_auth_process_is_refused_by_another_that_remembered_it(stack, signed_in, rest):
    _, secret = create_key(rest, signed_in.headers)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    pool = await db.connect(stack.database_url, "auth", None)
    try:
        one, two = (ApiKeys(AuthStore(pool), cache.connect(stack.redis_url)) for _ in range(2))
        async with following(one.memory, two.memory):
            principal = await two.authenticate(secret)
            assert principal.kind == "api_key" and principal.user == signed_in.user
            assert two.memory.recall(digest) is not None, "the second process now answers from memory"

            owner = Principal(kind="user", user_id=principal.user_id, session=str(uuid.uuid4()))
            await one.delete(owner, uuid.UUID(principal.session.removeprefix("apiKeys/")), principal.session)
            for _ in range(100):  # the feed reaches other processes within milliseconds
                if two.memory.recall(digest) is None:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(ApiError) as caught:
                await two.authenticate(secret)
            assert caught.value.reason == "INVALID_API_KEY"
    finally:
        await pool.close()
